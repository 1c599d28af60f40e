"""The report and the image browser opened in a real browser (headless Chromium from file://): no script error,
every image resolves, and the browser's filters show the images they should.

The page is copied beside itself with a probe script added (so relative links resolve as in the original); the
probe writes what it found into the DOM, which ``chromium --dump-dom`` prints once the page has loaded. Skips
where no Chromium is installed (``apt-get install chromium``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from locbench.errors import LocbenchError
from locbench.explain.browser import PAGE_SIZE, write_browser
from locbench.report import build_report
from locbench.report.explain_section import error_analysis
from locbench.store.rundir import RunDir

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (apt-get install chromium)")

# Collects script errors and resources that fail to load, before the page's own scripts run.
HEAD_PROBE = """<script>window.__errors = [];
window.addEventListener("error",
  (e) => window.__errors.push(e.message || ("failed: " + (e.target.src || e.target.href))), true);
const __ce = console.error; console.error = (...a) => { window.__errors.push(a.join(" ")); __ce(...a); };</script>"""

# After load: the images, then (on the browser page) every class x outcome filter and the count it shows.
BODY_PROBE = """<script>window.addEventListener("load", () => {
  const images = () => [...document.images].map((i) => ({src: i.getAttribute("src").slice(0, 60),
    ok: i.complete && i.naturalWidth > 0}));
  const out = {errors: window.__errors, images: images(), filters: []};
  const cls = document.getElementById("cls");
  if (cls) {
    const outcome = document.getElementById("outcome");
    for (const c of [...cls.options].map((o) => o.value)) {
      for (const o of ["all", "TP", "FP", "FN", "err"]) {
        cls.value = c; outcome.value = o;
        outcome.dispatchEvent(new Event("change"));
        out.filters.push({cls: +c, outcome: o, cards: document.querySelectorAll(".card").length,
          count: document.getElementById("count").textContent});
      }
    }
    cls.value = "-1"; outcome.value = "all"; outcome.dispatchEvent(new Event("change"));
    document.querySelector(".card").click();
    out.detail_rows = document.querySelectorAll("#detail tr").length;
    out.detail_images = [...document.querySelectorAll("#detail img")].map((i) => i.getAttribute("src"));
  }
  const pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});</script>"""


def open_in_chromium(page: Path) -> dict:
    """Load ``page`` (a copy with the probes, beside it) in headless Chromium; the probe's findings."""
    html = page.read_text(encoding="utf-8")
    probed = page.with_name(page.stem + ".probe.html")
    probed.write_text(html.replace("<head>", "<head>" + HEAD_PROBE, 1).replace("</body>", BODY_PROBE + "</body>"))
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000", "--dump-dom",
           probed.as_uri()]  # fmt: skip
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, f"the probe did not run in {probed}; chromium printed: {dom[:500]}"
    return json.loads(found.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    from fixtures.synth_data import one_torch_thread

    from locbench.config import load_config
    from locbench.data.synth import synthesize
    from locbench.engine.fit import train

    root = tmp_path_factory.mktemp("pages")
    data = synthesize(root / "data", images=40, size=64, seed=1)
    overrides = {"data.path": str(data), "data.cache_dir": str(root / "cache"), "data.img_size": 64,
                 "data.workers": 0, "data.channels": "rgby", "model.backbone": "test_resnet", "train.epochs": 1,
                 "train.batch_size": 8, "train.device": "cpu", "log.progress": "lines"}  # fmt: skip
    with one_torch_thread():
        return train(load_config(None, overrides), root / "sweep" / "run")


def test_image_browser_loads_and_its_filters_show_the_right_images(trained_run: Path):
    page = write_browser(trained_run, part="val", cams="gradcam", device="cpu")
    found = open_in_chromium(page)
    assert found["errors"] == []
    assert found["images"] and all(i["ok"] for i in found["images"]), found["images"]
    stored = RunDir(trained_run).read_predictions("val")
    _, thr = RunDir(trained_run).read_thresholds()
    pred, truth = stored.probs >= thr[None, :], stored.targets.astype(bool)
    n = len(stored.ids)
    kinds = {"TP": pred & truth, "FP": pred & ~truth, "FN": ~pred & truth}
    kinds["err"] = kinds["FP"] | kinds["FN"]
    assert len(found["filters"]) == 5 * (1 + stored.probs.shape[1])
    for f in found["filters"]:
        c, o = f["cls"], f["outcome"]
        if o == "all":
            want = n
        elif c < 0:  # "any" class: images with that outcome for some class
            want = int(kinds[o].any(axis=1).sum())
        else:
            want = int(kinds[o][:, c].sum())
        assert f["count"] == f"{want} of {n} images", f
        assert f["cards"] == min(want, PAGE_SIZE), f
    # a click opens every class of the image, with both pictures and the maps of its three most telling classes
    assert found["detail_rows"] == 1 + stored.probs.shape[1]
    pictures, maps = found["detail_images"][:2], found["detail_images"][2:]
    assert all(s.startswith("thumbs/") for s in pictures) and len(maps) == 3
    assert all(s.startswith("cams/") and "_gradcam_" in s for s in maps)
    assert all((page.parent / s).read_bytes()[:3] == b"\xff\xd8\xff" for s in maps)


@pytest.fixture(scope="module")
def cell_run(tmp_path_factory) -> Path:
    from fixtures.synth_data import one_torch_thread

    from locbench.config import load_config
    from locbench.data.synth import synthesize
    from locbench.engine.fit import train

    root = tmp_path_factory.mktemp("cellpages")
    data = synthesize(root / "data", images=16, size=64, cells_per_field=(2, 4), seed=3)
    overrides = {"data.path": str(data), "data.cache_dir": str(root / "cache"), "data.img_size": 32,
                 "data.workers": 0, "data.channels": "rgby", "data.val_frac": 0.5, "data.test_frac": 0,
                 "model.backbone": "test_resnet", "train.level": "cell", "train.epochs": 1, "train.batch_size": 8,
                 "train.device": "cpu", "log.progress": "lines"}  # fmt: skip
    with one_torch_thread():
        return train(load_config(None, overrides), root / "run")


def test_cell_browser_filters_cells_and_shows_each_fields_cells(cell_run: Path):
    page = write_browser(cell_run, part="val")
    found = open_in_chromium(page)
    assert found["errors"] == []
    assert found["images"] and all(i["ok"] for i in found["images"]), found["images"]
    stored = RunDir(cell_run).read_predictions("val")
    _, thr = RunDir(cell_run).read_thresholds()
    fields = np.array([str(i).rpartition("/")[0] for i in stored.ids])
    order = list(dict.fromkeys(fields))
    pred, truth = stored.probs >= thr[None, :], stored.targets.astype(bool)
    kinds = {"TP": pred & truth, "FP": pred & ~truth, "FN": ~pred & truth}
    kinds["err"] = kinds["FP"] | kinds["FN"]
    for f in found["filters"]:
        c, o = f["cls"], f["outcome"]
        hit = np.ones(len(fields), bool) if o == "all" else kinds[o].any(axis=1) if c < 0 else kinds[o][:, c]
        shown = sorted(set(fields[hit]))  # a field is shown when one of its cells has the outcome
        want = f"{len(shown)} of {len(order)} fields ({int(hit.sum())} of {len(fields)} cells)"
        assert f["count"] == want, f
        assert f["cards"] == min(len(shown), PAGE_SIZE), f
    # a click on the first field: one row per cell of it, the larger numbered pictures
    assert found["detail_rows"] == 1 + int((fields == order[0]).sum())
    assert len(found["detail_images"]) == 2 and all(s.endswith("_big.jpg") for s in found["detail_images"])
    # outlines in the colour of each cell's called class are in the pictures (white: no call)
    assert len(list((page.parent / "thumbs").glob("*.jpg"))) == 4 * len(order)
    with pytest.raises(LocbenchError, match="cell-level run"):
        write_browser(cell_run, part="val", cams="gradcam", out=page.parent.parent / "nocams")


def test_report_with_thumbnails_and_browser_link_loads_with_every_image(trained_run: Path):
    sweep = trained_run.parent
    report = build_report(sweep, n_resamples=100, extra_sections=[error_analysis(n=2, localize=0, device="cpu")])
    found = open_in_chromium(report)
    assert found["errors"] == []
    files = [i for i in found["images"] if not i["src"].startswith("data:")]
    assert files and all(i["ok"] for i in found["images"]), [i for i in found["images"] if not i["ok"]]
    link = re.search(r'href="(explain/[^"]+/browse/index\.html)"', report.read_text())
    assert link and (sweep / link.group(1)).is_file()
    assert np.all([i["src"].startswith(("data:image/png", "explain/run/thumbs/")) for i in found["images"]])


def test_browse_cli_writes_the_page_thumbnails_and_maps(trained_run: Path, tmp_path: Path, capsys):
    from locbench.cli import main

    out = tmp_path / "b"
    assert main(["browse", str(trained_run), "--out", str(out), "--cams", "gradcam", "--device", "cpu"]) == 0
    assert f"image browser: {out / 'index.html'}" in capsys.readouterr().out
    run = RunDir(trained_run)
    part = "test" if run.has_predictions("test") else "val"  # the default: the test part where there is one
    n = len(run.read_predictions(part).ids)
    assert len(list((out / "thumbs").glob("*.jpg"))) == 2 * n and len(list((out / "cams").glob("*.jpg"))) == 3 * n
    assert main(["browse", str(trained_run), "--out", str(out)]) == 2  # an existing output needs --force
    assert main(["browse", str(trained_run), "--cams", "nope", "--out", str(tmp_path / "c")]) == 2
    assert "unknown CAM method 'nope'" in capsys.readouterr().err and not (tmp_path / "c").exists()
