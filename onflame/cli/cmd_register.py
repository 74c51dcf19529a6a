"""``register`` (raw scans to FLAME) and ``fit-mesh`` (FLAME parameters for meshes in FLAME's topology)."""
from __future__ import annotations

import argparse
import string
from pathlib import Path

from ..errors import UsageError, one_line
from ..fileio.paths import confine_writes
from .common import EXIT_FAILED, EXIT_OK, batch_progress, item_failed, print_json, say_error, start_up_done
from .model import describe, load_for, model_option, require_model, topology_problem
from .options import add_json, add_model, landmark_convention

#: Fields a ``register --landmarks`` template may use.
TEMPLATE_FIELDS = ("stem", "folder")

REGISTER_EXAMPLES = """examples:
  onflame register scan.obj --model FLAME2020/ --out regs      (landmarks: scan.lmk51.npy, else detected)
  onflame register scans/*.obj --model FLAME2020/ --out regs --landmarks 'clicks/{stem}.pp'
  onflame register face.wrl --landmarks face.ljson --out regs --out-units mm --picture -v
  ONFLAME_MODEL=FLAME2020/generic_model.pkl onflame register scans/*.ply --out regs

exit codes: 0 every scan registered (verdict ok or suspect), 1 a scan failed or got the verdict failed
(its outputs are kept for inspection; the others go on), 2 bad usage (no model, two scans that would
write the same outputs, an unwritable --out: before any work), 130 interrupted, 143 terminated."""

FIT_MESH_EXAMPLES = """examples:
  onflame fit-mesh tempeh/*.obj --model FLAME2020/ --out params
  onflame fit-mesh coma/*.ply --model FLAME2020/generic_model.pkl --units mm --out params --json

exit codes: 0 every mesh fitted, 1 a mesh could not be read or has another topology than the model
(the others go on), 2 bad usage, 130 interrupted, 143 terminated."""


def add_parsers(sub: argparse._SubParsersAction, parents: list) -> None:
    p = sub.add_parser("register", parents=parents,
                       help="register raw face scans to FLAME: registration mesh + FLAME parameters + report",
                       description="Register raw face scans (OBJ, PLY, WRL, ABS, ...) in any units, position and "
                                   "orientation to FLAME. For each scan it writes <name>.npz (MICA's betas, pose and "
                                   "trans, with the scan's units and the scan-to-FLAME transform), <name>.obj (FLAME "
                                   "topology), <name>_report.json (quality numbers, verdict ok/suspect/failed with "
                                   "reasons) and with --picture <name>_report.png, all four together or none.",
                       epilog=REGISTER_EXAMPLES)
    p.add_argument("scans", type=Path, nargs="+", help="scan files")
    add_model(p, needed=True)
    p.add_argument("--out", type=Path, required=True, help="output folder for <name>.npz/.obj/_report.json")
    p.add_argument("--landmarks", default="auto", metavar="auto|none|FILE|TEMPLATE",
                   help="landmarks on each scan, in its units and axes: auto (<stem>.lmk51.npy or .lmk51.txt beside "
                        "the scan, else detected), none (detected), one FILE (one scan), or a TEMPLATE with {stem} "
                        "and {folder}, e.g. 'clicks/{stem}.pp' (.npy .txt .pp .ljson .bnd .lnd .land; 51 or 68 points "
                        "in iBUG order or NoW's 7)")
    p.add_argument("--landmark-convention", default="auto", type=landmark_convention, metavar="NAME",
                   help="convention the landmarks were clicked in: auto (decided by fitting), mica (MICA/DECA's "
                        "landmark_embedding.npy), flame (FLAME's flame_static_embedding.pkl), or mica51, flame68, ...")
    p.add_argument("--units", default="auto", choices=["auto", "m", "cm", "mm"], help="the scans' unit (default: "
                                                                                      "detected from the head's size)")
    p.add_argument("--out-units", default="m", choices=["scan", "m", "mm"],
                   help="unit of the registration .obj: m (MICA's, the default), mm, or scan (the scan's own, to lay "
                        "it over the scan in MeshLab); the parameters stay in metres")
    p.add_argument("--auto-landmarks", default="auto", choices=["auto", "detect", "geometry"],
                   help="without landmark files: detect them on a render (auto falls back to geometry), or geometry only")
    p.add_argument("--picture", action="store_true",
                   help="also write <name>_report.png: scan, registration and error heat map (about a second more)")
    add_json(p)
    p.set_defaults(run=cmd_register, main_input="scans")

    p = sub.add_parser("fit-mesh", parents=parents, help="fit FLAME parameters to meshes already in FLAME topology",
                       description="FLAME parameters (<name>.npz, MICA's keys) for meshes already in the model's "
                                   "topology (TEMPEH, CoMA, VOCA or MICA registrations), with the per-vertex residual "
                                   "of FLAME(params) against the mesh.",
                       epilog=FIT_MESH_EXAMPLES)
    p.add_argument("meshes", type=Path, nargs="+", help="meshes in the model's topology")
    add_model(p, needed=True)
    p.add_argument("--out", type=Path, required=True, help="output folder for <name>.npz")
    p.add_argument("--units", default="m", choices=["auto", "m", "cm", "mm"], help="the meshes' unit (default m)")
    add_json(p)
    p.set_defaults(run=cmd_fit_mesh, main_input="meshes")


