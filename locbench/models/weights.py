"""Pretrained weights: where a backbone's weights are looked for offline, a quick answer when they are missing and
no network can fetch them, loading a local weights file of any common layout with a report of what it held
(:func:`load_weights`), and importing one so that later runs find it.

Lookup order for ``model.pretrained`` without ``model.pretrained_file``:

1. locbench's weights folder (``$LOCBENCH_WEIGHTS``, else ``weights/`` in ``$LOCBENCH_CACHE`` or
   ``~/.cache/locbench``): ``<timm name>.safetensors``, written by ``locbench weights import``;
2. the Hugging Face hub cache (``$HF_HUB_CACHE``, ``~/.cache/huggingface/hub``), where timm downloads the weights
   named by the model's ``pretrained_cfg.hf_hub_id``;
3. torch's hub cache (``torch.hub.get_dir()/checkpoints``) for weights timm names by ``pretrained_cfg.url`` only.

A file found locally, or ``model.pretrained_file``, is loaded by :func:`load_weights` through timm's own loading
path (``timm.models.load_pretrained``), so no network call is made. Only when none is found does timm go to the
network, and only after a probe of a few seconds says the hub answers (huggingface_hub reads ``HF_HUB_OFFLINE``
once, at import, and retries for about a minute when the network is down).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
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


#: Entries of a training checkpoint that hold the model's weights, tried in this order after timm's own
#: (``state_dict_ema``, ``model_ema``, ``state_dict``, ``model``): DINO keeps the model it evaluates as ``teacher``.
NESTED_KEYS = ("teacher", "state_dict", "model", "student", "module", "net", "network")
#: How deep a wrapper prefix (``module.backbone.``) may be when keys are matched to a backbone's.
MAX_PREFIX_DEPTH = 3


@dataclass(frozen=True)
class WeightsReport:
    """What loading a weights file into a backbone did: written to the run's log and to ``summary.json``."""

    file: str
    entry: str | None
    """The checkpoint entry the weights came from (``teacher``), None for a plain state dict."""
    prefix: str
    """Removed from the file's keys (``backbone.``), empty when none (timm's reader drops ``module.`` and
    ``_orig_mod.``, the wrappers of DDP and torch.compile, before)."""
    total: int
    """The backbone's tensors."""
    missing: tuple[str, ...]
    """Backbone tensors not in the file: they keep their random init."""
    unexpected: tuple[str, ...]
    """Tensors of the file the backbone has no place for: ignored (a DINO head, a mask token), or renamed by
    timm's checkpoint filter (see ``converted``)."""
    adapted: tuple[str, ...]
    """Tensors loaded after timm reshaped them: the first layer to the stains, position embeddings to the size."""
    converted: tuple[str, ...] = ()
    """Tensors timm's checkpoint filter made from others of the file (an older or another layout's names)."""

    @property
    def loaded(self) -> int:
        return self.total - len(self.missing)

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "entry": self.entry,
            "prefix": self.prefix,
            "loaded": self.loaded,
            "total": self.total,
            "missing": list(self.missing),
            "unexpected": list(self.unexpected),
            "adapted": list(self.adapted),
            "converted": list(self.converted),
        }

    def describe(self) -> str:
        """One paragraph for the log and the command line."""
        where = [f"entry {self.entry!r}"] if self.entry else []
        where += [f"key prefix {self.prefix!r} removed"] if self.prefix else []
        text = f"{self.file}" + (f" ({', '.join(where)})" if where else "")
        text += f": {self.loaded} of {self.total} backbone tensors loaded"
        if self.adapted:
            text += f"; adapted: {', '.join(self.adapted)}"
        if self.converted:
            text += f"; made by timm's checkpoint filter from other keys: {_few(self.converted)}"
        if self.missing:
            text += f"; {len(self.missing)} missing, left at random init: {_few(self.missing)}"
        if self.unexpected:
            what = "ignored or converted" if self.converted else "ignored"
            text += f"; {len(self.unexpected)} unexpected, {what}: {_few(self.unexpected)}"
        return text


def _few(keys: tuple[str, ...] | list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """The tensors of a weights file (safetensors, or a torch file read with ``weights_only=True``: never
    unpickled) and the checkpoint entry they came from: a training checkpoint's ``state_dict``/``model``/``teacher``
    ... entry, nested at any depth, else the file's top level."""
    try:
        state: object = load_state_dict(str(path))  # timm: safetensors or weights_only, EMA first, "module." removed
    except Exception as e:  # a pickle refused by weights_only, a damaged file, not a state dict
        detail = " ".join(str(e).split())[:400]
        raise LocbenchError(
            f"weights file {path} could not be read as a state dict ({type(e).__name__}: {detail})"
        ) from None
    entries: list[str] = []
    while isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        entry = next((k for k in NESTED_KEYS if isinstance(state.get(k), dict)), None)
        if entry is None:
            break
        entries.append(entry)
        state = state[entry]
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)} if isinstance(state, dict) else {}
    if not tensors:
        keys = list(state)[:8] if isinstance(state, dict) else []
        raise LocbenchError(
            f"weights file {path} holds no tensors where a state dict is looked for (top-level keys: "
            f"{', '.join(map(str, keys)) or 'none'}; entries tried: {', '.join(NESTED_KEYS)}); "
            "save the model's state_dict() on its own"
        )
    return tensors, ".".join(entries) or None


