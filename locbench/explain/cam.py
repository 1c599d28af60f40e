"""Class activation maps for any timm backbone (CNNs and ViTs, any input channel count).

The maps come from the maintained ``grad-cam`` package (``pytorch_grad_cam``); this module only picks the
target layer per model family, turns transformer tokens back into a spatial grid, and leaves the model exactly
as it found it (no hooks, same train/eval flags, same parameter gradients).

Multi-label models are explained per class logit: the sigmoid is monotonic, so the logit ranks evidence the
same way the probability does and has useful gradients where the probability saturates.

An ensemble (:class:`~locbench.models.tta.ProbabilityMean` of several models) is explained member by member, each
at its own target layer, and the maps are averaged (then scaled to their maximum, as every map is): the members'
layers hold unrelated features, so no single layer explains the mean. A region only some members use is weakened
against one all members point at.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import types
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import tqdm
from torch import nn

from locbench.errors import LocbenchError
from locbench.models.cell_pool import to_grid
from locbench.models.tta import ProbabilityMean

log = logging.getLogger(__name__)

#: CAM method name -> ``pytorch_grad_cam`` class name. Ablation-based methods are left out: they need a
#: family-specific ablation layer, and Score-CAM covers the gradient-free case.
METHODS: dict[str, str] = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "hirescam": "HiResCAM",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "scorecam": "ScoreCAM",
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
}

#: Images per forward pass inside Score-CAM (it runs one masked copy of each image per feature channel).
SCORECAM_BATCH = 32


def unwrap_backbone(model: nn.Module) -> nn.Module:
    """Find the timm backbone inside ``model``.

    Returns the first ``backbone`` attribute found (locbench's backbone + head wrapper), also when nested, as in
    a finished run's ``nn.Sequential(Normalize, wrapper)``; else the first timm-like module (ViT blocks or
    ``feature_info``); else ``model`` itself.
    """
    for m in model.modules():  # the model itself first, then its submodules depth-first
        inner = getattr(m, "backbone", None)
        if isinstance(inner, nn.Module):
            return inner
    for m in model.modules():
        if is_vit(m) or _last_feature_module(m) is not None:
            return m
    return model


def is_vit(model: nn.Module) -> bool:
    """True for timm ViT-like models: a patch embedding, prefix tokens and ``blocks[-1].norm1``."""
    blocks = getattr(model, "blocks", None)
    return (
        hasattr(model, "patch_embed")
        and hasattr(model, "num_prefix_tokens")
        and isinstance(blocks, nn.Sequential | nn.ModuleList)
        and len(blocks) > 0
        and isinstance(getattr(blocks[-1], "norm1", None), nn.Module)
    )


def default_target_layer(model: nn.Module) -> nn.Module:
    """The layer whose activations a CAM is built from, chosen per model family.

    - ViT-like (``patch_embed`` + ``blocks``): ``blocks[-1].norm1``. The class token is formed in the last
      attention block, so the patch tokens *after* it no longer affect the logit (their gradient is zero);
      the input of that block's attention still does.
    - timm CNNs (and hybrids exposing ``feature_info``): the module of the last feature stage,
      ``feature_info[-1]["module"]``.
    - Anything else: the last ``nn.Conv2d``.

    Looks through a wrapper's ``backbone`` attribute first.

    Args:
        model: A timm model or a locbench wrapper around one.

    Returns:
        The target module (a submodule of ``model``).

    Raises:
        LocbenchError: when no suitable layer exists (pass ``target_layer`` explicitly then).
    """
    backbone = unwrap_backbone(model)
    if is_vit(backbone):
        return backbone.blocks[-1].norm1
    name = _last_feature_module(backbone)
    if name is not None:
        try:
            return backbone.get_submodule(name)
        except AttributeError:
            log.debug("feature_info names %r, which is not a submodule; falling back to the last conv", name)
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    if convs:
        return convs[-1]
    raise LocbenchError(
        f"cannot choose a CAM target layer for {type(backbone).__name__}: it has no timm feature_info, no ViT "
        "blocks and no Conv2d; pass target_layer=<module> explicitly"
    )


def _last_feature_module(model: nn.Module) -> str | None:
    info = getattr(model, "feature_info", None)
    if isinstance(info, list | tuple) and info and isinstance(info[-1], dict):
        return info[-1].get("module") or None
    if hasattr(info, "module_name"):  # timm FeatureInfo (features_only models)
        return info.module_name(-1)
    return None


def make_reshape_transform(model: nn.Module, image_hw: tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A ``reshape_transform`` that turns any target layer's output into ``(B, C, h, w)``.

    Token tensors ``(B, N, D)`` lose their prefix tokens (class and register tokens,
    ``model.num_prefix_tokens``) and are laid out on the patch grid; channels-last stage outputs (timm models
    with ``output_fmt == "NHWC"``, e.g. Swin) are permuted; NCHW tensors pass through.

    Args:
        model: The model (or wrapper) being explained.
        image_hw: Input height and width, which fix the patch grid.

    Returns:
        The transform, for ``pytorch_grad_cam``'s ``reshape_transform`` argument.
    """
    backbone = unwrap_backbone(model)

    def transform(t: torch.Tensor) -> torch.Tensor:
        return to_grid(
            backbone,
            t,
            image_hw,
            what="CAM target layer",
            fix="choose a token layer of the main trunk (e.g. blocks[-1].norm1)",
        )

    return transform


