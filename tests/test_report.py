"""``onflame report``: the site of a real (small) build, checked in headless Chromium; caching; bad input.

The built root: FRGC (three actors: one registered, one whose landmark clicks were scattered so the
build calls it suspect, one whose scan file is truncated so it fails) and STIRLING (two registered),
built by ``onflame build`` itself, with a few ArcFace crops and an image list for FRGC.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from onflame.cli import main as cli_main
from onflame.dataset import write_image_paths
from onflame.dataset.build import build
from onflame.flame import FlameParams, read_params
from onflame.mesh import read_mesh, write_obj
from onflame.report import write_report
from onflame.synthetic.dataset import MICA_ACTORS, make_mica_dataset
from onflame.synthetic.raw_releases import write_raw_release

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def head(procedural_head):
    return procedural_head


def _crops(root: Path, actor: str, names: list[str], rng: np.random.Generator) -> None:
    """224 px aligned crops and their ArcFace blobs, as ``onflame prepare`` writes them."""
    from PIL import Image

    folder = root / "FRGC" / "arcface_input" / actor
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        img = rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / n)
        small = np.asarray(Image.fromarray(img).resize((112, 112)))
        np.save(folder / n.replace(".jpg", ".npy"), ((small.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1))


@pytest.fixture(scope="module")
def built(tmp_path_factory, head) -> Path:
    """The built root described in the module docstring."""
    top = tmp_path_factory.mktemp("built")
    frgc = write_raw_release("FRGC", top / "raw" / "FRGC", head, n_actors=3, seed=0)
    write_raw_release("STIRLING", top / "raw" / "STIRLING", head, n_actors=2, seed=1)
    clicks = frgc.scans[1].path.parent / f"{frgc.scans[1].stem}.lmk51.npy"
    lmk = np.load(clicks)
    np.save(clicks, lmk + np.random.default_rng(0).normal(0.0, 6.0, lmk.shape))  # mm: scattered clicks
    frgc.scans[2].path.write_bytes(frgc.scans[2].path.read_bytes()[:200])  # a truncated scan
    root = top / "mica"
    build([("FRGC", top / "raw" / "FRGC"), ("STIRLING", top / "raw" / "STIRLING")], root, head, workers=2)
    rng = np.random.default_rng(1)
    _crops(root, "02463", ["02463d567.jpg", "02463d592.jpg"], rng)
    _crops(root, "04200", ["04200d72.jpg"], rng)
    write_image_paths(root / "image_paths" / "FRGC.npy", {
        "02463": (["02463/02463d567.jpg", "02463/02463d592.jpg"], "02463/02463d546.npz"),
        "04200": (["04200/04200d72.jpg", "04200/04200d75.jpg"], "04200/04200d74.npz"),  # the second is missing
    })
    return root


def _summary(root: Path, subset: str) -> dict:
    return json.loads((root / subset / "build" / "summary.json").read_text())


@pytest.fixture(scope="module")
def site(tmp_path_factory, built):
    return write_report(built, tmp_path_factory.mktemp("site") / "report", workers=2)


def test_report_counts_and_problems(site, built):
    for subset in ("FRGC", "STIRLING"):
        summary = _summary(built, subset)
        c = site.counts[subset]
        assert (c["ok"], c["suspect"], c["failed"]) == (summary["registered"], summary["suspect"], summary["failed"])
    assert site.counts["FRGC"] == {"ok": 1, "suspect": 1, "failed": 1, "unknown": 0, "subjects": 3,
                                     "problem": 0}  # the failed scan is the build's failure, no problem of the tree
    assert site.drawn == 4 and site.cached == 0  # the failed scan has no mesh to draw
    text = "\n".join(site.problems)
    assert "1 of 4 images listed" in text and "first 04200/04200d75.jpg" in text
    assert "04936d100" in text  # the failed scan is named


def _images(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in (out / "img").rglob("*") if p.is_file()}


def test_unchanged_root_draws_nothing_again(site, built, tmp_path):
    before = _images(site.out)
    again = write_report(built, site.out, workers=2)
    assert (again.drawn, again.cached) == (0, 4)
    assert _images(site.out) == before  # not one picture written again
    # a copy of the root, every file touched: the same content, so still nothing to draw
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    for p in copy.rglob("*"):
        if p.is_file():
            os.utime(p, ns=(1_000_000_000, 1_000_000_000))
    assert write_report(copy, site.out, workers=1).drawn == 0
    # one registration changed: exactly that subject is drawn again
    obj = copy / "STIRLING" / "registrations" / "F1001" / "F1001_N.obj"
    mesh = read_mesh(obj)
    write_obj(obj, mesh.with_vertices(mesh.vertices + [0.0, 0.0, 0.001]))
    changed = write_report(copy, site.out, workers=1)
    assert (changed.drawn, changed.cached) == (1, 3)
    assert write_report(built, site.out, workers=1).drawn == 1  # back to the original: only that one again


def _page_values(page, selector: str, attribute: str) -> list[str]:
    return page.eval_on_selector_all(selector, f"els => els.map(e => e.getAttribute('{attribute}'))")


def test_pages_in_chromium(site, built, tmp_path):
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Chromium is not installed ({CHROMIUM}); Debian: apt-get install chromium (.ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the test extra's playwright is not installed")
    shots = Path(os.environ.get("ONFLAME_REPORT_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url} {r.failure}"))

        # overview: the counts are the build summary's
        page.goto(site.index.resolve().as_uri())
        page.screenshot(path=str(shots / "overview.png"), full_page=True)
        for subset in ("FRGC", "STIRLING"):
            summary = _summary(built, subset)
            for key in ("registered", "suspect", "failed"):
                cell = page.locator(f"tr[data-subset='{subset}'] td[data-count='{key}']")
                assert cell.inner_text().strip() == str(summary[key]), (subset, key)

        # the gallery: every thumbnail loads
        page.click("tr[data-subset='FRGC'] th a")
        page.wait_for_load_state("load")
        assert page.url.endswith("/FRGC/index.html")
        thumbs = page.eval_on_selector_all("img.thumb", "els => els.map(e => [e.getAttribute('src'), e.complete, "
                                                        "e.naturalWidth])")
        assert len(thumbs) == 2 and all(ok and w > 0 for _, ok, w in thumbs), thumbs
        page.screenshot(path=str(shots / "gallery.png"), full_page=True)

        # sorting by a number: the order of the build reports' p95, unknown values last
        names = _page_values(page, ".card", "data-name")
        assert names == sorted(names)
        p95 = {}
        for name in names:
            rep = built / "FRGC" / "build" / "reports" / f"{name}.json"
            p95[name] = json.loads(rep.read_text()).get("scan_to_mesh_p95_mm", float("nan"))
        page.select_option("#sort-key", "scan_to_mesh_p95_mm")
        orders = {}
        for direction, sign in (("asc", 1.0), ("desc", -1.0)):
            page.select_option("#sort-dir", direction)
            want = sorted(names, key=lambda n: (np.isnan(p95[n]), sign * np.nan_to_num(p95[n])))
            orders[direction] = _page_values(page, ".card", "data-name")
            assert orders[direction] == want, direction
        assert names in orders.values() and orders["asc"] != orders["desc"]  # one of them reorders the cards

        # filtering by verdict: only the failed scans are left on screen
        for verdict in ("ok", "suspect", "unknown"):
            page.uncheck(f"#verdict-filter input[value='{verdict}']")
        cards = page.locator(".card")
        shown = [cards.nth(i) for i in range(cards.count()) if cards.nth(i).is_visible()]
        assert len(shown) == _summary(built, "FRGC")["failed"] == 1
        assert all(c.get_attribute("data-verdict") == "failed" for c in shown)
        assert cards.count() == 3
        page.screenshot(path=str(shots / "gallery_failed.png"), full_page=True)
        page.click("#reset")
        assert all(cards.nth(i).is_visible() for i in range(3))

        # every link to a subject page resolves; open the suspect one
        gallery = Path(page.url.replace("file://", ""))
        for href in _page_values(page, ".card a", "href"):
            assert (gallery.parent / href).is_file(), href
        page.click(".card[data-verdict='suspect'] .card-title a")
        page.wait_for_load_state("load")
        assert "04200/04200d74" in page.title()
        assert "landmark_median_mm" in page.inner_text("ul.reasons")
        pictures = page.eval_on_selector_all("main img", "els => els.map(e => [e.getAttribute('src'), e.complete, "
                                                         "e.naturalWidth])")
        assert len(pictures) >= 4 and all(ok and w > 0 for _, ok, w in pictures), pictures  # views, heat, fit, photo
        page.screenshot(path=str(shots / "subject.png"), full_page=True)

        page.click("a[rel='prev']")  # the registered subject, with its two photos and their ArcFace inputs
        page.wait_for_load_state("load")
        assert page.locator(".photo img").count() == 4

        page.goto((site.out / "FRGC" / "statistics.html").resolve().as_uri())
        page.screenshot(path=str(shots / "statistics.png"), full_page=True)
        browser.close()
    assert not errors, errors
    assert all((shots / f"{n}.png").stat().st_size > 10_000 for n in ("overview", "gallery", "subject"))


# --- bad input -----------------------------------------------------------------------------------------------

@pytest.fixture()
def unbuilt(tmp_path, head) -> Path:
    """A root without any build files: MICA's layout only (10 BU3DFE subjects, 3 FRGC)."""
    root = tmp_path / "mica"
    make_mica_dataset(root, head, actors_per_subset=3, subsets=["FRGC"])
    make_mica_dataset(root, head, actors_per_subset=10, subsets=["BU3DFE"], seed=1)
    return root


