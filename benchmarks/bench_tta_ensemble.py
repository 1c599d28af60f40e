"""Test-time augmentation and 3-run ensembles against single runs, on one synthetic dataset and one split.

On `locbench synth` data: ``--groups`` groups of ``--members`` runs (same data, split, backbone and epochs; only
``train.seed`` differs, so every run is one seed). Each run's test part is scored without test-time augmentation and
with each mode of ``--tta`` (thresholds re-tuned on validation with that mode, as ``locbench evaluate --tta`` does);
each group's runs are averaged with ``locbench ensemble``. Differences are paired: TTA against the same run without
it (one pair per run), the ensemble against the mean of its own members and against its first member (one pair per
group); intervals are Student t over the pairs (locbench.report.stats). The forward cost of each TTA mode is timed on
the test images. Prints a table and writes JSON to benchmarks/out/.

    .venv/bin/python benchmarks/bench_tta_ensemble.py [--images 300] [--size 64] [--backbone test_resnet] [--epochs 8]
        [--groups 3] [--members 3] [--tta flips d8] [--work /tmp/bench-tta-ensemble] [--quick]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts run from anywhere import their helpers

from _common import OUT_DIR, host, table, write_json  # noqa: E402

METRICS = ("map", "macro_f1_tuned")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/bench-tta-ensemble"), help="data, caches and run folders")
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--size", type=int, default=64, help="synthetic field side = model input side")
    p.add_argument("--channels", default="rgby")
    p.add_argument("--backbone", default="test_resnet", help="a timm model (default: timm's tiny test_resnet)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--groups", type=int, default=3, help="ensembles (pairs of the ensemble comparison)")
    p.add_argument("--members", type=int, default=3, help="runs per ensemble")
    p.add_argument("--tta", nargs="+", default=["flips", "d8"], help="test-time augmentation modes to compare")
    p.add_argument("--quick", action="store_true", help="a tiny check that the script runs (numbers mean nothing)")
    p.add_argument("--out", type=Path, default=OUT_DIR / "bench_tta_ensemble.json")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.size, args.backbone, args.epochs = 40, 64, "test_resnet", 1
        args.groups, args.members, args.tta = 2, 2, ["flips"]
        if args.work == p.get_default("work"):
            args.work = args.out.parent / "bench-tta-ensemble-quick"
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch

    from locbench.config import load_config
    from locbench.data.formats import table_from_config
    from locbench.data.splits import load_split
    from locbench.data.synth import synthesize
    from locbench.engine.fit import train
    from locbench.infer import evaluate, field_probs, load_run
    from locbench.infer.ensemble import build_ensemble
    from locbench.store.rundir import RunDir

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    work = args.work
    data = work / f"synth-{args.images}-{args.size}-{args.channels}"
    if not (data / "train.csv").is_file():
        synthesize(data, images=args.images, size=args.size, edition="2021", seed=0)
    common = {
        "data.path": str(data),
        "data.cache_dir": str(work / "cache"),
        "data.channels": args.channels,
        "data.img_size": args.size,
        "data.workers": 0,
        "model.backbone": args.backbone,
        "train.epochs": args.epochs,
        "train.batch_size": args.batch_size,
        "train.device": "cpu",
        "optim.lr": args.lr,
        "log.progress": "lines",
    }
    tag = f"{args.backbone}-e{args.epochs}-{args.size}"
    groups: list[list[Path]] = []
    t0 = time.perf_counter()
    for g in range(args.groups):
        runs = []
        for m in range(args.members):
            seed = g * args.members + m
            out = work / "runs" / f"{tag}-s{seed}"
            if RunDir(out).status() != "done":
                cfg = load_config(overrides={**common, "train.seed": seed})
                train(cfg, out, resume=RunDir(out).config.is_file())
            runs.append(out)
        groups.append(runs)
    train_s = time.perf_counter() - t0

    modes = ["none", *args.tta]
    scores: dict[str, dict[str, dict[str, float]]] = {}  # run -> mode -> metric
    for run in (r for runs in groups for r in runs):
        scores[run.name] = {}
        for mode in modes:
            res = evaluate(
                run, split="test", device="cpu", workers=0, tta=mode, out=work / "eval" / f"{run.name}-{mode}.json"
            )
            scores[run.name][mode] = {k: res[k] for k in METRICS}  # fmt: skip

    # forward cost of each mode on the test images of the first run (one warm-up pass first)
    first = load_run(groups[0][0])
    tbl = table_from_config(first.config.data)
    rows = load_split(first.folder.split).indices(tbl, "test")
    cost = {}
    field_probs(first, tbl, rows, device="cpu", workers=0)
    for mode in modes:
        run_m = first if mode == "none" else _with_mode(first, mode)
        t1 = time.perf_counter()
        field_probs(run_m, tbl, rows, device="cpu", workers=0)
        cost[mode] = time.perf_counter() - t1

    ens_scores = []
    for g, runs in enumerate(groups):
        ens = build_ensemble(runs, work / "ensembles" / f"{tag}-g{g}", force=True)
        summary = RunDir(ens).read_summary()
        members = [RunDir(r).read_summary()["test"] for r in runs]
        ens_scores.append(
            {
                "ensemble": {k: summary["test"][k] for k in METRICS},
                "member_mean": {k: float(np.mean([s[k] for s in members])) for k in METRICS},
                "first_member": {k: members[0][k] for k in METRICS},
            }
        )

    result = {
        "host": host(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": {"path": str(data), "fields": args.images, "test_fields": len(rows)},
        "train_s": train_s,
        "tta": _tta_table(scores, modes),
        "tta_forward_s": cost,
        "ensemble": _ensemble_table(ens_scores),
        "runs": scores,
        "ensembles": ens_scores,
    }
    _print(result, args)
    write_json(args.out, result)
    return result


def _with_mode(run, mode: str):
    import dataclasses

    return dataclasses.replace(run, config=run.config.replace({"infer.tta": mode}))


def _paired(base: list[float], other: list[float]) -> dict:
    from locbench.report import stats

    n, diff, lo, hi, p = stats.paired_t(dict(enumerate(base)), dict(enumerate(other)))
    return {"n": n, "diff": diff, "lo": lo, "hi": hi, "p": p}


def _interval(values: list[float]) -> dict:
    from locbench.report import stats

    e = stats.t_interval(values)
    return {"mean": e.mean, "lo": e.lo, "hi": e.hi, "n": e.n}


def _tta_table(scores: dict, modes: list[str]) -> dict:
    out = {}
    for metric in METRICS:
        base = [s["none"][metric] for s in scores.values()]
        out[metric] = {"none": _interval(base)}
        for mode in modes[1:]:
            values = [s[mode][metric] for s in scores.values()]
            out[metric][mode] = {**_interval(values), "vs_none": _paired(base, values)}
    return out


def _ensemble_table(ens_scores: list[dict]) -> dict:
    out = {}
    for metric in METRICS:
        ens = [e["ensemble"][metric] for e in ens_scores]
        mean = [e["member_mean"][metric] for e in ens_scores]
        first = [e["first_member"][metric] for e in ens_scores]
        out[metric] = {
            "ensemble": _interval(ens),
            "member_mean": _interval(mean),
            "first_member": _interval(first),
            "vs_member_mean": _paired(mean, ens),
            "vs_first_member": _paired(first, ens),
        }
    return out


def _ci(e: dict) -> str:
    if e["mean"] != e["mean"]:
        return "-"
    if e["lo"] != e["lo"]:
        return f"{e['mean']:.3f}"
    return f"{e['mean']:.3f} [{e['lo']:.3f}, {e['hi']:.3f}]"


def _diff(d: dict) -> str:
    if d["diff"] != d["diff"]:
        return "-"
    ci = "" if d["lo"] != d["lo"] else f" [{d['lo']:+.3f}, {d['hi']:+.3f}]"
    p = "" if d["p"] != d["p"] else f", p={d['p']:.3f}"
    return f"{d['diff']:+.3f}{ci}{p} (n={d['n']})"


def _print(result: dict, args: argparse.Namespace) -> None:
    n_runs = args.groups * args.members
    print(
        f"synthetic data: {args.images} fields of {args.size} px ({args.channels}), {result['data']['test_fields']} "
        f"test fields; {n_runs} runs of {args.backbone}, {args.epochs} epochs, one split; "
        f"training {result['train_s']:.0f} s"
    )
    print(f"load average: {result['host']['loadavg']}\n")
    rows = []
    for mode, est in result["tta"]["map"].items():
        f1 = result["tta"]["macro_f1_tuned"][mode]
        secs = result["tta_forward_s"][mode]
        ratio = secs / result["tta_forward_s"]["none"]
        rows.append(
            [mode, _ci(est), _diff(est["vs_none"]) if "vs_none" in est else "", _ci(f1),
             _diff(f1["vs_none"]) if "vs_none" in f1 else "", f"{secs:.2f} s (x{ratio:.1f})"]
        )  # fmt: skip
    print(f"Test-time augmentation ({n_runs} runs; difference paired per run):")
    print(table(["TTA", "test mAP", "vs none", "test macro F1 (tuned)", "vs none", "forward on test"], rows))
    e = result["ensemble"]
    rows = [
        ["ensemble", _ci(e["map"]["ensemble"]), "", _ci(e["macro_f1_tuned"]["ensemble"]), ""],
        ["mean of its members", _ci(e["map"]["member_mean"]), _diff(e["map"]["vs_member_mean"]),
         _ci(e["macro_f1_tuned"]["member_mean"]), _diff(e["macro_f1_tuned"]["vs_member_mean"])],
        ["its first member", _ci(e["map"]["first_member"]), _diff(e["map"]["vs_first_member"]),
         _ci(e["macro_f1_tuned"]["first_member"]), _diff(e["macro_f1_tuned"]["vs_first_member"])],
    ]  # fmt: skip
    print(f"\nEnsembles of {args.members} runs ({args.groups} ensembles; 'ensemble - row' paired per ensemble):")
    print(table(["", "test mAP", "ensemble - row", "test macro F1 (tuned)", "ensemble - row"], rows))


if __name__ == "__main__":
    main()