def compute_cams(
    model: nn.Module,
    images: torch.Tensor,
    class_indices: Sequence[Sequence[int]] | Sequence[int],
    *,
    method: str = "gradcam",
    target_layer: nn.Module | None = None,
) -> np.ndarray:
    """Class activation maps of ``images`` for the given classes.

    Args:
        model: A timm model or a locbench wrapper (``model.backbone`` + head) returning ``(B, num_classes)``
            logits. It is put in eval mode for the call; modes, hooks and ``.grad`` are restored afterwards.
        images: ``(B, C, H, W)`` float tensor, preprocessed exactly as the model sees it (any channel count).
        class_indices: Either one list of ``K`` class indices used for every image, or ``B`` lists of ``K``
            indices (one list per image, all of the same length).
        method: One of :data:`METHODS` (``"gradcam"``, ``"gradcam++"``, ``"scorecam"``, ...).
        target_layer: The layer to explain; default :func:`default_target_layer`. Not with an ensemble.

    Returns:
        ``(B, K, H, W)`` float32 maps in [0, 1], each scaled by ``pytorch_grad_cam`` to its own maximum
        (an all-zero map means no positive evidence at that layer). An ensemble's: the mean of its members' maps,
        scaled to its maximum.

    Raises:
        LocbenchError: on an unknown method, a malformed ``class_indices`` or an index out of range.
    """
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if method not in METHODS:
        raise LocbenchError(f"unknown CAM method {method!r}; valid methods: {', '.join(METHODS)}")
    if images.ndim != 4 or not images.is_floating_point():
        raise LocbenchError(
            f"compute_cams needs a float (B, C, H, W) tensor preprocessed for the model; got "
            f"{images.dtype} of shape {tuple(images.shape)}"
        )
    per_image = _per_image_classes(class_indices, images.shape[0])
    members = ensemble_members(model)
    if len(members) > 1:
        if target_layer is not None:
            raise LocbenchError("target_layer names one network's layer; an ensemble is explained per member")
        mean = np.mean([compute_cams(m, images, per_image, method=method) for m in members], axis=0)
        top = mean.max(axis=(-2, -1), keepdims=True)
        return np.divide(mean, top, out=np.zeros_like(mean), where=top > 0).astype(np.float32)
    layer = target_layer if target_layer is not None else default_target_layer(model)
    cam_cls = getattr(pytorch_grad_cam, METHODS[method])
    reshape = make_reshape_transform(model, (int(images.shape[-2]), int(images.shape[-1])))

    b, k = images.shape[0], len(per_image[0])
    out = np.zeros((b, k, images.shape[-2], images.shape[-1]), dtype=np.float32)
    if k == 0:
        return out
    with _model_untouched(model), torch.enable_grad(), _quiet_scorecam(method):
        model.eval()  # before any forward: a train-mode pass would update BatchNorm statistics
        device = next(model.parameters()).device
        # The input requires grad so the target layer's output does too, even when the model is frozen.
        x = images.detach().to(device=device).requires_grad_(True)
        _check_indices(model, x, per_image)
        cam = cam_cls(model=model, target_layers=[layer], reshape_transform=reshape)
        cam.batch_size = SCORECAM_BATCH
        try:
            for j in range(k):
                targets = [ClassifierOutputTarget(per_image[i][j]) for i in range(b)]
                out[:, j] = cam(input_tensor=x, targets=targets)
        finally:
            # The package's __exit__ swallows IndexError, so release explicitly instead of using `with`.
            cam.activations_and_grads.release()
    return np.clip(out, 0.0, 1.0)