def output_stem(path: Path) -> str:
    """The name a scan's outputs get: its file name without the format suffix (and ``.gz``)."""
    from ..mesh.scan_names import scan_stem

    return scan_stem(path)


def refuse_collisions(inputs: list[Path], out: Path) -> None:
    """:class:`UsageError` when two inputs would write the same outputs (``a/x.obj`` and ``b/x.ply``)."""
    seen: dict[str, Path] = {}
    for path in inputs:
        stem = output_stem(path)
        if stem in seen:
            raise UsageError(path, f"would write the same outputs as {seen[stem]} ({out / stem}.*): give them "
                                   "different file names or register them into different --out folders")
        seen[stem] = path


def check_landmark_option(option: str, scans: list[Path]) -> None:
    """``--landmarks``: auto, none, a template with known fields, or one file for one scan."""
    if option in ("auto", "none"):
        return
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(option) if f is not None]
    except ValueError as exc:
        raise UsageError(None, f"--landmarks {option!r}: {exc}") from None
    unknown = [f for f in fields if f not in TEMPLATE_FIELDS]
    if unknown:
        raise UsageError(None, f"--landmarks template {option!r} has unknown field(s) "
                               f"{', '.join('{' + f + '}' for f in unknown)}; use {{stem}} and {{folder}}")
    if not fields and len(scans) != 1:
        raise UsageError(None, f"--landmarks FILE takes exactly one scan ({len(scans)} given): give a template with "
                               "{stem} (e.g. 'clicks/{stem}.pp'), or auto for <stem>.lmk51.npy beside each scan")


def landmark_file(option: str, scan: Path) -> Path | None:
    """The landmark file of ``scan`` under ``--landmarks option`` (None: detect them)."""
    from ..mesh.scan_names import landmark_sidecar

    if option == "none":
        return None
    if option == "auto":
        return landmark_sidecar(scan)
    return Path(option.format(stem=output_stem(scan), folder=scan.parent))


def read_scan_landmarks(path: Path, scan):
    """The landmarks in ``path`` on ``scan`` (the scan's file, or its mesh for a ``.land`` file of vertex ids;
    points in the scan's units and axes); :class:`InputError` naming the file (a ``.land`` of 2D photo
    points included)."""
    from ..fileio import check_regular
    from ..mesh import Mesh
    from ..mesh.landmark_files import read_landmarks

    check_regular(path)  # missing, a folder, a FIFO or a device: said as what it is, never opened
    return read_landmarks(path, scan if isinstance(scan, Mesh) else None)


