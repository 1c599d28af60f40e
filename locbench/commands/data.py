"""``locbench data info DIR``: what a dataset holds (format, scheme, counts per class, pixel format)."""

from __future__ import annotations

import argparse
import json

from locbench.commands._common import add_data_args, table_from_args


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("data", help="inspect a dataset")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="format, scheme, number of fields, class counts, pixel format of a sample")
    add_data_args(info, positional=True)
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    from locbench.data.formats import summarize

    info = summarize(table_from_args(args))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"dataset   {info['root']}")
    print(f"csv       {info['csv']}")
    print(f"format    {info['format']}   scheme {info['scheme']} ({info['num_classes']} classes)")
    print(f"fields    {info['num_fields']}   labels/field {info['labels_per_field']}")
    if "num_groups" in info:
        print(f"groups    {info['num_groups']}")
    sample = info["sample"]
    print(f"sample    {sample['id']}")
    for color, s in sample["stains"].items():
        detail = s.get("error") or f"{s['width']}x{s['height']} {s['dtype']}"
        print(f"  {color:<7} {s['file']}: {detail}")
    print("class counts:")
    width = max(len(c) for c in info["class_counts"])
    for k, (name, count) in enumerate(info["class_counts"].items()):
        print(f"  {k:>2} {name:<{width}} {count}")
    return 0
