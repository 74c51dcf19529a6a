"""The bad-input corpus as a table: every case of ``tests/test_bad_input_corpus.py``, run now.

    python tools/reliability_table.py [--write-docs]

Runs the corpus (pytest, the corpus file alone), then prints per case the command, the input, the
expected exit code and line, the peak memory of the cases run as a process, and whether it passed;
then the other tests of the file, and the bounds onflame reads within (from the code's constants).
``--write-docs`` puts the tables into ``docs/reliability.md`` (sections ``corpus`` and ``bounds``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "benchmarks")]


def run_corpus() -> tuple[dict[str, str], dict[str, dict]]:
    """Run the corpus: ``({test name: "passed" | "failed" | "skipped"}, {case id: numbers noted})``."""
    with tempfile.TemporaryDirectory() as tmp:
        junit, notes = Path(tmp) / "junit.xml", Path(tmp) / "notes.jsonl"
        env = dict(os.environ, ONFLAME_CORPUS_RESULTS=str(notes))
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                        "tests/test_bad_input_corpus.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        outcomes = {}
        for case in ET.parse(junit).getroot().iter("testcase"):
            kinds = {child.tag for child in case}
            outcomes[case.get("name")] = ("failed" if kinds & {"failure", "error"} else
                                          "skipped" if "skipped" in kinds else "passed")
        noted = {}
        if notes.is_file():
            for line in notes.read_text().splitlines():
                entry = json.loads(line)
                noted[entry.pop("id")] = entry
    return outcomes, noted


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def corpus_table(outcomes: dict[str, str], noted: dict[str, dict]) -> str:
    import test_bad_input_corpus as corpus

    rows, passed, total, peaks = [], 0, 0, []
    for table, test in ((corpus.CASES, "test_bad_input"), (corpus.BOUNDED, "test_bad_input_bounded")):
        for case in table:
            outcome = outcomes.get(f"{test}[{case.id}]", "not run")
            total += 1
            passed += outcome == "passed"
            command = case.argv.split()[0] + (" " + case.argv.split()[1] if case.argv.startswith(("evaluate", "image-paths")) else "")
            names = (case.names,) if isinstance(case.names, str) else case.names
            if case.code == 0:
                expected = "exit 0; at most one line, naming the file"
            else:
                who = ", ".join(n.replace("{d}/", "").replace("{model}", "MODEL").replace("{ro}", "RO") for n in names)
                expected = f"`onflame: {who or '…'}: …{case.says}…`" if who or case.says else "one `onflame:` line"
            peak = noted.get(case.id, {}).get("peak_mb")
            if peak is not None:
                peaks.append(peak)
            rows.append(f"| {case.cause or '1st'} | `{command}` | {_cell(case.what or case.id.replace('-', ' '))} | "
                        f"{case.code} | {_cell(expected)} | {'' if peak is None else peak} | {outcome} |")
    head = (f"**{passed} of {total} cases pass** ({len(corpus.CASES)} in the test process, {len(corpus.BOUNDED)} as an "
            f"`onflame` process with a {corpus.TIMEOUT} s limit and their peak memory measured; largest peak "
            f"{max(peaks) if peaks else '-'} MB, limit {corpus.PEAK_LIMIT >> 20} MB).\n\n"
            "| issue | command | input | exit | expected line | peak MB | result |\n"
            "| --- | --- | --- | --- | --- | --- | --- |\n")
    others = sorted((name, outcome) for name, outcome in outcomes.items()
                    if not name.startswith(("test_bad_input[", "test_bad_input_bounded[")))
    tests = "\n".join(f"| `{name}` | {_doc_line(corpus, name)} | {outcome} |" for name, outcome in others)
    n_ok = sum(o == "passed" for _, o in others)
    return (head + "\n".join(rows) + f"\n\nThe file's other tests (outputs, caches, modes): **{n_ok} of {len(others)} "
            "pass**.\n\n| test | what it checks | result |\n| --- | --- | --- |\n" + tests)


def _doc_line(corpus, name: str) -> str:
    func = getattr(corpus, name.split("[")[0], None)
    doc = (func.__doc__ or "").strip().split("\n\n")[0] if func else ""
    return _cell(" ".join(doc.split()))


def bounds_table() -> str:
    from onflame import fileio, safepickle
    from onflame.dataset.image_paths import MAX_LIST_BYTES
    from onflame.evaluation.now import CACHE_MAX_BYTES
    from onflame.mesh import frgc_abs, io, landmark_files, wrl
    from onflame.mesh.images import IMAGE_MAX_BYTES
    from PIL import Image

    mib = lambda n: f"{n / 2**20:g} MiB"  # noqa: E731
    rows = [
        ("a model pickle or `.npz`, any file without a smaller bound", mib(fileio.MAX_READ_BYTES)),
        ("a scan or registration (OBJ, PLY, VRML, STL, ...), after gzip", mib(fileio.MESH_MAX_BYTES)),
        ("a FLAME parameter `.npz`, all arrays together", mib(fileio.PARAMS_MAX_BYTES)),
        ("a material library, a NoW image list, masks and embeddings", mib(fileio.SIDE_FILE_MAX_BYTES)),
        ("a landmark file", mib(landmark_files.MAX_BYTES)),
        ("a MICA image list (`image_paths/*.npy`)", mib(MAX_LIST_BYTES)),
        ("an FRGC range image, after gzip", f"{mib(frgc_abs.MAX_BYTES)}, {frgc_abs.MAX_PIXELS} pixels"),
        ("an image (texture, photo, crop)", f"{mib(IMAGE_MAX_BYTES)}, {Image.MAX_IMAGE_PIXELS} pixels"),
        ("evaluate now's cached result of one image", mib(CACHE_MAX_BYTES)),
        ("a mesh's vertices / triangles", f"{io.MAX_VERTICES} / {io.MAX_TRIANGLES}, at most 4 triangles per vertex"),
        ("VRML instancing: nodes visited / shapes placed", f"{wrl.MAX_NODE_VISITS} / {wrl.MAX_SHAPES}"),
        ("a pickle's nesting depth", str(safepickle.MAX_DEPTH)),
    ]
    return "| what is read | at most |\n| --- | --- |\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write-docs", action="store_true", help="rewrite the tables in docs/reliability.md")
    args = parser.parse_args()
    outcomes, noted = run_corpus()
    corpus, bounds = corpus_table(outcomes, noted), bounds_table()
    print(corpus + "\n\n" + bounds)
    if args.write_docs:
        from doc_tables import write_section

        write_section("corpus", corpus, DOC)
        write_section("bounds", bounds, DOC)


if __name__ == "__main__":
    main()
