"""`locbench evaluate RUN_DIR`: metrics of a run's best model, as JSON and a table."""

from __future__ import annotations

import argparse

from locbench.commands._common import add_data_args, out_path
from locbench.commands._level import add_cell_args, add_protocol_arg, add_tta_arg, run_at_level


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="score a finished run on its validation/test part or another dataset")
    p.add_argument("run_dir")
    p.add_argument(
        "--split",
        default=None,
        help="val, test or all (default: the run's test part, val for a run without one)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="loader processes that decode the next images while the model runs (default: the run's data.workers)",
    )
    p.add_argument("--out", type=out_path, help="metrics JSON (default RUN_DIR/eval/<split>.json)")
    p.add_argument("--level", choices=["image", "cell"], help="cell: the HPA 2021 per-cell metric (default: the run's)")
    p.add_argument("--truth-masks", default=None, help="--level cell: true masks (default DATA/masks + cells.csv)")
    add_tta_arg(p)
    add_cell_args(p)
    add_protocol_arg(p)
    # --data: another dataset of the same classes (default: the run's own); the other options: how it is laid out
    add_data_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from locbench.infer import evaluate

    return run_at_level(
        args,
        evaluate,
        show_image=_show_image,
        show_cell=show_cell,
        tta=args.tta,
        split=args.split,
        truth_masks=args.truth_masks,
        protocol=args.protocol,
    )


def _show_image(result: dict) -> None:
    from locbench.metrics import format_metrics_table, with_tuned

    tuned = result["_metrics_tuned"]
    shown = with_tuned(result["_metrics_at_half"], tuned) if tuned else result["_metrics_at_half"]
    print(format_metrics_table({**shown, "tuned_f1": result["tuned_f1"]}))
    _show_note(f"{result['split']} mAP", result["map"], result.get("sample_note"))
    print(f"\n{result['n_images']} images, {_part_words(result['split'])}; metrics written to {result['path']}")
    print(f"tuned F1: {_tuned_words(result['tuned_f1'])}")


def _part_words(split: str) -> str:
    return {
        "test": "the run's test part (held out from training, checkpoint choice and threshold tuning)",
        "val": "the run's validation part (it picked the checkpoint: numbers lean optimistic)",
    }.get(split, split)


def _tuned_words(how: str) -> str:
    return {
        "val thresholds": "at the thresholds tuned on the run's validation part",
        "cross-fitted": "cross-fitted (each fold of validation scored with thresholds tuned on the other folds)",
    }.get(how, how)


def _show_note(label: str, value: float | None, note: str | None) -> None:
    """The headline number again with its warning, when it rests on too few fields or positives."""
    if note:
        print(f"\nwarning: {label} {'-' if value is None else f'{value:.4f}'} ({note})")


def show_cell(result: dict) -> None:
    """The per-class table of a cell-level evaluation and where it was written."""
    from locbench.cells.scoring import format_cell_metrics

    print(format_cell_metrics(result))
    _show_note(f"{result['split']} cell mAP", result["map"], result.get("sample_note"))
    print(
        f"\n{result['n_pred_cells']} predicted cells in {result['n_fields']} fields ({result['split']}); "
        f"metrics written to {result['path']}"
    )
