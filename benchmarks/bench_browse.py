"""The image browser over thousands of images: how long `locbench browse` takes to write the page and its thumbnails
(first time, and again with the thumbnails reused), how large the page is, and how fast it opens and filters in
headless Chromium.

The run: a tiny model (timm ``test_resnet``, 64 px, 1 epoch) trained on a few synthetic fields, whose predictions
of every field of a larger dataset (the same fields hard-linked under new ids, see ``_common.linked_dataset``) are
stored as its validation part: real predictions of a real model, so the outcomes and sorting work on real
numbers. In the browser: the time from navigation to the first page of thumbnails drawn, and the time of a filter
change (class, outcome, sort by confidence) over every image.

    python benchmarks/bench_browse.py                 # 2,500 fields, writes benchmarks/out/browse.json
    python benchmarks/bench_browse.py --fields 3000
    python benchmarks/bench_browse.py --quick         # 120 fields, for a test
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT_DIR, host, linked_dataset, table, write_json  # noqa: E402

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)

# Times the page's own work: from navigation start to the grid drawn, then one filter change after another.
PROBE = """<script>window.addEventListener("load", () => {
  const t = {load_ms: performance.now(), first_cards: document.querySelectorAll(".card").length};
  const set = (id, v) => { const el = document.getElementById(id); el.value = v;
    const t0 = performance.now(); el.dispatchEvent(new Event("change")); return performance.now() - t0; };
  t.filter_class_ms = set("cls", "0");
  t.filter_outcome_ms = set("outcome", "err");
  t.sort_ms = set("sort", "desc");
  t.count = document.getElementById("count").textContent;
  t.back_ms = set("cls", "-1") + set("outcome", "all");
  t.next_page_ms = (() => { const t0 = performance.now(); document.getElementById("next").click();
    return performance.now() - t0; })();
  t.dom_cards = document.querySelectorAll(".card").length;
  t.dom_images = document.images.length;
  const pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(t);
  document.body.appendChild(pre);
});</script>"""


def make_run(work: Path, fields: int) -> Path:
    """A tiny trained run whose validation predictions are of ``fields`` fields."""
    from locbench.config import load_config
    from locbench.data.formats import table_from_config
    from locbench.engine.fit import train
    from locbench.infer import load_run
    from locbench.infer.images import field_probs
    from locbench.store.rundir import RunDir

    data = linked_dataset(work, unique=min(48, fields), total=fields, size=64)
    small = work / "unique"
    sets = {"data.path": str(small), "data.cache_dir": str(work / "cache"), "data.img_size": 64, "data.workers": 0,
            "data.channels": "rgby", "data.test_frac": 0, "model.backbone": "test_resnet", "train.epochs": 1,
            "train.batch_size": 16, "train.device": "cpu", "log.progress": "lines"}  # fmt: skip
    trained = train(load_config(None, sets), work / "trained")
    run_dir = work / "run"
    shutil.copytree(trained, run_dir, dirs_exist_ok=True)
    folder = RunDir(run_dir)
    config = yaml.safe_load(folder.config.read_text())
    config["data"]["path"] = str(data)
    folder.write_config(yaml.safe_dump(config, sort_keys=False))
    run = load_run(run_dir)
    big = table_from_config(run.config.data)
    probs = field_probs(run, big, device="cpu", workers=0)
    folder.write_predictions("val", np.array(big.ids), probs, np.asarray(big.targets, np.uint8))
    return run_dir


def open_page(page: Path) -> dict:
    html = page.read_text(encoding="utf-8")
    probed = page.with_name("probe.html")
    probed.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom",
           probed.as_uri()]  # fmt: skip
    start = time.perf_counter()
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False).stdout
    wall = time.perf_counter() - start
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    if not found:
        raise SystemExit(f"the probe did not run in {probed}")
    out = json.loads(found.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    out["chromium_wall_s"] = wall
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", type=int, default=2500, help="images in the browser (default 2500)")
    ap.add_argument("--quick", action="store_true", help="120 fields (a test of the script)")
    ap.add_argument("--work", type=Path, help="working folder (default: a temporary one, removed)")
    ap.add_argument("--out", type=Path, default=OUT_DIR / "browse.json")
    args = ap.parse_args(argv)
    from locbench.explain.browser import write_browser

    n = 120 if args.quick else args.fields
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-browse-"))
    try:
        start = time.perf_counter()
        run_dir = make_run(work, n)
        setup = time.perf_counter() - start
        times = []
        for _ in range(2):  # the first writes every thumbnail, the second reuses them
            start = time.perf_counter()
            page = write_browser(run_dir, part="val")
            times.append(time.perf_counter() - start)
        thumbs = page.parent / "thumbs"
        result = {
            "fields": n,
            "setup_s": setup,
            "write_first_s": times[0],
            "write_again_s": times[1],
            "ms_per_field_first": 1000 * times[0] / n,
            "page_bytes": page.stat().st_size,
            "thumb_bytes": sum(f.stat().st_size for f in thumbs.glob("*.jpg")),
            "thumb_files": len(list(thumbs.glob("*.jpg"))),
            "browser": open_page(page) if CHROMIUM else None,
            "host": host(),
        }
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    write_json(args.out, result)
    b = result["browser"] or {}
    rows = [
        ["write page + thumbnails (first)", f"{result['write_first_s']:.1f} s",
         f"{result['ms_per_field_first']:.1f} ms/field"],
        ["write page again (thumbnails reused)", f"{result['write_again_s']:.1f} s", ""],
        ["index.html", f"{result['page_bytes'] / 1e6:.2f} MB", f"{result['thumb_files']} thumbnails, "
         f"{result['thumb_bytes'] / 1e6:.1f} MB"],
        ["open: first page drawn (load event)", f"{b.get('load_ms', float('nan')):.0f} ms",
         f"{b.get('first_cards')} cards, {b.get('dom_images')} <img> in the DOM"],
        ["filter by class", f"{b.get('filter_class_ms', float('nan')):.1f} ms", ""],
        ["filter by outcome (any error)", f"{b.get('filter_outcome_ms', float('nan')):.1f} ms", b.get("count", "")],
        ["sort by confidence", f"{b.get('sort_ms', float('nan')):.1f} ms", ""],
        ["next page", f"{b.get('next_page_ms', float('nan')):.1f} ms", ""],
    ]  # fmt: skip
    print(f"{n} fields; load average {result['host']['loadavg']}")
    print(table(["step", "time", "detail"], rows, markdown=True))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