def test_bad_input_still_reports(unbuilt, head, tmp_path):
    (a0, s0), (a1, s1), (a2, s2) = MICA_ACTORS["FRGC"][:3]
    frgc = unbuilt / "FRGC"
    (frgc / "registrations" / a0 / f"{s0}.obj").unlink()                     # a missing registration
    (frgc / "FLAME_parameters" / a1 / f"{s1}.npz").write_bytes(b"not a zip")  # a corrupt npz
    (frgc / "registrations" / a2 / f"{s2}.obj").write_text("v 1 2\nf 1 2 9\n")  # a broken mesh
    result = write_report(unbuilt, tmp_path / "site", model=head, workers=1)
    text = "\n".join(result.problems)
    assert f"{a0}/{s0}.obj: registration missing" in text
    assert f"{a1}/{s1}.npz: not a readable .npz" in text
    assert f"{a2}/{s2}.obj" in text
    assert "no build reports" in text
    assert result.counts["FRGC"] == {"ok": 0, "suspect": 0, "failed": 0, "unknown": 3, "subjects": 3, "problem": 3}
    index = result.index.read_text()
    assert "no build reports" in index and "registration missing" in index
    gallery = (result.out / "FRGC" / "index.html").read_text()
    assert gallery.count('class="thumb"') == 1 and gallery.count("no registration") >= 2
    page = (result.out / "FRGC" / "subjects" / f"{a1}__{s1}.html").read_text()
    assert "not a readable .npz" in page