def ensemble_members(model: nn.Module) -> list[nn.Module]:
    """The networks a CAM must explain one by one: an ensemble's members (a single-view
    :class:`~locbench.models.tta.ProbabilityMean`), else ``[model]``. A mean over test-time views is refused: a CAM
    hooks one pass through a layer."""
    if not isinstance(model, ProbabilityMean):
        return [model]
    if len(model.views) > 1:
        raise LocbenchError(
            "class activation maps explain one forward pass; build the model without test-time augmentation "
            "(FinishedRun.model(tta=False))"
        )
    return list(model.members)


def _per_image_classes(class_indices: Sequence[Sequence[int]] | Sequence[int], batch: int) -> list[list[int]]:
    if batch == 0:
        raise LocbenchError("compute_cams got an empty batch; pass at least one image")
    items = list(class_indices)
    if all(isinstance(c, int | np.integer) for c in items):
        return [[int(c) for c in items] for _ in range(batch)]
    if len(items) != batch:
        raise LocbenchError(
            f"class_indices has {len(items)} per-image lists for {batch} images; give one list per image "
            "or one flat list of classes for all images"
        )
    lists = [[int(c) for c in row] for row in items]
    lengths = {len(row) for row in lists}
    if len(lengths) > 1:
        raise LocbenchError(
            f"per-image class lists have different lengths {sorted(lengths)}; pad them to the same K or call "
            "compute_cams once per image"
        )
    return lists


def _check_indices(model: nn.Module, x: torch.Tensor, per_image: list[list[int]]) -> None:
    # One cheap forward: an out-of-range index would otherwise fail deep inside the package.
    with torch.no_grad():
        n_classes = int(model(x[:1]).shape[-1])
    bad = sorted({c for row in per_image for c in row if not 0 <= c < n_classes})
    if bad:
        raise LocbenchError(f"class index(es) {bad} out of range for a model with {n_classes} outputs")


@contextlib.contextmanager
def _model_untouched(model: nn.Module) -> Iterator[None]:
    """Restore every submodule's train/eval flag and every parameter's ``.grad`` on exit."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.grad) for p in model.parameters()]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, g in grads:
            p.grad = g


@contextlib.contextmanager
def _quiet_scorecam(method: str) -> Iterator[None]:
    """Score-CAM draws a tqdm bar per image unconditionally; show it only on a terminal (``disable=None``)."""
    if method != "scorecam":
        yield
        return
    from pytorch_grad_cam import score_cam

    quiet = types.SimpleNamespace(tqdm=functools.partial(tqdm.tqdm, disable=None))
    saved = score_cam.tqdm
    score_cam.tqdm = quiet
    try:
        yield
    finally:
        score_cam.tqdm = saved
