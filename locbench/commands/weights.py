"""`locbench weights list|import`: pretrained backbone weights on a machine without internet."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "weights",
        help="list the study's backbones' pretrained weights on this machine; import a local weights file",
        description="Pretrained ImageNet weights offline. `list` shows, per backbone, whether its weights are on "
        "this machine and where they are looked for; `import FILE --backbone NAME` checks that a local "
        ".safetensors/.pth/.bin state dict fits the backbone and puts it where training finds it "
        "($LOCBENCH_WEIGHTS, else ~/.cache/locbench/weights).",
    )
    wsub = p.add_subparsers(dest="action", required=True, metavar="{list,import}")
    lp = wsub.add_parser("list", help="the study's backbones (or the names given): weights here or missing, and where")
    lp.add_argument("backbones", nargs="*", help="backbone names (default: the study's presets)")
    ip = wsub.add_parser("import", help="check a local weights file against a backbone and store it for offline use")
    ip.add_argument("file", help="a .safetensors, .pth or .bin state dict of the timm model")
    ip.add_argument("--backbone", required=True, help="the backbone it is for (a study preset or a timm name)")
    ip.add_argument("--force", action="store_true", help="replace weights imported before for this backbone")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from locbench.models import STUDY_BACKBONES
    from locbench.models.weights import find_weights, import_weights, imported_from, weights_dir
    from locbench.tables import text_table

    if args.action == "import":
        dest, report = import_weights(args.file, args.backbone, force=args.force)
        print(f"imported {args.file} for {args.backbone}: {dest}")
        print(report.describe())
        print(f"`--pretrained` runs of {args.backbone} load it offline (see `locbench weights list {args.backbone}`)")
        return 0
    names = args.backbones or list(STUDY_BACKBONES)
    rows, missing = [], []
    for name in names:
        lk = find_weights(name)
        if lk.found is not None:
            meta = imported_from(lk) if lk.source == "imported" else None
            where = str(lk.found) + (f" (from {meta['source']})" if meta else "")
            rows.append([name, lk.weights_name, lk.source, where])
        else:
            rows.append([name, lk.weights_name, lk.source, str(lk.import_path) if lk.has_weights else "-"])
            if lk.has_weights:
                missing.append(lk)
    print(text_table(["backbone", "timm weights", "status", "file (or where to put it)"], rows))
    print(f"\nimported weights live in {weights_dir()} ($LOCBENCH_WEIGHTS); the hub caches are read too")
    if missing:
        print("missing: download on a machine with internet, then `locbench weights import FILE --backbone NAME`")
        for lk in missing:
            print(f"  {lk.backbone}: {lk.download}")
    return 0
