"""Pretrained weights offline: where a backbone's ImageNet weights are looked for, a quick answer when they are
missing and no network can fetch them, and importing a local weights file so that timm finds it.

Lookup order for ``model.pretrained`` without ``model.pretrained_file``:

1. locbench's weights folder (``$LOCBENCH_WEIGHTS``, else ``weights/`` in ``$LOCBENCH_CACHE`` or
   ``~/.cache/locbench``): ``<timm name>.safetensors``, written by ``locbench weights import``;
2. the Hugging Face hub cache (``$HF_HUB_CACHE``, ``~/.cache/huggingface/hub``), where timm downloads the weights
   named by the model's ``pretrained_cfg.hf_hub_id``;
3. torch's hub cache (``torch.hub.get_dir()/checkpoints``) for weights timm names by ``pretrained_cfg.url`` only.

A file found locally is handed to timm through ``pretrained_cfg_overlay={"file": path}``, timm's documented way to
load weights from a file, so no network call is made. Only when none is found does timm go to the network, and only
after a probe of a few seconds says the hub answers (huggingface_hub reads ``HF_HUB_OFFLINE`` once, at import, and
retries for about a minute when the network is down).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import huggingface_hub
import timm
import torch
from huggingface_hub import constants as hf_constants
from safetensors.torch import save as safetensors_bytes
from timm.models import load_state_dict
from torch import nn

from locbench.errors import LocbenchError
from locbench.models.backbones import check_backbone
from locbench.store.atomic import atomic_write, atomic_write_json

log = logging.getLogger(__name__)

#: Weight files ``locbench weights import`` reads (timm's ``load_state_dict``: safetensors, or torch files loaded
#: with ``weights_only=True``, never unpickled).
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".bin", ".pt")
#: Seconds the network probe waits for the hub before calling it unreachable.
PROBE_TIMEOUT_S = 4.0
#: Names timm tries in a hub repository when its pretrained_cfg names none (safetensors first).
HF_FILES = ("model.safetensors", "pytorch_model.bin")


def weights_dir() -> Path:
    """Where ``locbench weights import`` puts weight files: ``$LOCBENCH_WEIGHTS``, else ``weights/`` in
    ``$LOCBENCH_CACHE`` or ``~/.cache/locbench``."""
    env = os.environ.get("LOCBENCH_WEIGHTS")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("LOCBENCH_CACHE")
    return (Path(cache).expanduser() if cache else Path.home() / ".cache" / "locbench") / "weights"


@dataclass(frozen=True)
class WeightsLookup:
    """Where the pretrained weights of one backbone were looked for and whether they were found."""

    backbone: str
    """The name as configured (a study preset or a timm name)."""
    timm_name: str
    """The timm model name it resolves to."""
    tag: str | None
    """timm's pretrained tag of the default weights (e.g. ``a1_in1k``), None when timm has no weights."""
    found: Path | None
    """The local file that will be loaded, or None."""
    source: str
    """``imported``, ``hf-cache``, ``torch-cache``, or ``missing`` / ``none in timm``."""
    places: tuple[str, ...]
    """Every place looked in, in order."""
    import_path: Path
    """Where ``locbench weights import`` puts a file for this backbone."""
    download: str | None
    """A URL to fetch the weights from on a machine with internet."""

    @property
    def weights_name(self) -> str:
        """timm's name of the weights: ``resnet50.a1_in1k`` (the model name with the default tag)."""
        if self.tag and "." not in self.timm_name:
            return f"{self.timm_name}.{self.tag}"
        return self.timm_name

    @property
    def has_weights(self) -> bool:
        """Whether timm knows pretrained weights for this model at all."""
        return self.tag is not None or self.download is not None

    def missing_message(self) -> str:
        """What to do when the weights are not here: the places, the download, the import command."""
        if not self.has_weights:
            return (
                f"timm has no pretrained weights for {self.timm_name!r}: train it from scratch "
                "(model.pretrained=false) or give a weights file with --set model.pretrained_file=PATH"
            )
        get = f"download {self.download} on a machine with internet, then " if self.download else ""
        return (
            f"{self.backbone} (timm {self.weights_name}): not in "
            + "; ".join(self.places)
            + f". Fix: {get}`locbench weights import FILE --backbone {self.backbone}`"
        )


