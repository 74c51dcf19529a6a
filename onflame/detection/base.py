"""The detector interface: an RGB photo in, faces with 5 keypoints (and optional landmarks) out."""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import OnflameError
from .landmarks import flame51_from_ibug68


class DetectorUnavailable(OnflameError):
    """A detector cannot run here (package not installed, model folder missing); the message says how to fix it."""


@dataclass(frozen=True)
class Detection:
    """One face found in a photo. Coordinates are pixels of that photo, ``(x, y)``.

    Attributes:
        box: (4,) ``x0, y0, x1, y1``.
        score: the detector's confidence in [0, 1] (each detector has its own scale).
        kps5: (5, 2) ArcFace keypoints: eye centres, nose tip, mouth corners (image left before right).
        landmarks: (68, 2) iBUG-68 points, or ``None`` when the detector has no dense landmarks.
        dense: (N, 2) the detector's own dense points (MediaPipe: 478), or ``None``.
    """

    box: np.ndarray
    score: float
    kps5: np.ndarray
    landmarks: np.ndarray | None = None
    dense: np.ndarray | None = None

    @property
    def landmarks51(self) -> np.ndarray | None:
        """(51, 2) FLAME-51 points (iBUG-68 without the jaw), or ``None``."""
        return None if self.landmarks is None else flame51_from_ibug68(self.landmarks)

    @property
    def centre(self) -> np.ndarray:
        """(2,) centre of ``box``."""
        return (np.asarray(self.box[:2]) + np.asarray(self.box[2:4])) / 2.0


@runtime_checkable
class FaceDetector(Protocol):
    """What a detector provides. ``name`` is recorded in prepare's manifest."""

    name: str

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in ``image`` (H, W, 3) uint8 RGB, any order; empty when there is none."""
        ...


def nearest_to_centre(detections: Sequence[Detection], image_shape: tuple[int, ...]) -> Detection | None:
    """The detection whose box centre is nearest the image centre (MICA keeps that one), or ``None``."""
    if not detections:
        return None
    centre = np.array([image_shape[1] // 2, image_shape[0] // 2], dtype=np.float64)
    return min(detections, key=lambda d: float(np.linalg.norm(d.centre - centre)))


def check_image(image: np.ndarray) -> np.ndarray:
    """``image`` as a C-contiguous (H, W, 3) uint8 array, or ``ValueError``."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(image)


_FACTORIES: dict[str, Callable[..., FaceDetector]] = {}


def register_detector(name: str, factory: Callable[..., FaceDetector]) -> None:
    """Make ``get_detector(name, **options)`` call ``factory(**options)``."""
    _FACTORIES[name] = factory


def available_detectors() -> list[str]:
    """Names ``get_detector`` accepts (``"auto"`` included)."""
    return ["auto", *_FACTORIES]


def get_detector(name: str = "auto", **options: Any) -> FaceDetector:
    """Build a detector by name.

    ``"auto"`` picks MediaPipe when it is installed, else insightface when a model folder is given
    (``model_dir=`` or ``ONFLAME_INSIGHTFACE_MODELS``), else raises :class:`DetectorUnavailable` saying
    what to install. ``model_dir`` goes to insightface only.
    """
    if name == "auto":
        errors = []
        model_dir = options.pop("model_dir", None)
        candidates: list[tuple[str, dict[str, Any]]] = [("mediapipe", options)]
        if model_dir or os.environ.get("ONFLAME_INSIGHTFACE_MODELS"):
            candidates.append(("insightface", {**options, "model_dir": model_dir}))
        for candidate, opts in candidates:
            try:
                return _FACTORIES[candidate](**opts)
            except DetectorUnavailable as exc:
                errors.append(str(exc))
        raise DetectorUnavailable("no face detector is available: " + " | ".join(errors))
    if name not in _FACTORIES:
        raise DetectorUnavailable(f"unknown detector {name!r}; choose one of {', '.join(available_detectors())}")
    return _FACTORIES[name](**options)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send what native code writes to file descriptor 2 to /dev/null for the block.

    MediaPipe's C++ graph logs warnings (``W0000 ... inference_feedback_manager``) straight to the
    process's stderr, past Python's logging and ``GLOG_minloglevel``; a command's terminal should show
    its own lines only. Python's ``sys.stderr`` is flushed first and restored after.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (captured, closed): nothing to silence
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(fd), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        _flush_c_streams()  # native code buffers its stderr: what it wrote in the block goes to /dev/null too
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def _flush_c_streams() -> None:
    """``fflush(NULL)``: flush every C stdio stream of the process (POSIX; a no-op where libc is not found)."""
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):
        pass

