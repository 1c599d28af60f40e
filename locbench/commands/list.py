"""`locbench list KIND`: what the registries offer."""

from __future__ import annotations

import argparse

KINDS = ("backbones", "losses", "augmentations", "mixers", "heads", "segmenters", "configs")


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="list backbones, losses, augmentations, mixers, heads, segmenters, configs")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("pattern", nargs="?", default=None, help="backbones: a timm wildcard, e.g. 'efficientnet*'")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from locbench.errors import LocbenchError

    if args.kind == "backbones":
        import timm

        from locbench.models import BACKBONE_ALIASES, PRESETS, STUDY_BACKBONES

        if args.pattern is None:
            print("Study presets:")
            for name in STUDY_BACKBONES:
                alias = BACKBONE_ALIASES.get(name)
                print(
                    f"  {name}" + (f"  (timm {alias}; the study's code used nfnet_f1, also available)" if alias else "")
                )
            print("\nTransformer and ConvNeXt presets:")
            width = max(map(len, PRESETS))
            for name, preset in PRESETS.items():
                timm_name = f"timm {preset.timm_name}; " if preset.timm_name != name else ""
                print(f"  {name:<{width}}  {timm_name}{preset.about}")
            print(
                f"\nAny of timm's {len(timm.list_models())} models works; filter with a pattern, "
                "e.g. `locbench list backbones 'convnext*'`."
            )
        else:
            names = timm.list_models(args.pattern)
            if not names:
                raise LocbenchError(f"no timm model matches {args.pattern!r}")
            print("\n".join(names))
        return 0
    if args.kind == "configs":
        from locbench.sweep.files import shipped_configs

        for path in shipped_configs():
            print(path)
        return 0
    registry = _registry(args.kind)
    width = max(map(len, registry.names()), default=0)
    for name, doc in registry.describe().items():
        print(f"{name:<{width}}  {doc}")
    return 0


def _registry(kind: str):
    if kind == "losses":
        from locbench.losses import LOSSES

        return LOSSES
    if kind in ("augmentations", "mixers"):
        from locbench.augment import AUGMENTATIONS, MIXERS

        return AUGMENTATIONS if kind == "augmentations" else MIXERS
    if kind == "heads":
        from locbench.models import HEADS

        return HEADS
    from locbench.cells.segment import SEGMENTERS

    return SEGMENTERS
