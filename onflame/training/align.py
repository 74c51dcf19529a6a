"""ArcFace alignment: a similarity transform from 5 keypoints to ArcFace's template, and MICA's crops.

Coordinates are pixels with pixel centres on integers (OpenCV's convention, in which ArcFace's
template is given). MICA stores, per photo, the 112×112 crop as a network-ready blob
(float32 (3, 112, 112), RGB, ``(pixel − 127.5) / 127.5``) and the 224×224 crop (template × 2) as an image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..geometry import rigid_fit
from .rules import ARCFACE_TEMPLATE_112

#: (5, 2) the template for the 112×112 crop.
TEMPLATE_112 = np.array(ARCFACE_TEMPLATE_112, dtype=np.float64)


def arcface_template(size: int = 112) -> np.ndarray:
    """(5, 2) ArcFace template for a ``size``×``size`` crop, ``size`` a multiple of 112 (the 112 one × size/112)."""
    if size % 112:
        raise ValueError(f"crop size {size} is not a multiple of 112")
    return TEMPLATE_112 * (size / 112.0)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) taking ``src`` (N, 2) onto ``dst`` (N, 2).

    Umeyama's closed form (:func:`onflame.geometry.rigid_fit`), as ``skimage.transform.SimilarityTransform.
    estimate`` (which MICA's insightface alignment calls) computes it. Returns the (2, 3) matrix ``[s R | t]`` with ``dst ≈ s R src + t``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"expected two (N>=2, 2) point sets of one shape, got {src.shape} and {dst.shape}")
    if not (src - src.mean(0)).any():
        raise ValueError("source points coincide")
    rot, shift, scale = rigid_fit(src, dst, scale=True)  # Umeyama, no reflections
    return np.hstack([scale * rot, shift[:, None]])


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (..., 2) mapped by a (2, 3) affine matrix."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp_crop(image: Image.Image | np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The ``size``×``size`` crop that ``matrix`` (photo → crop, (2, 3)) defines: (size, size, 3) uint8.

    Bilinear, black outside the photo, as OpenCV's ``warpAffine`` does in MICA's preparation. PIL wants the
    inverse map in its own convention (pixel centres on half-integers), hence the half-pixel terms.
    """
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    inv = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    a, t = inv[:, :2], inv[:, 2]
    t_pil = t + 0.5 - a.sum(1) * 0.5
    data = (a[0, 0], a[0, 1], t_pil[0], a[1, 0], a[1, 1], t_pil[1])
    out = pil.transform((size, size), Image.Transform.AFFINE, data=data, resample=Image.Resampling.BILINEAR,
                        fillcolor=(0, 0, 0))
    return np.asarray(out)


def arcface_blob(crop112: np.ndarray) -> np.ndarray:
    """MICA's ArcFace input from a 112×112 RGB uint8 crop: float32 (3, 112, 112), ``(pixel − 127.5) / 127.5``."""
    crop112 = np.asarray(crop112)
    if crop112.shape != (112, 112, 3):
        raise ValueError(f"expected a (112, 112, 3) crop, got {crop112.shape}")
    return np.ascontiguousarray(((crop112.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1))


@dataclass
class AlignedFace:
    """MICA's two crops of one face.

    Attributes:
        blob: float32 (3, 112, 112) ArcFace input (see :func:`arcface_blob`).
        crop112: (112, 112, 3) uint8 RGB.
        crop224: (224, 224, 3) uint8 RGB.
        matrix112: (2, 3) photo → 112 crop similarity (the 224 crop's is twice it).
    """

    blob: np.ndarray
    crop112: np.ndarray
    crop224: np.ndarray
    matrix112: np.ndarray


def align_face(image: Image.Image | np.ndarray, kps5: np.ndarray) -> AlignedFace:
    """Align a face by its 5 keypoints (5, 2) to ArcFace's template: the 112 blob and the 224 crop."""
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    m112 = similarity_transform(kps5, arcface_template(112))
    m224 = similarity_transform(kps5, arcface_template(224))
    crop112 = warp_crop(pil, m112, 112)
    return AlignedFace(blob=arcface_blob(crop112), crop112=crop112, crop224=warp_crop(pil, m224, 224), matrix112=m112)