def strip_prefix(state: dict[str, torch.Tensor], own: set[str]) -> tuple[str, dict[str, torch.Tensor], list[str]]:
    """Remove the wrapper prefix (``module.``, ``backbone.``, ``module.backbone.``) under which most of the
    file's keys are the backbone's own (``own``): the prefix, the tensors under it without it, and the keys left
    out (another part of the checkpoint, such as a DINO projection head). No prefix when none matches better."""
    counts: dict[str, int] = {}
    for key in state:
        parts = key.split(".")
        for depth in range(min(MAX_PREFIX_DEPTH, len(parts) - 1) + 1):
            prefix = "".join(p + "." for p in parts[:depth])
            if key[len(prefix) :] in own:
                counts[prefix] = counts.get(prefix, 0) + 1
    best = max(counts, key=lambda p: (counts[p], -len(p)), default="")
    if counts.get(best, 0) <= counts.get("", 0):
        return "", state, []
    kept = {k[len(best) :]: v for k, v in state.items() if k.startswith(best)}
    return best, kept, [k for k in state if not k.startswith(best)]


def load_weights(backbone: nn.Module, path: Path, *, name: str, in_chans: int) -> WeightsReport:
    """Load the weights file ``path`` into ``backbone`` (timm's ``name``, built with ``in_chans`` inputs and
    without a classifier) the way timm loads its own pretrained weights (``timm.models.load_pretrained``: the
    model family's checkpoint filter resamples position and patch embeddings to the backbone's size, the first
    layer is adapted to ``in_chans``), after finding the weights in a checkpoint (:func:`read_weights`) and
    removing a wrapper prefix (:func:`strip_prefix`). Raises when more than half the backbone's tensors are not
    in the file or a tensor has a shape timm cannot adapt; returns what was loaded, missing, ignored and adapted."""
    raw, entry = read_weights(path)
    own_state = {k: v for k, v in backbone.state_dict().items() if not k.endswith("num_batches_tracked")}
    prefix, state, left_out = strip_prefix(raw, set(own_state))
    matched = sum(k in state for k in own_state)

    def not_held(missing: int) -> LocbenchError:
        where = f"entry {entry!r} " if entry else ""
        return LocbenchError(
            f"{path} does not hold {name} weights: {missing} of {len(own_state)} backbone tensors are not in it "
            f"(file {where}keys: {_few(list(raw), 4)}; the model's: {_few(list(own_state), 4)}); "
            f"give a state dict of timm's {name!r} model"
        )

    cfg = dict(backbone.pretrained_cfg)
    cfg.pop("file", None)
    cfg.update(
        state_dict=dict(state),
        input_size=(_source_chans(backbone, state, in_chans), *(cfg.get("input_size") or (3, 224, 224))[1:]),
    )
    outcome: list = []
    filtered: dict[str, torch.Tensor] = {}
    family_filter = _filter_fn(name)

    def filter_fn(sd: dict, model: nn.Module) -> dict:
        # what the family's filter makes of the file: keys it drops or renames never reach load_state_dict
        out = family_filter(sd, model) if family_filter is not None else sd
        filtered.update(out)
        return out

    hook = backbone.register_load_state_dict_post_hook(lambda _module, keys: outcome.append(keys))
    try:
        timm.models.load_pretrained(
            backbone, pretrained_cfg=cfg, num_classes=0, in_chans=in_chans, filter_fn=filter_fn, strict=False
        )
    except LocbenchError:
        raise
    except Exception as e:  # a tensor of a shape timm cannot adapt (a wider stem, another embedding width)
        if matched * 2 < len(own_state):  # another model's file: its keys say more than the first clash
            raise not_held(len(own_state) - matched) from None
        detail = " ".join(line.strip() for line in str(e).splitlines()[:2])[:300]
        raise LocbenchError(
            f"{path} does not fit {name!r} ({type(e).__name__}: {detail}); "
            f"give a .safetensors/.pth state dict of timm's {name!r} model"
        ) from None
    finally:
        hook.remove()
    keys = outcome[-1]
    report = WeightsReport(
        file=str(path),
        entry=entry,
        prefix=prefix,
        total=len(own_state),
        missing=tuple(k for k in keys.missing_keys if not k.endswith("num_batches_tracked")),
        unexpected=(
            *left_out,
            *(k for k in state if k not in own_state and k not in filtered),
            *keys.unexpected_keys,
        ),
        converted=tuple(k for k in filtered if k not in state),
        adapted=tuple(
            f"{k} {tuple(state[k].shape)} -> {tuple(v.shape)}"
            for k, v in own_state.items()
            if k in state and state[k].shape != v.shape
        ),
    )
    if len(report.missing) * 2 > report.total:
        # checked after timm's filter, which may rename an older layout's keys (original ConvNeXt, DINOv2)
        raise not_held(len(report.missing))
    log.info("pretrained weights from %s", report.describe())
    if report.missing:
        log.warning(
            "%s lacks %d of %d %s tensors; they keep their random init", path, len(report.missing), report.total, name
        )
    return report


