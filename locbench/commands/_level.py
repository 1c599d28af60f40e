"""What ``evaluate``, ``predict`` and ``cells evaluate|predict`` share: the cell-level flags, and running one of
:func:`locbench.infer.evaluate` / :func:`locbench.infer.predict` at the run's level (or the one asked for)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

from locbench.commands._common import add_force_arg, data_overrides


def add_cell_args(p: argparse.ArgumentParser) -> None:
    """The cell-level flags shared by ``cells``, ``evaluate --level cell`` and ``predict --level cell``."""
    g = p.add_argument_group("cell level")
    g.add_argument(
        "--masks",
        default=None,
        help="predicted cells: auto (the dataset's masks/, else segment), segment (the run's cell.backend), "
        "or a mask folder (default: the run's cell.masks)",
    )
    g.add_argument("--image-run", default=None, help="an image-level run folder whose field probabilities to blend")
    g.add_argument("--blend", type=float, default=None, help="weight of --image-run (default the run's cell.blend)")
    g.add_argument(
        "--negative", choices=["max", "none"], default=None, help="Negative rule (default the run's cell.negative)"
    )
    add_force_arg(p)


TTA_MODES = ("none", "hflip", "flips", "d8")  # locbench.models.TTA_MODES, kept light for the CLI


def add_tta_arg(p: argparse.ArgumentParser) -> None:
    """``--tta`` of ``evaluate`` and ``predict``: the run's ``infer.tta`` unless given."""
    p.add_argument(
        "--tta",
        choices=TTA_MODES,
        default=None,
        help="test-time augmentation, mean of the sigmoid probabilities: none, hflip (x2 forward passes), flips "
        "(identity and 3 mirrors, x4) or d8 (the 8 rotations/mirrors of the square, x8); default the run's "
        "infer.tta. Another mode than the run's re-tunes its thresholds on its validation part with that mode",
    )


CELL_METRIC_PROTOCOLS = ("challenge", "strict")  # locbench.cells.metric.PROTOCOLS, kept light for the CLI


def add_protocol_arg(p: argparse.ArgumentParser) -> None:
    """``--protocol`` of the cell metric (``evaluate --level cell`` and ``cells evaluate``)."""
    p.add_argument(
        "--protocol",
        choices=CELL_METRIC_PROTOCOLS,
        default="challenge",
        help="cell metric: challenge (the competition's: a class no true cell of a field carries is not scored in "
        "that field) or strict (such a prediction is a false positive); default challenge",
    )


def run_at_level(
    args: argparse.Namespace,
    action: Callable[..., Any],
    *,
    show_image: Callable[[Any], None],
    show_cell: Callable[[Any], None],
    **options: Any,
) -> int:
    """Call ``action`` (``infer.evaluate`` or ``infer.predict``) on ``args.run_dir`` at ``args.level`` (None: the
    run's) with the flags they share and ``options``; print the result with ``show_cell`` or ``show_image``, then
    the run's untrainable classes (never predicted), if any."""
    from locbench.infer import load_run, resolve_level
    from locbench.store.outputs import check_output, data_inputs

    run = load_run(args.run_dir)
    layout = data_overrides(args, path=False)
    if layout:  # --data's own layout (columns, pattern, stain names) instead of the run's
        run = dataclasses.replace(run, config=run.config.replace(layout))
    level = resolve_level(run, args.level)
    if args.out is not None:  # the default (evaluate: RUN_DIR/eval/<split>.json) is written there by design
        reads = [
            args.run_dir,
            args.image_run,
            getattr(args, "truth_masks", None),
            *data_inputs(args.data or run.config.data.path),
        ]
        if args.masks not in (None, "auto", "segment"):
            reads.append(args.masks)
        check_output(args.out, reads=reads, allowed=[run.folder.root / "eval"], force=args.force)
    result = action(
        run,
        level=level,
        data=args.data,
        out=args.out,
        device=args.device,
        workers=args.workers,
        masks=args.masks,
        image_run=args.image_run,
        blend=args.blend,
        negative=args.negative,
        **options,
    )
    (show_cell if level == "cell" else show_image)(result)
    _show_tta(run, options.get("tta"), level)
    if run.untrainable:
        from locbench.metrics import untrainable_note

        print(f"note: {untrainable_note(run.untrainable)}")
    return 0


def _show_tta(run: Any, asked: str | None, level: str) -> None:
    """What test-time augmentation was used, its cost, and where the thresholds came from."""
    from locbench.infer import own_tta, tta_words

    mode, own = asked or run.config.infer.tta, own_tta(run)
    if mode == "none" and own == "none":
        return
    print(f"test-time augmentation: {tta_words(mode)}")
    if level == "image" and mode != own:
        print(f"thresholds: re-tuned on the run's validation part with {mode} (the run's own were tuned with {own})")
