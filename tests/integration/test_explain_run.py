"""`locbench explain` and the report's error-analysis section end to end on tiny trained runs (a CNN on RGB and
a ViT on four stains), the files they write, and the refusals."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from locbench.cli import main
from locbench.errors import LocbenchError
from locbench.explain.run import explain_run, select_images

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _train(out: Path, data: Path, cache: Path, backbone: str, channels: str) -> Path:
    import torch

    from locbench.config import load_config
    from locbench.engine.fit import train

    cfg = load_config(
        None,
        {
            "data.path": str(data),
            "data.cache_dir": str(cache),
            "data.img_size": 64,
            "data.workers": 0,
            "data.channels": channels,
            "model.backbone": backbone,
            "train.epochs": 1,
            "train.batch_size": 8,
            "train.device": "cpu",
            "log.progress": "lines",
        },
    )
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the CPU is shared: one spinning thread per test process is faster than two
    try:
        return train(cfg, out)
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def explain_data(tmp_path_factory) -> Path:
    from locbench.data.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("explain") / "data", images=40, size=64, seed=0)


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory, explain_data) -> Path:
    root = tmp_path_factory.mktemp("explain-runs")
    return _train(root / "resnet", explain_data, root / "cache", "test_resnet", "rgb")


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory, explain_data) -> Path:
    root = tmp_path_factory.mktemp("explain-runs-vit")
    return _train(root / "vit", explain_data, root / "cache", "test_vit", "rgby")


def _is_png(path: str | Path) -> bool:
    return Path(path).read_bytes()[:8] == PNG_MAGIC


def test_explain_run_writes_tables_grids_and_localization(resnet_run, tmp_path):
    out = tmp_path / "ex"
    res = explain_run(resnet_run, out=out, n=4, localize=8, device="cpu")
    with np.load(resnet_run / "predictions" / "val.npz") as z:
        val_ids, targets = [str(i) for i in z["ids"]], z["targets"]

    errors = json.loads((out / "errors.json").read_text())
    assert errors["n_images"] == len(val_ids)
    for e, support in zip(errors["per_class"], targets.sum(axis=0), strict=True):
        assert e["tp"] + e["fp"] + e["fn"] + e["tn"] == len(val_ids)
        assert e["support"] == support
    assert "Errors by class" in (out / "errors.md").read_text()
    assert "<table" in (out / "errors.html").read_text()
    assert _is_png(out / "perf_vs_frequency.png")

    grids = res["cam_grids"]
    assert grids and res["cam_error"] is None
    shown = {i for g in grids for i in g["ids"]}
    assert 0 < len(shown) <= 4 and shown <= set(val_ids)
    for g in grids:
        assert Path(g["path"]).parent == out / "cams" / "gradcam" and _is_png(g["path"])
        assert g["class"] in errors["classes"]

    # synthetic data: the localization check ran on the explained images and more, up to `localize`
    loc = json.loads((out / "localization.json").read_text())
    assert 0 < loc["n_images"] <= 8 and loc["overall"]["n"] > 0 and loc["method"] == "gradcam"
    assert 0.0 <= loc["overall"]["mean_share"] <= 1.0 and 0.0 < loc["overall"]["mean_chance"] < 1.0
    assert "| overall |" in (out / "localization.md").read_text()
    assert _is_png(out / "localization.png")
    assert json.loads((out / "explain.json").read_text())["cam_grids"] == grids


def test_explain_vit_four_stains_given_ids_classes_and_two_methods(vit_run, tmp_path):
    with np.load(vit_run / "predictions" / "val.npz") as z:
        ids = [str(i) for i in z["ids"][:2]]
    res = explain_run(
        vit_run,
        out=tmp_path,
        ids=ids,
        classes=["Nucleoplasm", "1"],  # a name and an index
        methods=["gradcam", "gradcam++"],
        localize=0,
        device="cpu",
    )
    assert [(g["method"], g["class"], g["ids"]) for g in res["cam_grids"]] == [
        ("gradcam", "selected", ids),
        ("gradcam++", "selected", ids),
    ]
    assert (tmp_path / "cams" / "gradcampp" / "selected.png").exists()
    # two images, each the composite plus one map per asked class: a 2 x 3 grid, wider than tall
    w, h = Image.open(res["cam_grids"][0]["path"]).size
    assert w > h
    assert res["localization"] is None and not (tmp_path / "localization.json").exists()


def test_select_images_picks_confident_hits_worst_misses_within_the_budget():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.7], [0.1, 0.9], [0.3, 0.4], [0.7, 0.05]])
    targets = np.array([[1, 0], [1, 0], [0, 1], [1, 1], [1, 0], [0, 1]])
    thr = np.array([0.5, 0.5])
    # class 0: TP rows 0, 1 (0.9 first), FP rows 2, 5 (0.7 first), FN rows 4, 3 (0.1 first: the worst miss)
    # class 1: TP rows 2, 3, FP none, FN row 5
    got = select_images(probs, targets, thr, classes=[0], n=10, per_kind=2)
    assert got == {0: [(0, "TP"), (1, "TP"), (5, "FP"), (2, "FP"), (3, "FN"), (4, "FN")]}
    # default classes: most errors first; the budget of distinct images goes round-robin (FN, FP, TP of each
    # class, then the second of each); an image already chosen costs nothing when another class shows it too
    got = select_images(probs, targets, thr, n=3, per_kind=2)
    assert got == {0: [(0, "TP"), (5, "FP"), (3, "FN")], 1: [(3, "TP"), (5, "FN")]}
    got = select_images(probs, targets, thr, n=2, per_kind=2)
    assert got == {0: [(5, "FP"), (3, "FN")], 1: [(3, "TP"), (5, "FN")]}
    got = select_images(probs, targets, thr, n=2, max_classes=1)
    assert got == {0: [(5, "FP"), (3, "FN")]}


def test_all_zero_maps_are_drawn_and_left_out_of_localization(resnet_run, tmp_path, monkeypatch):
    import locbench.explain.cam as cam

    def zeros(model, images, class_indices, **kw):  # a model with no positive evidence anywhere
        return np.zeros((images.shape[0], len(class_indices[0]), *images.shape[-2:]), dtype=np.float32)

    monkeypatch.setattr(cam, "compute_cams", zeros)
    res = explain_run(resnet_run, out=tmp_path, n=2, localize=4, device="cpu")
    assert res["cam_grids"] and all(_is_png(g["path"]) for g in res["cam_grids"])
    loc = res["localization"]
    assert loc["overall"]["n"] == 0 and loc["skipped"] > 0 and loc["per_class"] == {}
    assert _is_png(tmp_path / "localization.png")


def test_explain_cli(resnet_run, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["explain", str(resnet_run), "--out", str(out), "--n", "3", "--classes", "Nucleoplasm", "Cytosol"]
    assert main([*args, "--localize", "4", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "errors.json" in printed and f"explain output in {out}" in printed
    grids = sorted(p.name for p in (out / "cams" / "gradcam").iterdir())
    assert set(grids) <= {"Nucleoplasm.png", "Cytosol.png"} and grids
    assert "CAM mass inside the carrying cells" in printed


def test_explain_refusals_exit_2(resnet_run, tmp_path, capsys):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    assert main(["explain", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "predictions/val.npz not found" in err and "no stored validation predictions" in err
    assert "Traceback" not in err
    assert main(["explain", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["explain", str(resnet_run), "--classes", "Nucleoplasm", "Kitchen sink", "--out", str(tmp_path)]) == 2
    assert "Kitchen sink" in capsys.readouterr().err
    assert main(["explain", str(resnet_run), "--ids", "no-such-image", "--out", str(tmp_path)]) == 2
    assert "no-such-image" in capsys.readouterr().err
    assert main(["explain", str(resnet_run), "--method", "magic", "--out", str(tmp_path)]) == 2
    assert "unknown CAM method" in capsys.readouterr().err


def test_moved_data_keeps_the_tables_and_says_where_to_point(resnet_run, tmp_path, capsys):
    gone = tmp_path / "moved-away"
    res = explain_run(resnet_run, out=tmp_path / "a", data=str(gone), device="cpu", strict=False)
    assert str(gone) in res["cam_error"] and "--data" in res["cam_error"]
    assert (tmp_path / "a" / "errors.json").exists() and not res["cam_grids"]
    with pytest.raises(LocbenchError, match="pass --data"):
        explain_run(resnet_run, out=tmp_path / "b", data=str(gone), device="cpu")
    assert main(["explain", str(resnet_run), "--data", str(gone), "--out", str(tmp_path / "c"), "--device", "cpu"]) == 2
    assert "pass --data" in capsys.readouterr().err
    assert (tmp_path / "c" / "errors.md").exists()  # the tables come from stored predictions: written first


def test_cell_level_predictions_get_tables_and_no_cams(tmp_path):
    run = tmp_path / "cellrun"
    (run / "predictions").mkdir(parents=True)
    ids = np.array(["F1/1", "F1/2", "F2/1", "F2/2"])
    probs = np.array([[0.9, 0.2], [0.4, 0.6], [0.2, 0.7], [0.8, 0.1]], dtype=np.float32)
    targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.uint8)
    np.savez(run / "predictions" / "val.npz", ids=ids, probs=probs, targets=targets)
    (run / "thresholds.json").write_text(json.dumps({"classes": ["A", "B"], "thresholds": [0.5, 0.5]}))
    (run / "config.yaml").write_text("train:\n  level: cell\n")  # the level is read from the config, not the ids
    res = explain_run(run, device="cpu")
    assert not res["cam_grids"] and "cell-level run" in res["notes"][0]
    errors = json.loads((run / "explain" / "errors.json").read_text())
    assert [(e["tp"], e["fp"], e["fn"]) for e in errors["per_class"]] == [(1, 1, 1), (2, 0, 0)]


def test_report_gains_the_error_analysis_section(vit_run, tmp_path):
    from locbench.report import build_report
    from locbench.report.explain_section import error_analysis

    sweep = tmp_path / "sweep"
    shutil.copytree(vit_run, sweep / "vit")
    out = build_report(sweep, n_resamples=100, extra_sections=[error_analysis(n=3, localize=4, device="cpu")])
    html = out.read_text()
    assert "Error analysis: vit" in html and "Class activation maps" in html
    assert "CAM localization (synthetic data)" in html
    section = html[html.index("Error analysis: vit") :]
    assert section.count('src="data:image/png;base64,') >= 3  # frequency plot, a CAM grid, localization
    assert (sweep / "explain" / "vit" / "errors.json").exists()
    assert "### Errors by class" in (sweep / "report.md").read_text()
    hardest = section[section.index("Hardest images") :]
    assert 'style="white-space: normal' in hardest  # the lists of ids wrap inside the page


def test_report_cli_explain_flags_and_a_run_whose_data_moved(vit_run, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    shutil.copytree(vit_run, sweep / "vit")
    cfg = yaml.safe_load((sweep / "vit" / "config.yaml").read_text())
    cfg["data"]["path"] = str(tmp_path / "moved")
    (sweep / "vit" / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["-q", "report", str(sweep), "--resamples", "100", "--explain", "vit"]) == 0
    html = (sweep / "report.html").read_text()
    assert "Error analysis: vit" in html and "Class activation maps could not be drawn" in html
    assert str(tmp_path / "moved") in html and "Errors by class" in html  # the tables still come
    assert main(["-q", "report", str(sweep), "--resamples", "100", "--no-explain"]) == 0
    assert "Error analysis" not in (sweep / "report.html").read_text()
    assert main(["report", str(sweep), "--explain", "nope"]) == 2
    assert "--explain nope" in capsys.readouterr().err
    assert main(["report", str(sweep), "--explain", "vit", "--no-explain"]) == 2


def test_demo_report_shows_the_error_analysis(tmp_path, one_thread_torch):
    from locbench.sweep.demo import run_demo

    sweep_file = tmp_path / "tiny.yaml"
    spec = {
        "name": "tiny-demo",
        "config": {
            "model": {"backbone": "test_resnet", "hidden": 32},
            "data": {"channels": "rgby", "img_size": 32, "workers": 0},
            "train": {"epochs": 1, "batch_size": 8, "device": "cpu"},
            "log": {"progress": "lines"},
        },
        "grid": {"loss.name": ["bce"]},
        "seeds": [0],
    }
    sweep_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    report = run_demo(tmp_path / "demo", images=40, size=64, sweep_file=sweep_file)
    html = report.read_text()
    section = html[html.index("<h2>Error analysis: ") :]
    assert "Class activation maps" in section and 'src="data:image/png;base64,' in section
    assert "CAM localization (synthetic data)" in section  # the demo's data are synthetic: masks and cells.csv
    assert any((tmp_path / "demo" / "sweep" / "explain").iterdir())


@pytest.fixture
def one_thread_torch():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_report_shows_hardest_images_and_confused_pairs_as_thumbnails(vit_run, tmp_path):
    from urllib.parse import unquote

    from locbench.report import build_report
    from locbench.report.explain_section import error_analysis

    sweep = tmp_path / "sweep"
    shutil.copytree(vit_run, sweep / "vit")
    html = build_report(
        sweep, n_resamples=50, extra_sections=[error_analysis(n=2, localize=0, device="cpu")]
    ).read_text()
    section = html[html.index("<h2>Error analysis: vit") :]
    files = [s for s in re.findall(r'<img[^>]*src="([^"]+)"', section) if not s.startswith("data:")]
    assert files and all(s.startswith("explain/vit/thumbs/") for s in files)
    for src in files:  # every thumbnail resolves from the report's folder, as a browser on file:// resolves it
        assert (sweep / unquote(src)).read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG
    greens = [s for s in files if s.endswith("_green.jpg")]
    assert len(greens) * 2 == len(files)
    with Image.open(sweep / unquote(greens[0])) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    assert rgb[..., [0, 2]].mean() < 0.1 * rgb[..., 1].mean()  # the green stain alone (JPEG noise aside)
    errors = json.loads((sweep / "explain" / "vit" / "errors.json").read_text())
    hardest = section[section.index("<h3>Hardest images</h3>") :]
    for name, h in errors["hardest"].items():
        if h["false_negatives"] or h["false_positives"]:
            assert f'<div class="strip-head">{name}</div>' in hardest
    if errors["confused_pairs"]:
        first = errors["confused_pairs"][0]
        assert first["examples"] and "predicted, " in section[section.index("Most confused class pairs") :]
    assert "<details><summary>The same as tables of image ids</summary>" in section
    # report.md shows the same thumbnails (composite, linking the green stain), before its tables of ids
    md = (sweep / "report.md").read_text()
    md = md[md.index("## Error analysis: vit") :]
    linked = re.findall(r"\]\((explain/vit/thumbs/[^)\s]+\.jpg)", md)
    assert linked and set(linked) <= set(files) and all((sweep / unquote(s)).is_file() for s in linked)
    assert md.index("| class | missed | false alarms |") < md.index("### Hardest images: image ids")
    # the run holds out a test part: the section, its tables, thumbnails and browser are of it, and say so
    from locbench.store.rundir import RunDir

    test_ids = {str(i) for i in RunDir(sweep / "vit").read_predictions("test").ids}
    assert json.loads((sweep / "explain" / "vit" / "explain.json").read_text())["part"] == "test"
    assert "stored predictions of its test part" in section and "Browse all test images" in section
    named = {r["id"] for h in errors["hardest"].values() for k in ("false_negatives", "false_positives") for r in h[k]}
    assert named and named <= test_ids
    assert "Images of vit (test)" in (sweep / "explain" / "vit" / "browse" / "index.html").read_text()
