"""``locbench data info DIR``: what a dataset holds (format, scheme, counts per class, pixel format).

Also home of the dataset options every data command shares (:func:`add_table_args`, :func:`table_from_args`).
"""

from __future__ import annotations

import argparse
import json


def add_table_args(parser: argparse.ArgumentParser, *, positional: bool = False) -> None:
    """Options that locate and parse a dataset (a folder with train.csv + train/, or a CSV path)."""
    if positional:
        parser.add_argument("data", metavar="DATA", help="dataset folder (train.csv + train/) or label CSV")
    else:
        parser.add_argument("--data", required=True, help="dataset folder (train.csv + train/) or label CSV")
    g = parser.add_argument_group("dataset layout (detected from the CSV header unless given)")
    g.add_argument("--format", dest="layout", choices=["kaggle2021", "kaggle2018", "generic"], default=None)
    g.add_argument("--csv", default=None, help="label CSV relative to DATA (default train.csv)")
    g.add_argument("--id-col", default=None, help="id column of a generic CSV")
    g.add_argument("--label-col", default=None, help="label column of a generic CSV")
    g.add_argument("--label-sep", default=None, help="separator between class ids in a label")
    g.add_argument("--pattern", default=None, help="image file pattern, e.g. '{id}_{channel}.tif'")
    g.add_argument("--image-dir", default=None, help="image folder (default DATA/train)")
    g.add_argument("--classes", default=None, help="hpa2021, hpa2018, or a file with one class name per line")
    g.add_argument("--group-col", default=None, help="column of groups (e.g. antibody) kept together in splits")
    g.add_argument("--skip-bad", action="store_true", help="drop bad rows/images (logged) instead of failing")


def table_from_args(args: argparse.Namespace, *, check_images: bool = True):
    """Load the table the options of :func:`add_table_args` describe.

    Straight through :func:`~locbench.data.formats.load_table`, not a ``DataConfig``: ``locbench.config`` imports
    torch (its name checks read the registries), and a data command that needs no model should not pay its
    import time and ~650 MB of resident memory before refusing a CSV.
    """
    from locbench.data.formats import load_table

    return load_table(
        args.data,
        layout=args.layout,
        csv=args.csv,
        id_col=args.id_col,
        label_col=args.label_col,
        label_sep=args.label_sep,
        pattern=args.pattern,
        classes=args.classes,
        image_dir=args.image_dir,
        group_col=args.group_col,
        skip_bad=args.skip_bad,
        check_images=check_images,
    )


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("data", help="inspect a dataset")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="format, scheme, number of fields, class counts, pixel format of a sample")
    add_table_args(info, positional=True)
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