def _source_chans(backbone: nn.Module, state: dict[str, torch.Tensor], in_chans: int) -> int:
    """The number of input channels the file's first layer was trained on (3 for ImageNet, 4 for a model trained
    on the four HPA stains), which timm needs to adapt it to ``in_chans``."""
    cfg = backbone.pretrained_cfg
    default = (cfg.get("input_size") or (3,))[0]
    first = cfg.get("first_conv")
    first = first if isinstance(first, str) else (first or [None])[0]
    weight = state.get(f"{first}.weight") if first else None
    if weight is None or weight.ndim != 4:
        return default
    conv = backbone.get_submodule(first)
    if not isinstance(conv, nn.Conv2d):
        return default
    # timm's rule: file channels * model channels * groups = source channels * the conv's input channels
    chans, rest = divmod(weight.shape[1] * in_chans * conv.groups, conv.in_channels)
    return chans if chans > 0 and rest == 0 else default


def _filter_fn(name: str):
    """The checkpoint filter of ``name``'s model family, the one timm applies to its own pretrained weights of it
    (position-embedding resampling, older layouts). timm passes it to its builder without keeping it on the
    model; by timm's convention a family module names it ``checkpoint_filter_fn``. Most families without one need
    none; a few name theirs otherwise (crossvit, densenet, regnet, vgg: conversions of other libraries' layouts),
    so their files must already be in timm's layout."""
    module = sys.modules[timm.models.model_entrypoint(name.split(".")[0]).__module__]
    return getattr(module, "checkpoint_filter_fn", None)


def import_weights(file: str | Path, backbone: str, *, force: bool = False) -> tuple[Path, WeightsReport]:
    """Check that ``file`` (a .safetensors/.pth/.bin state dict or a training checkpoint holding one) loads into
    ``backbone`` with every tensor present, and store its tensors (prefix removed) as safetensors where
    :func:`find_weights` finds them; returns that path and the load's report."""
    src = Path(file).expanduser()
    if not src.is_file():
        raise LocbenchError(f"weights file {src} does not exist")
    if src.suffix.lower() not in WEIGHT_SUFFIXES:
        raise LocbenchError(f"weights file {src}: expected one of {', '.join(WEIGHT_SUFFIXES)}")
    name = check_backbone(backbone)
    dest = weights_dir() / f"{name}.safetensors"
    if dest.exists() and not force:
        raise LocbenchError(f"{dest} exists (weights for {name} were imported before); add --force to replace it")
    state, _ = read_weights(src)
    scratch = timm.create_model(name, num_classes=0)
    own = {k: v for k, v in scratch.state_dict().items() if not k.endswith("num_batches_tracked")}
    prefix, state, _ = strip_prefix(state, set(own))
    chans = _source_chans(scratch, state, 3)
    if chans != 3:
        scratch = timm.create_model(name, num_classes=0, in_chans=chans)
        own = {k: v for k, v in scratch.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = [k for k in own if k not in state]
    wrong = [
        f"{k} {tuple(state[k].shape)} (model {tuple(v.shape)})"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape and "pos_embed" not in k  # resampled to the size at build
    ]
    if missing or wrong:
        detail = "; ".join([*(f"missing {k}" for k in missing[:3]), *wrong[:3]])
        raise LocbenchError(
            f"weights file {src} does not fit timm's {name!r}: {len(missing)} of {len(own)} tensors missing, "
            f"{len(wrong)} of another shape ({detail}); give a state dict of that model"
        )
    report = load_weights(scratch, src, name=name, in_chans=chans)  # the way training will load it
    dest.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    atomic_write(dest, lambda f: f.write(safetensors_bytes(tensors)))
    atomic_write_json(
        dest.with_suffix(".json"),
        {
            "backbone": backbone,
            "timm_name": name,
            "source": str(src.resolve()),
            "sha256": _sha256(src),
            "prefix_removed": prefix,
            "in_chans": chans,
        },
    )
    log.info("imported %s for %s into %s", src, name, dest)
    return dest, report


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