def outputs(inputs: list[Path], out: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The files a batch writes: ``<out>/<stem><suffix>`` for every input and suffix."""
    return [out / f"{output_stem(path)}{suffix}" for path in inputs for suffix in suffixes]


def cmd_register(args: argparse.Namespace) -> int:
    with confine_writes(args.out):  # nothing written outside --out, nor through a link inside it
        return _register(args)


def _register(args: argparse.Namespace) -> int:
    from ..fileio import check_output_dir, refuse_links
    from ..mesh import read_mesh
    from ..registration import register, save_registration

    require_model(args)
    check_landmark_option(args.landmarks, args.scans)
    refuse_collisions(args.scans, args.out)
    check_output_dir(args.out)
    refuse_links(*outputs(args.scans, args.out, (".npz", ".obj", "_report.json")
                          + (("_report.png",) if args.picture else ())))
    model = load_for(args)
    start_up_done(args)
    model_text = describe(model, model_option(args))
    results, failed = [], 0
    progress = batch_progress(args, len(args.scans), "register")
    for scan in args.scans:
        try:  # one bad scan never stops the others
            lmk_path = landmark_file(args.landmarks, scan)
            # FaceWarehouse's .land files may name the scan's vertices: read it first, then register what was read
            land = lmk_path is not None and lmk_path.suffix.lower() == ".land"
            source = read_mesh(scan, check_texture=False) if land else scan
            clicks = None if lmk_path is None else read_scan_landmarks(lmk_path, source)
            reg = register(source, model, landmarks=clicks, units=args.units, auto_landmarks=args.auto_landmarks,
                           landmark_convention=args.landmark_convention)
            units = str(reg.params.extras["units"]) if args.out_units == "scan" else args.out_units
            paths = save_registration(reg, args.out, output_stem(scan), picture=args.picture, mesh_units=units)
        except Exception as exc:  # noqa: BLE001  reported as the item's one line (with --debug: the traceback)
            progress.clear()
            item_failed(exc, scan, args)
            failed += 1
            results.append({"scan": str(scan), "verdict": "failed", "error": one_line(str(exc)), "model": model_text})
            progress.advance(scan.name)
            continue
        results.append({"scan": str(scan), "model": model_text, **reg.report(), "mesh_units": units, "outputs": paths})
        progress.clear()
        if reg.verdict == "failed":  # written for inspection, but a failure
            failed += 1
            say_error(scan, f"registration failed its quality checks ({'; '.join(reg.quality.reasons)}); "
                            f"outputs kept for inspection in {args.out}")
        if not args.json:
            print(_register_line(scan, reg, model_text, paths["params"]), flush=True)
            if args.verbose:  # the detail: every quality number and where the time went
                q = reg.quality.numbers
                print("  " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in q.items()))
                print("  seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in reg.timings.items()), flush=True)
        progress.advance(scan.name)
    if args.json:
        print_json(results)
    return EXIT_FAILED if failed else EXIT_OK


def _register_line(scan: Path, reg, model_text: str, params_path: str) -> str:
    q = reg.quality.numbers
    return (f"{scan}: {reg.verdict} ({', '.join(reg.quality.reasons) or 'all checks passed'}); model {model_text}; "
            f"units {reg.report()['units']}; landmarks {_landmark_note(reg.landmark_info)}; "
            f"scan-to-mesh median {q['scan_to_mesh_median_mm']:.3f} mm; {reg.timings['total']:.2f} s -> {params_path}")


def _landmark_note(info: dict) -> str:
    """``given (flame, chosen by fit: flame 1.2 mm, mica 4.8 mm)``: where a registration's landmarks came from."""
    note = info.get("source", "?")
    if info.get("convention"):
        note += f" ({info['convention']}"
        if "convention_residuals_mm" in info:
            note += ", chosen by fit: " + ", ".join(f"{k} {v:.1f} mm" for k, v in info["convention_residuals_mm"].items())
        note += ")"
    return note


def cmd_fit_mesh(args: argparse.Namespace) -> int:
    with confine_writes(args.out):
        return _fit_mesh(args)


def _fit_mesh(args: argparse.Namespace) -> int:
    from ..fileio import check_output_dir, refuse_links
    from ..mesh import read_mesh
    from ..registration import fit_mesh

    require_model(args)
    refuse_collisions(args.meshes, args.out)
    check_output_dir(args.out)
    refuse_links(*outputs(args.meshes, args.out, (".npz",)))
    model = load_for(args)
    start_up_done(args)
    model_text = describe(model, model_option(args))
    results, failed = [], 0
    progress = batch_progress(args, len(args.meshes), "fit-mesh")
    for path in args.meshes:
        out = Path(args.out) / (output_stem(path) + ".npz")
        try:
            mesh = read_mesh(path)
            if mesh.n_vertices != model.n_vertices:
                raise topology_problem(path, mesh.n_vertices, model, model_option(args))
            fit = fit_mesh(mesh, model, units=args.units)
            fit.params.save(out)
        except Exception as exc:  # noqa: BLE001  as in register: one line per bad mesh, the others go on
            progress.clear()
            item_failed(exc, path, args)
            failed += 1
            results.append({"mesh": str(path), "error": one_line(str(exc)), "model": model_text})
            progress.advance(path.name)
            continue
        s = fit.summary()
        results.append({"mesh": str(path), "params": str(out), "model": model_text, **s})
        if not args.json:
            progress.clear()
            print(f"{path}: FLAME(params) vs mesh: mean {s['mean_mm']:.3f} mm, max {s['max_mm']:.3f} mm; "
                  f"model {model_text} -> {out}", flush=True)
        progress.advance(path.name)
    if args.json:
        print_json(results)
    return EXIT_FAILED if failed else EXIT_OK

