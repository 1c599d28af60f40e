"""Fake sweep folders for the report tests, written to the run-folder contract of docs/ARCHITECTURE.md.

The predictions are random but have a planted signal per grid point, so known effects show up in the statistics;
every summary number is computed from the predictions (scikit-learn), as the engine would.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import yaml
from sklearn.metrics import average_precision_score

from locbench.data.schemes import HPA2021

COST = {
    "resnet18": {"params": 11_200_000, "gmacs": 1.82, "train_img_per_s": 410.0, "epoch_s": 31.0, "peak_mem_mb": 2900},
    "efficientnet_b0": {
        "params": 4_030_000,
        "gmacs": 0.39,
        "train_img_per_s": 520.0,
        "epoch_s": 25.0,
        "peak_mem_mb": 3300,
    },
    "convnext_tiny": {
        "params": 27_800_000,
        "gmacs": 4.47,
        "train_img_per_s": 190.0,
        "epoch_s": 66.0,
        "peak_mem_mb": 5200,
    },
}

#: Signal added per axis level (a larger signal means better separated probabilities, hence higher AP).
DEFAULT_EFFECTS = {
    "model.backbone": {"resnet18": 0.0, "efficientnet_b0": 0.15, "convnext_tiny": 0.3},
    "loss.name": {"bce": 0.0, "focal": 0.5, "asl": 0.1},
    "augment.preset": {"standard": 0.0, "strong": 0.02},
}


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _f1(y: np.ndarray, pred: np.ndarray) -> float:
    """F1 of 0/1 arrays pooled over all entries (0 when there is nothing to find and nothing found)."""
    tp = float((pred & (y == 1)).sum())
    denom = 2 * tp + float((pred & (y == 0)).sum()) + float((~pred & (y == 1)).sum())
    return 2 * tp / denom if denom else 0.0


def _summary(probs: np.ndarray, targets: np.ndarray, thresholds: np.ndarray, classes: list[str], cost: dict) -> dict:
    present = targets.sum(axis=0) > 0
    per_class = {}
    for c, name in enumerate(classes):
        y, p = targets[:, c], probs[:, c]
        pred, pred_t = p >= 0.5, p >= thresholds[c]
        tp = int((pred & (y == 1)).sum())
        per_class[name] = {
            "ap": float(average_precision_score(y, p)) if present[c] else None,
            "f1": _f1(y, pred),
            "f1_tuned": _f1(y, pred_t),
            "precision": tp / max(int(pred.sum()), 1),
            "recall": tp / max(int(y.sum()), 1),
            "support": int(y.sum()),
            "threshold": float(thresholds[c]),
        }
    keep = [n for n, ok in zip(classes, present, strict=True) if ok]
    return {
        "val": {
            "macro_f1": float(np.mean([per_class[n]["f1"] for n in keep])),
            "micro_f1": _f1(targets, probs >= 0.5),
            "map": float(np.mean([per_class[n]["ap"] for n in keep])),
            "macro_f1_tuned": float(np.mean([per_class[n]["f1_tuned"] for n in keep])),
            "micro_f1_tuned": _f1(targets, probs >= thresholds[None, :]),
            # the thresholds are made up, not tuned on these images: their F1 stands in for a cross-fitted one
            "tuned_f1": "cross-fitted",
            "per_class": per_class,
            "absent_classes": [n for n, ok in zip(classes, present, strict=True) if not ok],
        },
        "cost": cost,
    }


def make_sweep(
    root: Path,
    *,
    backbones: tuple[str, ...] = ("resnet18", "efficientnet_b0"),
    losses: tuple[str, ...] = ("bce", "focal"),
    augs: tuple[str, ...] = ("standard", "strong"),
    seeds: tuple[int, ...] = (0, 1, 2),
    n_val: int = 120,
    n_classes: int = 8,
    epochs: int = 4,
    effects: dict | None = None,
    noise: float = 2.0,
    problems: bool = True,
    write_sweep_yaml: bool = True,
    name: str = "ablation",
    test: bool = False,
) -> Path:
    """Write a sweep folder with one run per (grid point, seed) and return it.

    With ``problems`` the sweep also holds: a failed run (out of memory) in the grid point ``(backbones[-1],
    losses[-1], augs[-1])`` seed ``seeds[-1]``, a diverged run, and a run still running (an extra seed of the
    first grid point, so the grid stays complete apart from the failure).

    With ``test`` every finished run also has a test part (``predictions/test.npz`` and a ``test`` block in
    ``summary.json``): other images of the same seed, scored at the same made-up thresholds.
    """
    effects = effects or DEFAULT_EFFECTS
    classes = list(HPA2021[:n_classes])
    root.mkdir(parents=True, exist_ok=True)
    axes = {"model.backbone": list(backbones), "loss.name": list(losses), "augment.preset": list(augs)}
    if write_sweep_yaml:
        (root / "sweep.yaml").write_text(
            yaml.safe_dump({"name": name, "seeds": list(seeds), "grid": axes}, sort_keys=False), encoding="utf-8"
        )
    pool_ids = [f"img{i:04d}" for i in range(n_val * 3)]
    fail = (backbones[-1], losses[-1], augs[-1], seeds[-1]) if problems else None
    diverge = (backbones[0], losses[-1], augs[0], seeds[0]) if problems and len(seeds) > 1 else None
    for ci, (bb, loss, aug) in enumerate(itertools.product(backbones, losses, augs)):
        point_id = f"c{ci:02d}"
        extra = [seeds[-1] + 1] if problems and ci == 0 else []
        for seed in list(seeds) + extra:
            run_id = f"{point_id}-s{seed}"
            run = root / run_id
            run.mkdir()
            point_axes = {"model.backbone": bb, "loss.name": loss, "augment.preset": aug}
            _write_json(
                run / "sweep_point.json",
                {"sweep": name, "point_id": point_id, "axes": point_axes, "seed": seed, "run_id": run_id},
            )
            (run / "config.yaml").write_text(
                yaml.safe_dump(
                    {
                        "seed": seed,
                        "model": {"backbone": bb},
                        "loss": {"name": loss},
                        "augment": {"preset": aug},
                        "train": {"epochs": epochs, "lr": 3e-4},
                        "data": {"root": "/data/hpa", "size": 256},
                    }
                ),
                encoding="utf-8",
            )
            _write_json(run / "env.json", {"python": "3.11", "torch": "2.14.1", "device": "cuda:0"})
            key = (bb, loss, aug, seed)
            if key == fail:
                _write_status(run, "failed", "CUDA out of memory at epoch 1 (batch 64, 256 px)")
                _write_metrics(run, 1, 0.2, seed)
                continue
            if key == diverge:
                _write_status(run, "diverged", "train/loss is NaN at epoch 3")
                _write_metrics(run, 2, 0.1, seed)
                continue
            if seed in extra:
                (run / "status").write_text("running\n")
                _write_metrics(run, 2, 0.3, seed)
                continue
            # Same seed => same split: the validation ids and targets depend on the seed only.
            srng = np.random.default_rng(1000 + seed)
            ids = np.asarray(sorted(srng.choice(pool_ids, size=n_val, replace=False)))
            prev = np.linspace(0.35, 0.04, n_classes)
            targets = (srng.random((n_val, n_classes)) < prev).astype(np.uint8)
            targets[:, -1] = 0 if n_classes > 2 else targets[:, -1]  # an absent class, as in small val sets
            signal = 1.0 + sum(effects[k].get(v, 0.0) for k, v in point_axes.items() if k in effects)
            rng = np.random.default_rng([ci, seed])
            logits = signal * (2.0 * targets - 1.0) - 1.5 + noise * rng.standard_normal(targets.shape)
            probs = (1 / (1 + np.exp(-logits))).astype(np.float32)
            thresholds = np.clip(0.5 - 0.05 * np.arange(n_classes), 0.1, 0.9)
            (run / "predictions").mkdir()
            np.savez(run / "predictions" / "val.npz", ids=ids, probs=probs, targets=targets)
            _write_json(run / "thresholds.json", {"classes": classes, "thresholds": thresholds.tolist()})
            summary = _summary(probs, targets, thresholds, classes, dict(COST.get(bb, COST["resnet18"])))
            summary.update({"best_epoch": epochs - 1, "epochs_run": epochs, "format_version": 1})
            if test:
                test_ids = np.asarray([f"test{i:04d}" for i in range(n_val)])
                test_targets = (srng.random((n_val, n_classes)) < prev).astype(np.uint8)
                noisy = signal * (2.0 * test_targets - 1.0) - 1.5 + noise * rng.standard_normal(targets.shape)
                test_probs = (1 / (1 + np.exp(-noisy))).astype(np.float32)
                np.savez(run / "predictions" / "test.npz", ids=test_ids, probs=test_probs, targets=test_targets)
                block = _summary(test_probs, test_targets, thresholds, classes, {})["val"]
                summary["test"] = {**block, "tuned_f1": "val thresholds"}
            _write_json(run / "summary.json", summary)
            _write_metrics(run, epochs, summary["val"]["map"], seed)
            (run / "status").write_text("done\n")
    return root


def _write_status(run: Path, status: str, reason: str) -> None:
    (run / "status").write_text(status + "\n")
    _write_json(run / "status.json", {"status": status, "reason": reason})


def _write_metrics(run: Path, epochs: int, final_map: float, seed: int) -> None:
    lines = []
    for e in range(epochs):
        frac = (e + 1) / max(epochs, 1)
        lines.append(
            json.dumps(
                {
                    "epoch": e,
                    "train/loss": 0.7 * (1.2 - frac) + 0.01 * seed,
                    "val/loss": 0.6 * (1.25 - frac),
                    "val/macro_f1": final_map * frac * 0.9,
                    "val/map": final_map * (0.6 + 0.4 * frac),
                    "time/epoch_s": 30.0,
                    "train/img_per_s": 400.0,
                    "lr": 3e-4 * (1 - frac),
                }
            )
        )
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
