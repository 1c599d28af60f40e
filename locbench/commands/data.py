"""``locbench data info DIR``: what a dataset holds (format, scheme, counts per class, pixel format)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from locbench.commands._common import add_data_args, add_force_arg, out_path, table_from_args


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("data", help="inspect a dataset")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="format, scheme, number of fields, class counts, pixel format of a sample")
    add_data_args(info, positional=True)
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.add_argument(
        "--masks",
        metavar="DIR",
        help="instance masks of the fields ({ID}.png or {ID}_predictedmask.png; default DATA/masks when it exists): "
        "how many fields have one and their cell counts",
    )
    info.add_argument(
        "--overlay",
        metavar="OUT",
        type=out_path,
        help="also write the outlines of every cell over the composite of the first --overlay-fields fields with a "
        "mask, one OUT/{ID}.png each (a new folder; never one of the dataset's)",
    )
    info.add_argument("--overlay-fields", type=int, default=4, help="fields drawn by --overlay (default 4)")
    add_force_arg(info)
    info.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    from locbench.cells.overlay import mask_summary, write_overlays
    from locbench.data.formats import summarize
    from locbench.errors import LocbenchError
    from locbench.store.outputs import check_output, data_inputs

    table = table_from_args(args)
    masks = Path(args.masks) if args.masks else Path(table.root) / "masks"
    if args.masks and not masks.is_dir():
        raise LocbenchError(f"--masks {masks} is not a folder; give the folder of {{ID}}.png instance masks")
    if args.overlay and not masks.is_dir():
        raise LocbenchError(f"--overlay needs masks: {masks} is not a folder; pass --masks DIR (or `locbench segment`)")
    if args.overlay:  # before anything is read: never over the dataset or the masks
        check_output(args.overlay, reads=[*data_inputs(args.data), masks], force=args.force, folder=True,
                     what="--overlay")  # fmt: skip
    info = summarize(table)
    if masks.is_dir():
        info["masks"] = mask_summary(table, masks)
    if args.overlay:
        drawn = [fid for fid in table.ids if fid in info["masks"]["cells"]][: max(1, args.overlay_fields)]
        if len(drawn) < args.overlay_fields:  # more than the summary read
            drawn = mask_summary(table, masks, read=args.overlay_fields)["cells"]
        written = write_overlays(table, masks, args.overlay, ids=list(drawn))
        info["masks"]["overlays"] = [str(p) for p in written]
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
    if "masks" in info:
        _print_masks(info["masks"], args.data)
    return 0


def _print_masks(m: dict, data: str) -> None:
    print(f"masks     {m['masks']}: {m['with_mask']} of {m['fields']} fields have one")
    if m["missing"]:
        print(f"  without a mask: {', '.join(m['missing'])}{' ...' if m['fields'] - m['with_mask'] > 10 else ''}")
    if m["cells"]:
        n = len(m["cells"])
        first = f"the first {n} fields" if n < m["with_mask"] else f"{n} fields"
        print(f"  cells per field ({first}): min {m['min']}, median {m['median']:g}, max {m['max']}")
        for fid, count in m["cells"].items():
            print(f"    {fid}  {count} cells")
    if m.get("overlays"):
        print(f"  outlines over the composite: {len(m['overlays'])} pictures in {Path(m['overlays'][0]).parent}")
    else:
        print(
            f"  to see the outlines over the composite: locbench data info {data} --overlay OUT "
            f"(or locbench preview --data {data} --masks {m['masks']}; segment --overlay for new masks)"
        )
