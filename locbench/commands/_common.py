"""Arguments shared by train, sweep and evaluate: the common options as flags, plus --config and --set."""

from __future__ import annotations

import argparse

#: flag → dotted config key
FLAG_KEYS = {
    "data": "data.path",
    "backbone": "model.backbone",
    "loss": "loss.name",
    "aug": "augment.name",
    "channels": "data.channels",
    "img_size": "data.img_size",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "optim.lr",
    "seed": "train.seed",
    "device": "train.device",
    "workers": "data.workers",
    "split": "data.split",
    "level": "train.level",
}


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a YAML preset (the shape of the shipped base.yaml); flags and --set override it")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set loss.focal_gamma=1.5 (repeatable)",
    )
    g = p.add_argument_group("common options (shortcuts for --set)")
    g.add_argument("--data", help="dataset folder (train.csv + train/) or a CSV")
    g.add_argument("--backbone", help="any timm model name or a study preset (see `locbench list backbones`)")
    g.add_argument("--loss", help="bce, focal or asl")
    g.add_argument("--aug", help="standard, cutmix, mixup or none")
    g.add_argument("--channels", help="green, rgb, rgby or a comma list of stains")
    g.add_argument("--img-size", type=int, help="image side in pixels (default 256)")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="auto, cpu, cuda, cuda:1, mps")
    g.add_argument("--workers", type=int, help="data loader workers")
    g.add_argument("--split", help="a split file (JSON) to reuse")
    g.add_argument("--level", choices=["image", "cell"], help="image- or cell-level classification")
    g.add_argument("--pretrained", action="store_true", default=None, help="start from ImageNet weights")
    g.add_argument("--skip-bad", action="store_true", default=None, help="drop unreadable images and go on")
    g.add_argument("--no-cache", action="store_true", default=None, help="decode images every epoch")


def overrides_from_args(args: argparse.Namespace) -> dict:
    """Dotted overrides from the flags (only those given) and --set (which wins)."""
    from locbench.config import parse_set

    out = {key: getattr(args, flag) for flag, key in FLAG_KEYS.items() if getattr(args, flag, None) is not None}
    if getattr(args, "pretrained", None):
        out["model.pretrained"] = True
    if getattr(args, "skip_bad", None):
        out["data.skip_bad"] = True
    if getattr(args, "no_cache", None):
        out["data.cache"] = False
    out.update(parse_set(args.set))
    return out


def out_path(value: str) -> str:
    """argparse ``type`` of every ``--out``: an empty path would mean the current folder, never what was meant."""
    if not value.strip():
        raise argparse.ArgumentTypeError("an empty path; give a file or folder name")
    return value


def add_force_arg(p: argparse.ArgumentParser) -> None:
    """``--force``: replace an existing output (never an input: see :func:`locbench.store.outputs.check_output`)."""
    p.add_argument("--force", action="store_true", help="replace an existing --out (an input is never replaced)")