def find_weights(backbone: str) -> WeightsLookup:
    """Look for ``backbone``'s pretrained weights on this machine, without any network call."""
    name = check_backbone(backbone)
    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) or None
    url = getattr(cfg, "url", None) or None
    tag = getattr(cfg, "tag", None) if (hub_id or url) else None
    imported = weights_dir() / f"{name}.safetensors"
    places = [str(imported)]
    candidates: list[tuple[str, Path | None]] = [("imported", imported if imported.is_file() else None)]
    download = None
    if hub_id:
        repo, _, revision = hub_id.partition("@")
        names = (cfg.hf_hub_filename,) if getattr(cfg, "hf_hub_filename", None) else HF_FILES
        repo_dir = Path(hf_constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "snapshots"
        places.append(f"{repo_dir}/*/{' or '.join(names)}")
        for fname in names:
            hit = huggingface_hub.try_to_load_from_cache(repo, fname, revision=revision or None)
            candidates.append(("hf-cache", Path(hit) if isinstance(hit, str) else None))
        download = f"{hf_constants.ENDPOINT}/{repo}/resolve/{revision or 'main'}/{names[0]}"
    if url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
        places.append(str(cached))
        candidates.append(("torch-cache", cached if cached.is_file() else None))
        download = download or url
    for source, path in candidates:
        if path is not None:
            return WeightsLookup(backbone, name, tag, path, source, tuple(places), imported, download)
    source = "missing" if (hub_id or url) else "none in timm"
    return WeightsLookup(backbone, name, tag, None, source, tuple(places), imported, download)


def hub_reachable(lookup: WeightsLookup, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the place timm would download ``lookup``'s weights from answers within ``timeout`` seconds
    (False at once under ``HF_HUB_OFFLINE=1``). Goes through huggingface_hub's HTTP client, so proxies apply."""
    if hf_constants.HF_HUB_OFFLINE or not lookup.download:
        return False
    parsed = urlparse(lookup.download)
    try:
        huggingface_hub.get_session().head(f"{parsed.scheme}://{parsed.netloc}/", timeout=timeout)
    except Exception as e:  # any connection, DNS, TLS or timeout error means: not from here
        log.debug("%s does not answer: %s: %s", parsed.netloc, type(e).__name__, e)
        return False
    return True


class WeightsMissing(LocbenchError):
    """Pretrained weights are neither on this machine nor downloadable from here."""


def missing_error(lookups: list[WeightsLookup], *, what: str) -> WeightsMissing:
    """One error listing every backbone whose weights are missing (``what`` says who needs them)."""
    offline = " and the model hub cannot be reached (offline, or HF_HUB_OFFLINE=1)"
    head = f"{what}: pretrained weights of {len(lookups)} backbone(s) are not on this machine"
    lines = [head + (offline if any(lk.has_weights for lk in lookups) else "") + ":"]
    lines += [f"  - {lk.missing_message()}" for lk in lookups]
    lines.append(
        "See `locbench weights list`; or train from scratch with --set model.pretrained=false "
        "(not the study's setting)."
    )
    return WeightsMissing("\n".join(lines))


def require_weights(backbones: list[str], *, what: str) -> list[WeightsLookup]:
    """Make sure every backbone in ``backbones`` has its pretrained weights on this machine before work starts:
    missing ones are downloaded where the hub answers (into timm's hub cache), otherwise one
    :class:`WeightsMissing` lists them all (``what`` names who needs them). Returns the lookups."""
    lookups = [find_weights(name) for name in dict.fromkeys(backbones)]
    missing = [lk for lk in lookups if lk.found is None]
    fetchable = [lk for lk in missing if lk.has_weights]
    if fetchable and hub_reachable(fetchable[0]):
        for lk in fetchable:
            log.info("downloading the pretrained weights of %s", lk.timm_name)
            timm.create_model(lk.timm_name, pretrained=True, num_classes=0)
        lookups = [find_weights(lk.backbone) for lk in lookups]
        missing = [lk for lk in lookups if lk.found is None]
    if missing:
        raise missing_error(missing, what=what)
    return lookups


def check_weights_file(backbone: nn.Module, path: Path, name: str) -> None:
    """Refuse a weights file that does not hold ``backbone``'s tensors: timm loads pretrained weights non-strictly
    once the classifier is dropped (num_classes=0), so a file made for another model would leave the backbone at
    random init without an error. Shapes are checked by timm's own load (it raises on a mismatch)."""
    keys = set(load_state_dict(str(path)))
    own = [k for k in backbone.state_dict() if not k.endswith("num_batches_tracked")]
    missing = [k for k in own if k not in keys]
    if len(missing) > len(own) // 2:
        raise LocbenchError(
            f"{path} does not hold {name} weights: {len(missing)} of {len(own)} backbone tensors are not in it "
            f"(e.g. {missing[0]}); give a state dict of timm's {name!r} model"
        )
    if missing:
        log.warning("%s lacks %d of %d %s tensors; they keep their random init", path, len(missing), len(own), name)


def import_weights(file: str | Path, backbone: str, *, force: bool = False) -> Path:
    """Check that ``file`` (a .safetensors/.pth/.bin state dict) loads into ``backbone`` (every tensor present with
    its shape) and store it as safetensors where :func:`find_weights` finds it; returns that path."""
    src = Path(file).expanduser()
    if not src.is_file():
        raise LocbenchError(f"weights file {src} does not exist")
    if src.suffix.lower() not in WEIGHT_SUFFIXES:
        raise LocbenchError(f"weights file {src}: expected one of {', '.join(WEIGHT_SUFFIXES)}")
    name = check_backbone(backbone)
    dest = weights_dir() / f"{name}.safetensors"
    if dest.exists() and not force:
        raise LocbenchError(f"{dest} exists (weights for {name} were imported before); add --force to replace it")
    try:
        state = load_state_dict(str(src))
    except Exception as e:  # a pickle refused by weights_only, a damaged file, not a state dict
        raise LocbenchError(f"weights file {src} could not be read as a state dict ({type(e).__name__}: {e})") from None
    scratch = timm.create_model(name, num_classes=0)
    own = {k: v for k, v in scratch.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = [k for k in own if k not in state]
    wrong = [
        f"{k} {tuple(state[k].shape)} (model {tuple(v.shape)})"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or wrong:
        detail = "; ".join([*(f"missing {k}" for k in missing[:3]), *wrong[:3]])
        raise LocbenchError(
            f"weights file {src} does not fit timm's {name!r}: {len(missing)} of {len(own)} tensors missing, "
            f"{len(wrong)} of another shape ({detail}); give a state dict of that model"
        )
    # load it the way training will (timm's file path, its checkpoint filter) to be sure it goes in
    loaded = timm.create_model(name, num_classes=0, pretrained=True, pretrained_cfg_overlay={"file": str(src)})
    first = next(k for k in own if own[k].ndim > 1)
    if not torch.equal(loaded.state_dict()[first], state[first].to(own[first].dtype)):
        raise LocbenchError(f"weights file {src}: timm did not load it into {name!r} ({first} differs)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items() if isinstance(v, torch.Tensor)}
    atomic_write(dest, lambda f: f.write(safetensors_bytes(tensors)))
    atomic_write_json(
        dest.with_suffix(".json"),
        {"backbone": backbone, "timm_name": name, "source": str(src.resolve()), "sha256": _sha256(src)},
    )
    log.info("imported %s for %s into %s", src, name, dest)
    return dest


def imported_from(lookup: WeightsLookup) -> dict | None:
    """The record ``import_weights`` wrote beside an imported file (source path, sha256), or None."""
    meta = lookup.import_path.with_suffix(".json")
    try:
        return json.loads(meta.read_text())
    except (OSError, ValueError):
        return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
