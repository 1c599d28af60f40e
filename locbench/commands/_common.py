"""Arguments shared by the commands: the data options of every command that reads a dataset, the common training
options as flags, plus --config and --set."""

from __future__ import annotations

import argparse

#: flag → dotted config key
FLAG_KEYS = {
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
    add_data_args(p)
    g = p.add_argument_group("common options (shortcuts for --set)")
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
    g.add_argument("--pretrained", action="store_true", default=None, help="start from pretrained weights")
    g.add_argument("--no-cache", action="store_true", default=None, help="decode images every epoch")


def overrides_from_args(args: argparse.Namespace) -> dict:
    """Dotted overrides from the flags (only those given) and --set (which wins)."""
    from locbench.config import parse_set

    out = {key: getattr(args, flag) for flag, key in FLAG_KEYS.items() if getattr(args, flag, None) is not None}
    out.update(data_overrides(args))
    if getattr(args, "pretrained", None):
        out["model.pretrained"] = True
    if getattr(args, "no_cache", None):
        out["data.cache"] = False
    out.update(parse_set(args.set))
    return out


def parse_stains(value: str) -> dict[str, str | int | None]:
    """argparse ``type`` of ``--stains``: ``blue=DAPI,green=GFP`` → ``{"blue": "DAPI", "green": "GFP"}``; a number
    is a channel index in a multi-channel file, an empty name (``yellow=``) means the dataset has no such stain."""
    from locbench.data.channels import check_stain_names
    from locbench.errors import LocbenchError

    out: dict[str, str | int | None] = {}
    for item in (part.strip() for part in value.split(",")):
        stain, sep, name = item.partition("=")
        if not sep or not stain.strip():
            raise argparse.ArgumentTypeError(f"{item!r}: expected STAIN=NAME, e.g. blue=DAPI,green=GFP")
        name = name.strip()
        out[stain.strip().lower()] = int(name) if name.isascii() and name.isdigit() else (name or None)
    try:
        check_stain_names(out)
    except LocbenchError as e:
        raise argparse.ArgumentTypeError(str(e).replace("config key data.stains.", "")) from None
    return out


#: The data options of every command that reads a dataset (train, evaluate, predict, segment, cache, data info,
#: preview, split, sweep): dest → (dotted config key, flag, argparse keywords). The one list they are made from.
DATA_OPTIONS: dict[str, tuple[str, str, dict]] = {
    "data": ("data.path", "--data", {"help": "dataset folder (train.csv + train/) or its label CSV"}),
    "layout": (
        "data.format",
        "--layout",
        {"choices": ["kaggle2021", "kaggle2018", "generic"], "help": "CSV layout (default: from the CSV header)"},
    ),
    "id_col": ("data.id_col", "--id-col", {"help": "id column of the CSV (with --label-col: any layout)"}),
    "label_col": ("data.label_col", "--label-col", {"help": "label column of the CSV"}),
    "label_sep": (
        "data.label_sep",
        "--label-sep",
        {"help": "separator between classes in a label (default: the layout's; else | ; , or spaces)"},
    ),
    "classes": (
        "data.classes",
        "--classes",
        {"help": "hpa2021, hpa2018 or a file of class names (one a line); labels are numbers or names"},
    ),
    "pattern": (
        "data.pattern",
        "--pattern",
        {
            "help": "image file under the image folder: '{id}_{channel}.tif' (one file per stain, {channel} from "
            "--stains) or '{id}.ome.tif' (one multi-channel file per field); default '{id}_{channel}{ext}'"
        },
    ),
    "stains": (
        "data.stains",
        "--stains",
        {
            "type": parse_stains,
            "metavar": "STAIN=NAME,...",
            "help": "your names of the stains, e.g. blue=DAPI,green=GFP,red=Tubulin,yellow=Calreticulin: file "
            "suffixes, or OME channel names / 0-based indices in a multi-channel file",
        },
    ),
    "group_col": (
        "data.group_col",
        "--group-col",
        {"help": "column of groups (e.g. antibody) kept together in splits"},
    ),
    "resize": ("data.resize", "--resize", {"choices": ["pad", "crop", "stretch"], "help": "non-square fields"}),
    "skip_bad": (
        "data.skip_bad",
        "--skip-bad",
        {"action": "store_true", "help": "drop bad rows and unreadable images (counted) instead of failing"},
    ),
}


def add_data_args(p: argparse.ArgumentParser, *, positional: bool = False, required: bool = False) -> None:
    """The data options (:data:`DATA_OPTIONS`) as one argument group; ``positional``: the dataset is the first
    argument (``locbench data info DIR``) rather than ``--data`` (``required`` or not)."""
    g = p.add_argument_group("data options (shortcuts for --set data.KEY=VALUE where a command has --set)")
    for dest, (_, flag, kwargs) in DATA_OPTIONS.items():
        kwargs = {"default": None, **kwargs}
        if dest == "data" and positional:
            g.add_argument("data", metavar="DATA", help=kwargs["help"])
        elif dest == "data":
            g.add_argument(flag, required=required, **kwargs)
        else:
            g.add_argument(flag, dest=dest, **kwargs)


def data_overrides(args: argparse.Namespace, *, path: bool = True) -> dict:
    """Dotted config overrides from the data options given (``--stains`` sets only the stains it names);
    ``path=False`` leaves ``--data`` out (commands that pass the dataset on its own)."""
    out: dict = {}
    for dest, (key, _, _) in DATA_OPTIONS.items():
        value = getattr(args, dest, None)
        if value is None or value is False or (dest == "data" and not path):
            continue
        if dest == "stains":
            out.update({f"{key}.{stain}": name for stain, name in value.items()})
        else:
            out[key] = value
    return out


def data_config(args: argparse.Namespace):
    """The :class:`~locbench.config.DataConfig` the data options describe (the defaults for the others)."""
    from locbench.config import load_config

    return load_config(None, data_overrides(args)).data


def table_from_args(args: argparse.Namespace, *, check_images: bool = True):
    """The dataset table the data options describe.

    Straight through :func:`~locbench.data.formats.load_table` (which checks every value), not a ``DataConfig``:
    ``locbench.config`` imports torch (its name checks read the registries), and a data command that needs no
    model should not pay its import time and ~650 MB of resident memory before refusing a CSV.
    """
    from locbench.data.formats import load_table

    return load_table(
        args.data,
        layout=args.layout,
        id_col=args.id_col,
        label_col=args.label_col,
        label_sep=args.label_sep,
        pattern=args.pattern,
        classes=args.classes,
        group_col=args.group_col,
        stains=args.stains,
        skip_bad=bool(args.skip_bad),
        check_images=check_images,
    )


def out_path(value: str) -> str:
    """argparse ``type`` of every ``--out``: an empty path would mean the current folder, never what was meant."""
    if not value.strip():
        raise argparse.ArgumentTypeError("an empty path; give a file or folder name")
    return value


def add_force_arg(p: argparse.ArgumentParser) -> None:
    """``--force``: replace an existing output (never an input: see :func:`locbench.store.outputs.check_output`)."""
    p.add_argument("--force", action="store_true", help="replace an existing --out (an input is never replaced)")
