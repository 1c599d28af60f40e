"""``locbench cache``: decode and resize every field once into an on-disk memory-mapped cache."""

from __future__ import annotations

import argparse

from locbench.commands._common import add_data_args, data_config


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("cache", help="decode + resize all images once into a memory-mapped cache")
    add_data_args(p, required=True)
    p.add_argument("--img-size", type=int, required=True, help="side length in pixels")
    p.add_argument("--channels", default="rgby", help="green | rgb | rgby | comma list (default rgby)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default min(cpus, 8))")
    p.add_argument("--cache-dir", default=None, help="parent folder (default $LOCBENCH_CACHE or ~/.cache/locbench)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from locbench.data.cache import build_cache
    from locbench.data.formats import table_from_config

    dcfg = data_config(args)
    table = table_from_config(dcfg)
    cache = build_cache(
        table,
        channels=args.channels,
        size=args.img_size,
        cache_dir=args.cache_dir,
        workers=args.workers,
        skip_bad=dcfg.skip_bad,
        resize_policy=dcfg.resize,
    )
    print(f"cache {cache.path}")
    print(f"  {len(cache)} fields, stains {','.join(cache.stains)}, {cache.size}px, {cache.dtype.name}")
    if cache.bad_ids:
        print(f"  {len(cache.bad_ids)} fields could not be decoded and are left out")
    return 0