def test_outliers_are_flagged(unbuilt, head, tmp_path):
    """One subject with an extreme shape, one whose registration is 3 mm off its parameters."""
    bu = unbuilt / "BU3DFE"
    (a_shape, s_shape), (a_off, s_off) = MICA_ACTORS["BU3DFE"][2], MICA_ACTORS["BU3DFE"][5]
    npz = bu / "FLAME_parameters" / a_shape / f"{s_shape}.npz"
    p = read_params(npz)
    shape = p.shape.copy()
    shape[:3] = [8.0, -8.0, 8.0]
    FlameParams(shape, p.expression, p.pose, p.trans).save(npz)
    (bu / "registrations" / a_shape / f"{s_shape}.obj").unlink()
    make_mica_dataset(unbuilt, head, actors_per_subset=10, subsets=["BU3DFE"], seed=1)  # its mesh from the new params
    obj = bu / "registrations" / a_off / f"{s_off}.obj"
    mesh = read_mesh(obj)
    write_obj(obj, mesh.with_vertices(mesh.vertices + [0.003, 0.0, 0.0]))

    result = write_report(unbuilt, tmp_path / "site", subsets=["bu3dfe"], model=head, workers=2)
    assert list(result.counts) == ["BU3DFE"]
    stats_page = (result.out / "BU3DFE" / "statistics.html").read_text()
    assert f"{a_shape}/{s_shape}" in stats_page and f"{a_off}/{s_off}" in stats_page
    off_page = (result.out / "BU3DFE" / "subjects" / f"{a_off}__{s_off}.html").read_text()
    assert "FLAME(params) vs registration, mean: 3mm" in off_page
    shape_page = (result.out / "BU3DFE" / "subjects" / f"{a_shape}__{s_shape}.html").read_text()
    assert "shape: robust Mahalanobis distance" in shape_page
    others = [p for p in (result.out / "BU3DFE" / "subjects").glob("*.html")
              if p.stem not in (f"{a_shape}__{s_shape}", f"{a_off}__{s_off}")]
    assert not any("shape: robust Mahalanobis" in p.read_text() for p in others)


def test_zipped_subset(tmp_path, head):
    root = tmp_path / "mica"
    make_mica_dataset(root, head, actors_per_subset=2, subsets=["FLORENCE"])
    shutil.make_archive(str(root / "FLORENCE"), "zip", root, "FLORENCE")
    shutil.rmtree(root / "FLORENCE")
    result = write_report(root / "FLORENCE.zip", tmp_path / "site", workers=1)
    assert result.drawn == 2 and not [p for p in result.problems if "no build reports" not in p]


def test_cli_report(built, tmp_path, capsys):
    out = tmp_path / "site"
    assert cli_main(["report", str(built), "--subset", "STIRLING", "--out", str(out), "--workers", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "model: model.npz (not FLAME's topology, 5181 vertices)"  # the root's own
    assert lines[1] == "STIRLING: 2 subjects: registered 2, suspect 0, failed 0"
    assert lines[-1] == str((out / "index.html").resolve())
    assert cli_main(["report", str(built), "--out", str(out), "--json", "--no-heatmaps"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["counts"]) == {"FRGC", "STIRLING"}
    assert cli_main(["report", str(tmp_path / "nowhere"), "--out", str(out)]) == 1
    assert cli_main(["report", str(built), "--subset", "LYHM", "--out", str(out)]) == 2  # bad usage
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"onflame: {tmp_path / 'nowhere'}: no such file or folder",
                   f"onflame: {built}: --subset LYHM: no such subset here (it has FRGC, STIRLING)"]
    assert cli_main(["report", str(built), "--out", str(built / "FRGC")]) == 1  # not a report folder: refused
