"""`locbench train`: one configuration into one run folder."""

from __future__ import annotations

import argparse

from locbench.commands._common import add_config_args, out_path, overrides_from_args


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train one configuration into a run folder",
        description="Train one configuration. Defaults are the study's (resnet50, BCE, standard "
        "augmentation, green channel, 256 px, Adam 1e-4, batch 32, 20 epochs). Under torchrun "
        "(`torchrun --nproc_per_node N -m locbench train ...`) it trains with DDP.",
    )
    add_config_args(p)
    p.add_argument("--out", required=True, type=out_path, help="run folder to create (or to continue with --resume)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run (killed, Ctrl-C, SIGTERM) from its last finished epoch",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from locbench.config import load_config
    from locbench.engine.fit import train

    cfg = load_config(args.config, overrides_from_args(args))
    out = train(cfg, args.out, resume=args.resume)
    print(f"run folder: {out}")
    return 0
