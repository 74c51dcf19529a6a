"""Scan → FLAME: the registration engine's entry point, :func:`register`, one step per function.

1. :func:`.prepare.prepare_scan`: the scan read and checked, its unit (:mod:`.units`), a search index
   (:mod:`.correspond`);
2. :func:`_landmarks`: the clicks in each of the model's conventions (:mod:`.landmarks`), or detected ones
   (:mod:`.autolandmarks`), or none;
3. :func:`_fit`: rigid starts (:mod:`.rigid`), then the FLAME fit (:mod:`.fit`: shape, expression,
   global/neck/jaw pose and translation, restricted to the model regions that find scan data) from the
   start it explains the scan best from; the convention the clicks were made in, where that is open;
4. :func:`_refine`: per-vertex detail beyond the FLAME space where the scan has data, falling back to the
   fit elsewhere, eyeballs fixed (:mod:`.refine`), twice where the model explains the scan;
5. :func:`_finish`: folds repaired (:mod:`.unfold`), eyeballs behind the lids (:mod:`.eyes`); the FLAME
   parameters re-fitted vertex to vertex to the final mesh (:func:`.fit.fit_mesh_vertices`);
6. :func:`_judge`: quality numbers and the verdict (:mod:`.quality`).

Everything runs in the model's frame; the result (:mod:`.result`) is returned in the scan's frame, in metres.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, replace

import numpy as np
from scipy.spatial.transform import Rotation

from ..flame.model import FlameModel
from ..flame.numpy_flame import NumpyFlame
from ..geometry import apply_rigid
from ..mesh import Mesh
from ..mesh.landmark_files import ScanLandmarks
from .correspond import ScanIndex
from .eyes import place_eyeballs
from .fit import FitSettings, fit_mesh_vertices, fit_scan, unexplained
from .gauss_newton import FitState, make_layer, vertices
from .landmarks import (
    LandmarkSet,
    agreeing,
    clicks_to_sets,
    convention_mismatch,
    convention_residuals,
    landmark_outliers,
    outlier_reason,
    resolve_convention,
)
from .prepare import PreparedScan, prepare_scan
from .quality import UNANCHORED, Quality, assess
from .refine import RefineSettings, refine
from .result import Registration
from .rigid import rigid_starts, search_around
from .threads import single_threaded_blas
from .unfold import unfold

#: Region weights for matching model vertices to scan data; regions not listed get ``DEFAULT_WEIGHT``.
REGION_WEIGHTS = {"face": 1.0, "forehead": 1.0, "nose": 1.0, "lips": 1.0, "eye_region": 1.0,
                  "left_ear": 0.5, "right_ear": 0.5, "neck": 0.5, "scalp": 0.3,
                  "left_eyeball": 0.0, "right_eyeball": 0.0}
DEFAULT_WEIGHT = 0.5


def region_weights(model: FlameModel) -> np.ndarray:
    """(V,) weights of model vertices for matching scan data (see ``REGION_WEIGHTS``)."""
    if not model.masks:
        return np.ones(model.n_vertices)
    w = np.full(model.n_vertices, DEFAULT_WEIGHT)
    for name in sorted(REGION_WEIGHTS, key=lambda n: REGION_WEIGHTS[n] != 0.0):  # zero weights win
        if name in model.masks:
            w[model.masks[name]] = REGION_WEIGHTS[name] if w[model.masks[name]].min() != 0.0 else 0.0
    for name in ("left_eyeball", "right_eyeball"):
        if name in model.masks:
            w[model.masks[name]] = 0.0
    return w


def _face_vertices(model: FlameModel) -> np.ndarray:
    return model.masks["face"] if "face" in model.masks else np.arange(model.n_vertices)


def _eyeballs(model: FlameModel) -> np.ndarray:
    parts = [model.masks[n] for n in ("left_eyeball", "right_eyeball") if n in model.masks]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


class _Timer(dict):
    """Seconds per step: ``with timer("fit"): ...`` adds the block's wall time to ``timer["fit"]``."""

    @contextlib.contextmanager
    def __call__(self, step: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self[step] = self.get(step, 0.0) + time.perf_counter() - t0


@single_threaded_blas
def register(scan: Mesh | str | os.PathLike, model: FlameModel,
             landmarks: ScanLandmarks | np.ndarray | str | os.PathLike | None = None,
             units: str = "auto", fit_settings: FitSettings | None = None,
             refine_settings: RefineSettings | None = None, auto_landmarks: str = "auto",
             landmark_convention: str = "auto") -> Registration:
    """Register a raw face scan to FLAME.

    Args:
        scan: a :class:`Mesh` or a mesh file path, in any units, orientation and position.
        model: the FLAME model, with region masks and a landmark embedding if landmarks are used.
        landmarks: landmarks on the scan in its units and frame: a file (``.npy``/``.txt``/``.pp``/
            ``.ljson``/``.bnd``/``.lnd``, :mod:`onflame.mesh.landmark_files`), a (51, 3) / (68, 3) / (7, 3)
            array in iBUG order, or :class:`ScanLandmarks`; None to detect them or align from geometry
            (``auto_landmarks``).
        units: ``"auto"`` (detect from size), ``"m"``, ``"cm"`` or ``"mm"``.
        auto_landmarks: without ``landmarks``: ``"auto"`` finds them with a 2D face detector on renders of
            the scan (:mod:`.autolandmarks`) and falls back to the geometry-only start if that fails;
            ``"detect"``: detection or an error; ``"geometry"``: geometry only. The report's
            ``landmarks`` entry says which path was taken.
        landmark_convention: which of the model's conventions the given landmarks were made in:
            ``"auto"`` decides by fitting (:mod:`.landmarks`), or a family / name (``"mica"``,
            ``"flame51"``...). The report's ``landmarks.convention`` and the npz's
            ``landmark_convention`` say which was used.

    Returns:
        :class:`Registration` in the scan's frame, metres.

    Raises:
        InputError: empty or NaN scan, absurd size, landmarks in another unit than the scan or off it,
            or a model without what is needed.
    """
    timer = _Timer()
    with timer("total"):
        with timer("prepare"):
            prepared = prepare_scan(scan, landmarks, units)
        with timer("landmarks"):
            sets, landmark_info, forced = _landmarks(prepared, model, auto_landmarks, landmark_convention)
        fitted = _fit(prepared, model, sets, landmark_info, forced, fit_settings or FitSettings(), timer)
        rsettings = refine_settings or RefineSettings()
        reg_v, fit_v, final, refine_info = _refine(fitted, model, rsettings, timer)
        with timer("finish"):
            reg_v, surface_info = _finish(reg_v, fit_v, model, fitted)
        with timer("refit"):
            final = fit_mesh_vertices(fitted.flame, apply_rigid(reg_v, fitted.R, fitted.t), state=final, **REFIT)
        quality, reg_lmk = _judge(reg_v, fit_v, model, fitted, refine_info, surface_info, landmark_info,
                                  wanted_landmarks=auto_landmarks != "geometry")
        quality.numbers["scan_rewound"] = prepared.rewound
    return _result(prepared, model, fitted, reg_v, fit_v, final, quality, reg_lmk, landmark_info, sets, dict(timer))


def _landmarks(prepared: PreparedScan, model: FlameModel, auto_landmarks: str,
               landmark_convention: str) -> tuple[list[LandmarkSet], dict, str | None]:
    """Step 2: ``(sets, info, forced)``: the landmarks as one :class:`LandmarkSet` per convention the
    clicks may be in (targets in metres, scan frame), detected ones, or none; where they came from; the
    convention the user named (None: open)."""
    clicks = prepared.clicks
    if clicks is not None:
        forced = resolve_convention(model, landmark_convention)
        sets = clicks_to_sets(clicks.with_points(clicks.points * prepared.k), model)
        return sets, {"source": "given", "file": clicks.source, "layout": clicks.layout, "points": len(sets[0])}, forced
    from .autolandmarks import choose_landmarks  # the detector's imports only where it runs

    found, info = choose_landmarks(prepared.mesh, prepared.points, auto_landmarks, model,
                                   normals=prepared.index.normals)
    return ([] if found is None else [found]), info, None


@dataclass
class _Fitted:
    """The FLAME fit in the model's frame: ``x_scan = R x_model + t``; ``index`` the scan in the model
    frame; ``lmk`` the landmarks the rest uses (model frame) or None; ``mismatch`` a verdict reason when
    the clicks fit another convention than the one named."""

    flame: NumpyFlame
    weights: np.ndarray
    R: np.ndarray
    t: np.ndarray
    index: ScanIndex
    state: FitState
    fit_v: np.ndarray
    lmk: LandmarkSet | None
    mismatch: str | None
    detected: bool


def _fit(prepared: PreparedScan, model: FlameModel, sets: list[LandmarkSet], info: dict, forced: str | None,
         settings: FitSettings, timer: _Timer) -> _Fitted:
    """Step 3: rigid starts, then the FLAME fit from the one it explains the scan best from.

    With several candidate conventions the points they all agree on start the fit, and the fitted face
    tells which convention the others were clicked in (``info`` gets ``convention``, how it was chosen
    and each candidate's residual).
    """
    with timer("rigid"):
        flame, weights = make_layer(model), region_weights(model)
        detected = info.get("source") == "detected"
        shared = agreeing(sets, flame.v_template, model.faces) if len(sets) > 1 else None
        if shared is not None and shared.all():  # the conventions coincide on the clicked points
            sets, shared = [next(s for s in sets if s.convention == forced) if forced else sets[0]], None
        lmk = None if not sets else sets[0] if shared is None else sets[0].select(shared)
        candidates = rigid_starts(flame.v_template, model.faces, weights, lmk, prepared.index, detected=detected)
    with timer("fit"):
        head, tail = replace(settings, stages=settings.stages[:2]), replace(settings, stages=settings.stages[2:])

        def start(R: np.ndarray, t: np.ndarray) -> tuple:
            # the first stages of the FLAME fit from one rigid start, and how well they explain the scan
            index = prepared.index.to_frame(R, t)
            state = fit_scan(flame, index, weights, None if lmk is None else lmk.in_frame(R, t), head)
            score = unexplained(vertices(flame, state), index, weights) if len(candidates) > 1 or lmk is None else 0.0
            return score, R, t, index, state

        best = min((start(R, t) for R, t in candidates), key=lambda c: c[0])
        if lmk is None:
            best = search_around(start, best, flame.v_template[weights > 0].mean(0))
        _, R, t, index, state = best
        lmk_model, mismatch = None, None  # the landmarks the rest of the fit uses, in the model frame
        if sets:
            moved = [s.in_frame(R, t) for s in sets]
            lmk_model = moved[0]
            if shared is not None:  # the fitted face tells which convention the clicks were made in
                residuals = convention_residuals(moved, vertices(flame, state), model.faces, ~shared)
                used = forced or min(residuals, key=residuals.get)
                lmk_model = next(s for s in moved if s.convention == used)
                info["convention_residuals_mm"] = residuals
                mismatch = convention_mismatch(used, residuals)
            info["convention"] = lmk_model.convention
            info["convention_chosen_by"] = "user" if forced else "fit" if shared is not None else "model"
        state = fit_scan(flame, index, weights, lmk_model, tail, state)
    return _Fitted(flame, weights, R, t, index, state, vertices(flame, state), lmk_model, mismatch, detected)


#: The vertex-to-vertex refits of the parameters: one Gauss-Newton step on an even 2500 vertices, from
#: parameters already near the mesh (a second step changes neither the registration nor its parameters'
#: mesh measurably).
REFIT = {"iters": 1, "max_vertices": 2500}


def _refine(fitted: _Fitted, model: FlameModel, settings: RefineSettings,
            timer: _Timer) -> tuple[np.ndarray, np.ndarray, FitState, dict]:
    """Step 4: ``(registration (V, 3), the fit it falls back to (V, 3), parameters in the scan frame to
    refit from, the refinement's info)``, vertices in the model frame.

    The refinement charges displacements from the fit. Where the detail phase did not run, a second,
    short refinement from the parameters refitted to the first one's result (nearer the face) is less
    pulled by the first fit's errors.
    """
    f = fitted
    with timer("refine"):
        reg_v, info = refine(f.fit_v, model.faces, f.index, f.weights, _eyeballs(model), settings, f.lmk)
    final = _to_scan_frame(f.flame, f.state, f.R, f.t)
    fit_v = f.fit_v
    if settings.second_pass and info["detail_rounds"] == 0:
        with timer("refit"):
            final = fit_mesh_vertices(f.flame, apply_rigid(reg_v, f.R, f.t), state=final, **REFIT)
        with timer("refine"):
            again = replace(settings, stiffness=settings.second_pass, detail_rounds=0,
                            radius=settings.radius[-1:] * len(settings.second_pass))
            fit_v = (vertices(f.flame, final) - f.t) @ f.R  # the fit the registration now falls back to
            reg_v, second = refine(fit_v, model.faces, f.index, f.weights, _eyeballs(model), again, f.lmk)
            info["rounds"] += second["rounds"]
    return reg_v, fit_v, final, info


def _finish(reg_v: np.ndarray, fit_v: np.ndarray, model: FlameModel, fitted: _Fitted) -> tuple[np.ndarray, dict]:
    """Step 5: folds repaired, then the eyeballs behind the lids; the vertices and the numbers for the
    report (model frame)."""
    reg_v, last = _unfolded(reg_v, fit_v, model, fitted.flame, fitted.state)
    reg_v, surface_info = _behind_lids(reg_v, fit_v, model, fitted.state)
    surface_info.update(folds=last["left"], folds_repaired=last["folded"] - last["left"])
    return reg_v, surface_info


def _unfolded(v: np.ndarray, fit: np.ndarray, model: FlameModel, flame: NumpyFlame,
              state: FitState) -> tuple[np.ndarray, dict]:
    """``v`` (V, 3, model frame) with the folds it has beyond the ``fit``'s own (V, 3) repaired: folds
    against the template posed as ``state``, filled from the fit, else the fitted identity without
    expression, else the template (:mod:`.unfold`). Returns the vertices and the unfold's numbers."""
    identity = vertices(flame, FitState(state.shape, np.zeros_like(state.expression), state.pose, state.trans))
    template = vertices(flame, FitState(np.zeros_like(state.shape), np.zeros_like(state.expression), state.pose,
                                        state.trans))
    return unfold(v, model.faces, template, [fit, identity, template], fixed=_eyeballs(model), keep_folds_of=fit)


def _behind_lids(reg_v: np.ndarray, fit_v: np.ndarray, model: FlameModel, state: FitState) -> tuple[np.ndarray, dict]:
    """The eyeballs moved with their lids and behind them (:mod:`.eyes`), and the numbers for the report."""
    eyeballs = [model.masks[n] for n in ("left_eyeball", "right_eyeball") if n in model.masks]
    if not eyeballs or "eye_region" not in model.masks:
        return reg_v, {}
    lids = np.setdiff1d(model.masks["eye_region"], np.concatenate(eyeballs))
    forward = Rotation.from_rotvec(state.pose[:3]).apply([0.0, 0.0, 1.0])
    out, eyes = place_eyeballs(reg_v, fit_v, model.faces, eyeballs, lids, forward)
    return out, {"eyeball_setback_mm": max(e["setback_mm"] for e in eyes["eyeballs"]),
                 "eyeball_piercing_vertices": sum(e["piercing"] for e in eyes["eyeballs"])}


def _judge(reg_v: np.ndarray, fit_v: np.ndarray, model: FlameModel, fitted: _Fitted, refine_info: dict,
           surface_info: dict, landmark_info: dict, wanted_landmarks: bool = True) -> tuple[Quality, np.ndarray | None]:
    """Step 6: the quality numbers and the verdict with its reasons; the registration's landmarks (model
    frame). Model frame and scan frame differ by a rigid motion: the distances are the same.
    ``wanted_landmarks``: landmarks were given or to be detected (not a geometry-only start asked for),
    so their absence is said with its reason first."""
    lmk = fitted.lmk
    reg_lmk = None if lmk is None else lmk.locate(reg_v, model.faces)
    quality = assess(reg_v, fit_v, model.faces, fitted.index, _face_vertices(model),
                     None if lmk is None else lmk.targets, reg_lmk)
    quality.numbers["refine_rounds"] = len(refine_info["rounds"])
    quality.numbers["refine_detail_rounds"] = refine_info["detail_rounds"]  # > 0: detail beyond the FLAME fit
    quality.numbers.update(surface_info)
    if lmk is None:  # measured on simulated scans: geometry-only starts land 1-8 mm off with a perfect surface fit
        why = landmark_info.get("reason") if wanted_landmarks else None
        return quality.suspect(f"landmark detection failed ({why}); {UNANCHORED}" if why else UNANCHORED), reg_lmk
    outliers = landmark_outliers(lmk, reg_lmk)
    landmark_info["outliers"] = outliers
    reasons = [fitted.mismatch, outlier_reason(outliers, len(lmk), lmk.source)]
    if fitted.detected:
        from .autolandmarks import detection_doubt

        reasons.append(detection_doubt(landmark_info))
    for reason in reasons:
        if reason is not None:
            quality = quality.suspect(reason)
    return quality, reg_lmk


def _result(prepared: PreparedScan, model: FlameModel, fitted: _Fitted, reg_v: np.ndarray, fit_v: np.ndarray,
            final: FitState, quality: Quality, reg_lmk: np.ndarray | None, landmark_info: dict,
            sets: list[LandmarkSet], timings: dict) -> Registration:
    """The :class:`Registration`: everything moved to the scan's frame (metres), the parameters' extras."""
    R, t = fitted.R, fitted.t
    params = final.to_params()
    to_flame = np.eye(4)
    to_flame[:3, :3], to_flame[:3, 3] = R.T, -R.T @ t
    params.extras.update(units=np.array(prepared.unit), scale_to_m=np.array(prepared.k), scan_to_flame=to_flame,
                         verdict=np.array(quality.verdict), landmark_source=np.array(landmark_info["source"]),
                         landmark_convention=np.array(landmark_info.get("convention", "")))
    if fitted.detected:
        from .autolandmarks import detection_record

        params.extras.update(detection_record(landmark_info, sets[0].targets))
    mesh = Mesh(apply_rigid(reg_v, R, t), model.faces, source=prepared.path, meta={"units": "m"})
    return Registration(mesh, params, apply_rigid(fit_v, R, t), quality, timings,
                        None if reg_lmk is None else apply_rigid(reg_lmk, R, t), landmark_info,
                        prepared.mesh.with_vertices(prepared.points))


def _to_scan_frame(flame: NumpyFlame, state: FitState, R: np.ndarray, t: np.ndarray) -> FitState:
    """The same FLAME instance moved by ``x -> R x + t``: compose with the global rotation about the root."""
    root = flame.root(state.shape, state.expression)
    pose = state.pose.copy()
    pose[:3] = (Rotation.from_matrix(R) * Rotation.from_rotvec(state.pose[:3])).as_rotvec()
    return FitState(state.shape.copy(), state.expression.copy(), pose, R @ (root + state.trans) + t - root)
