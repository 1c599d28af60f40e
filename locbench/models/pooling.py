"""How a backbone's feature map becomes one vector per image: timm's own pooling, chosen by name.

``model.pool`` picks it for any mode (fine-tuning and probes): ``auto`` keeps what timm built (a ViT's CLS token,
a CNN's global average), ``cls`` the CLS token, ``mean`` the mean of a ViT's patch tokens (prefix tokens left out,
after the final norm: timm's ``forward_head(pre_logits=True)`` with ``global_pool="avg"``) or a CNN's global
average. The pool is set with timm's ``reset_classifier(0, global_pool)`` after the weights are loaded: creating a
ViT with ``global_pool="avg"`` would move its final norm after the pooling (``fc_norm``), a different network.

``cell_mask`` (cell-level probes only) pools each cell's part of a whole field's feature map
(:mod:`locbench.models.cell_pool`); the model's own forward on an image then pools as ``mean`` does: the whole
field as one cell.
"""

from __future__ import annotations

from torch import nn

from locbench.errors import LocbenchError

#: The per-cell mean over each cell's mask on a whole field's feature map (cell-level probes).
CELL_MASK = "cell_mask"
POOLS = ("auto", "cls", "mean", CELL_MASK)
#: timm's ``global_pool`` name of each pool.
TIMM_POOL = {"cls": "token", "mean": "avg", CELL_MASK: "avg"}


def set_pool(backbone: nn.Module, pool: str, name: str) -> None:
    """Make ``backbone`` (a timm model built with ``num_classes=0``, named ``name``) pool as ``pool`` says."""
    if pool == "auto":
        return
    if pool not in TIMM_POOL:
        raise LocbenchError(f"config key model.pool={pool!r}: use one of {', '.join(POOLS)}")
    if pool == "cls" and not getattr(backbone, "has_class_token", False):
        raise LocbenchError(
            f"config key model.pool=cls needs a backbone with a CLS token (a ViT); {name} has none: use mean or auto"
        )
    if not hasattr(backbone, "reset_classifier"):
        raise LocbenchError(f"config key model.pool={pool}: timm's {name} cannot change its pooling; use auto")
    backbone.reset_classifier(0, global_pool=TIMM_POOL[pool])
