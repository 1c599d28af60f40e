"""Typed run configuration: frozen dataclasses, YAML files of the same shape, ``--set`` overrides.

An unknown key, a wrong type or an unknown backbone / loss / augmentation name fails when the configuration is
loaded, with the list of valid names, not three epochs into training. Defaults are the study's: batch 32,
20 epochs, Adam at 1e-4, 256 px, green channel, standard augmentation, BCE, the 512-unit MLP head.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from locbench.augment import AUGMENTATIONS
from locbench.cells.segment import SEGMENTERS
from locbench.data.channels import STAINS, check_stain_names, resolve_channels
from locbench.data.images import RESIZE_POLICIES
from locbench.errors import LocbenchError
from locbench.losses import LOSSES
from locbench.models import HEADS, TTA_MODES, TTA_PASSES, backbones
from locbench.models.pooling import CELL_MASK, POOLS
from locbench.store.yaml_safe import YamlTooLarge, load_yaml

#: model.mode values: train the whole model, or only a head on a frozen backbone's cached embeddings.
MODEL_MODES = ("finetune", "probe")

#: Exponent floats PyYAML (YAML 1.1) reads as strings (1e-3, 1.5e3: no dot or no exponent sign); YAML 1.2 reads floats.
EXP_FLOAT = re.compile(r"[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+")


@dataclass(frozen=True)
class DataConfig:
    path: str = ""
    """Dataset folder (with train.csv and train/) or a CSV file."""
    format: str | None = None
    """kaggle2021, kaggle2018 or generic; detected from the CSV header when unset."""
    id_col: str | None = None
    """Generic layout: the id column."""
    label_col: str | None = None
    """Generic layout: the label column."""
    label_sep: str | None = None
    """Generic layout: the separator between labels in one cell."""
    pattern: str | None = None
    """Generic layout: image file pattern relative to the data folder, e.g. 'images/{id}_{channel}.tif'."""
    classes: str | None = None
    """A built-in scheme (hpa2021, hpa2018) or a file with one class name per line; labels are class numbers or
    class names (case-insensitive)."""
    group_col: str | None = None
    """A column whose values keep images together in splits (antibody, protein)."""
    stains: dict[str, str | int | None] = field(default_factory=lambda: {s: s for s in STAINS})
    """The four stains (red, green, blue, yellow) as your files name them. With one file per stain, the
    {channel} part of the pattern ({blue: DAPI} reads {id}_DAPI.tif); with one multi-channel file per field (a
    pattern without {channel}), an OME channel name or a 0-based channel index. null: the dataset has no such stain."""
    channels: str = "green"
    """green (the study's, repeated to 3 channels), rgb, rgby, or an explicit comma list like 'green,blue'."""
    img_size: int = 256
    """Side of the square images fed to the model, in pixels (at train.level cell: each cell's crop; with
    model.pool cell_mask: the whole field, which sets the feature grid the cells are pooled on)."""
    resize: str = "pad"
    """How non-square fields become img_size squares: pad (keep the aspect ratio, zeros around), crop (the centre)
    or stretch. Square fields are resized the same way by all three."""
    split: str | None = None
    """A split file (JSON) to reuse; when unset one is made from split_seed and saved in the run folder."""
    split_seed: int = 0
    """Seed of the split; runs with the same split seed see the same images."""
    val_frac: float = 0.2
    """Share of images for validation."""
    test_frac: float = 0.2
    """Share of images held out as the test part (at least 5): never trained on, never used to pick the checkpoint
    or tune thresholds; the best checkpoint scores it once at the end, and reports lead with its numbers. 0: no
    test part (tuned F1 is then cross-fitted on validation; see docs/VALIDATION.md)."""
    cache: bool = True
    """Read images from the preprocessing cache (built on first use) instead of decoding every epoch."""
    cache_dir: str | None = None
    """Where caches live; $LOCBENCH_CACHE or ~/.cache/locbench when unset."""
    workers: int = 2
    """DataLoader worker processes."""
    skip_bad: bool = False
    """Drop unreadable or malformed images (and say how many) instead of stopping."""

    def __post_init__(self) -> None:
        _check(self.img_size >= 16, "data.img_size", "must be at least 16")
        _check(0.0 < self.val_frac < 1.0, "data.val_frac", "must be between 0 and 1")
        _check(0.0 <= self.test_frac < 1.0 - self.val_frac, "data.test_frac", "must leave images for training")
        _check(self.workers >= 0, "data.workers", "must be >= 0")
        _check(self.resize in RESIZE_POLICIES, "data.resize", f"must be one of {', '.join(RESIZE_POLICIES)}")
        # a partial mapping ({blue: DAPI}) keeps the other stains' own names: the stored mapping is always complete
        object.__setattr__(self, "stains", check_stain_names(self.stains))
        _check_seed(self.split_seed, "data.split_seed")
        resolve_channels(self.channels)  # a mistyped stain fails here, not after the run folder is made
        _check(
            self.format in (None, "kaggle2021", "kaggle2018", "generic"),
            "data.format",
            "must be kaggle2021, kaggle2018 or generic",
        )


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "resnet50"
    """Any timm model name, or a preset: the study's (nfnet_l0 → eca_nfnet_l0), ViT/DINO/ConvNeXt (`locbench list
    backbones`)."""
    pretrained: bool = False
    """Start from pretrained weights (from pretrained_file, the local timm/HF cache, or a download)."""
    pretrained_file: str | None = None
    """A local weights file for the backbone (.safetensors, .pth, .bin: timm layout, a plain state dict, or a
    checkpoint holding one under state_dict/model/teacher, keys possibly prefixed module./backbone.)."""
    head: str = "mlp"
    """mlp (features → hidden → ReLU → classes, the study's) or linear."""
    hidden: int = 512
    """Width of the MLP head's hidden layer."""
    dropout: float = 0.0
    """Dropout before the head's last layer."""
    mode: str = "finetune"
    """finetune (train backbone and head, the study's) or probe (a frozen backbone: its embeddings are computed once
    into the embedding cache, under data.cache_dir, and only the head trains on them; model.head linear is a linear
    probe, mlp an MLP probe). A probe trains on unaugmented images: it needs augment.name none."""
    pool: str = "auto"
    """How the backbone's feature map becomes one vector: auto (the backbone's own: the CLS token of a ViT, the
    global average of a CNN), cls (a ViT's CLS token), mean (the mean of a ViT's patch tokens; a CNN's global
    average) or cell_mask (cell-level probes: the backbone sees each whole field at data.img_size, once, and each
    cell's vector is the mean of the feature map under that cell's mask)."""

    def __post_init__(self) -> None:
        _check(self.hidden > 0, "model.hidden", "must be positive")
        _check(0.0 <= self.dropout < 1.0, "model.dropout", "must be in [0, 1)")
        _check(self.mode in MODEL_MODES, "model.mode", f"must be one of {', '.join(MODEL_MODES)}")
        _check(self.pool in POOLS, "model.pool", f"must be one of {', '.join(POOLS)}")

    @property
    def timm_name(self) -> str:
        return backbones.timm_name(self.backbone)


@dataclass(frozen=True)
class LossConfig:
    name: str = "bce"
    """bce, focal or asl (see `locbench list losses`)."""
    focal_alpha: float = 0.25
    """Focal loss: weight of the positives (negatives get 1 - alpha), as in Lin et al. 2017."""
    focal_gamma: float = 2.0
    """Focal loss: focusing parameter."""
    asl_gamma_neg: float = 4.0
    """Asymmetric loss: focusing on negatives."""
    asl_gamma_pos: float = 0.0
    """Asymmetric loss: focusing on positives."""
    asl_clip: float = 0.05
    """Asymmetric loss: probability margin shifted off easy negatives."""
    class_weights: str | list[float] | None = None
    """None, 'balanced' (inverse positive frequency on the training part, mean 1) or one weight per class."""


@dataclass(frozen=True)
class AugmentConfig:
    name: str = "standard"
    """standard, cutmix, mixup or none (see `locbench list augmentations`)."""
    rotate: float = 20.0
    """Maximum rotation in degrees (standard)."""
    translate: float = 0.1
    """Maximum translation as a share of the side (standard)."""
    flip: bool = True
    """Random horizontal and vertical flips (standard)."""
    intensity: float = 0.0
    """Per-channel brightness/contrast jitter magnitude (0 = off); works for any channel count."""
    cutmix_beta: float = 1.0
    """CutMix: Beta(beta, beta) for the box area."""
    cutmix_p: float = 0.5
    """CutMix: probability of mixing a batch."""
    mixup_alpha: float = 0.2
    """MixUp: Beta(alpha, alpha) for the mixing weight."""
    mixup_p: float = 0.5
    """MixUp: probability of mixing a batch."""

    def __post_init__(self) -> None:
        _check(0.0 <= self.cutmix_p <= 1.0, "augment.cutmix_p", "must be in [0, 1]")
        _check(0.0 <= self.mixup_p <= 1.0, "augment.mixup_p", "must be in [0, 1]")
        _check(self.cutmix_beta > 0, "augment.cutmix_beta", "must be positive (Beta(beta, beta) needs beta > 0)")
        _check(self.mixup_alpha > 0, "augment.mixup_alpha", "must be positive (Beta(alpha, alpha) needs alpha > 0)")


@dataclass(frozen=True)
class OptimConfig:
    name: str = "adam"
    """adam (the study's), adamw or sgd."""
    lr: float = 1e-4
    """Peak learning rate."""
    weight_decay: float = 0.0
    """Weight decay (decoupled for adamw)."""
    schedule: str = "constant"
    """constant (the study's) or cosine (with warmup)."""
    warmup_epochs: float = 0.0
    """Linear warmup length in epochs (cosine)."""
    clip_grad: float | None = None
    """Gradient clipping threshold; None = off."""
    clip_mode: str = "auto"
    """norm, agc (adaptive, for NFNets) or auto (agc for NFNets, norm otherwise)."""
    ema: bool = False
    """Keep an exponential moving average of the weights and evaluate it."""
    ema_decay: float = 0.999
    """EMA decay per step."""

    def __post_init__(self) -> None:
        _check(self.lr > 0, "optim.lr", "must be positive")
        _check(self.name in ("adam", "adamw", "sgd"), "optim.name", "must be adam, adamw or sgd")
        _check(self.schedule in ("constant", "cosine"), "optim.schedule", "must be constant or cosine")
        _check(self.clip_mode in ("auto", "norm", "agc"), "optim.clip_mode", "must be auto, norm or agc")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    """Training epochs."""
    batch_size: int = 32
    """Images per batch (per process under DDP)."""
    seed: int = 0
    """Seed of weights, data order and augmentation; same seed, same numbers on CPU."""
    device: str = "auto"
    """auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, ..."""
    amp: str = "auto"
    """Mixed precision: auto (bf16 on CUDA where supported, else fp16), bf16, fp16 (with a GradScaler) or off. Used
    on CUDA only, unless ``gpu_paths_on_cpu``."""
    channels_last: str = "auto"
    """auto (on CUDA, except for NFNets, which slow down), on (any device), off."""
    gpu_paths_on_cpu: bool = False
    """Testing aid: on a CPU, take the code paths a CUDA run takes (``amp``, auto = bf16, and fp16's GradScaler;
    ``channels_last`` auto as on CUDA; loader workers also when reading the cache), to find their bugs without a
    GPU. Slower than a plain CPU run; results differ from float32 by rounding (docs/PERFORMANCE.md)."""
    compile: bool = False
    """torch.compile the model."""
    early_stop: int = 0
    """Stop after this many epochs without a better val mAP (0 = off)."""
    max_steps: int | None = None
    """Stop each epoch after this many steps (quick checks); null (the default) = no limit."""
    level: str = "image"
    """image (one prediction per field) or cell (one per segmented cell)."""

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "train.epochs", "must be at least 1")
        _check(self.batch_size >= 1, "train.batch_size", "must be at least 1")
        _check_seed(self.seed, "train.seed")
        _check(self.max_steps is None or self.max_steps >= 1, "train.max_steps", "must be at least 1 (null = no limit)")
        _check(self.amp in ("auto", "bf16", "fp16", "off"), "train.amp", "must be auto, bf16, fp16 or off")
        _check(self.channels_last in ("auto", "on", "off"), "train.channels_last", "must be auto, on or off")
        _check(self.level in ("image", "cell"), "train.level", "must be image or cell")


@dataclass(frozen=True)
class CellConfig:
    masks: str = "auto"
    """Cell masks for cell-level runs: auto (the dataset's masks/ folder, else segment), segment, or a folder."""
    backend: str = "watershed"
    """Segmentation backend when masks are made here (see `locbench segment`); cached under data.cache_dir."""
    margin: float = 0.1
    """Context kept around a cell's box in its crop, as a fraction of the box's longer side on each side."""
    masked: bool = False
    """Zero the pixels outside the cell in its crop (neighbours' signal would otherwise leak into its label)."""
    blend: float = 0.0
    """Weight of an image-level run's field probabilities in each cell's prediction (0 = the cell model alone)."""
    negative: str = "max"
    """Negative-class rule on cell predictions: max (p_neg = max(p_neg, 1 - max other p)) or none."""

    def __post_init__(self) -> None:
        _check(bool(self.masks), "cell.masks", "must be auto, segment or a mask folder")
        _check(self.margin >= 0.0, "cell.margin", "must be >= 0")
        _check(0.0 <= self.blend <= 1.0, "cell.blend", "must be in [0, 1]")
        _check(self.negative in ("max", "none"), "cell.negative", "must be max or none")


@dataclass(frozen=True)
class InferConfig:
    tta: str = "none"
    """Test-time augmentation when the run's model predicts (the test part at the end of training, evaluate,
    predict): none; hflip (x2 forward passes); flips (identity, left-right, up-down, both: x4); d8 (the 8 rotations
    and mirrors of the square: x8). Sigmoid probabilities are averaged. With it set, training ends by predicting the
    validation part again with it, and the thresholds are tuned on those probabilities."""

    def __post_init__(self) -> None:
        _check(self.tta in TTA_PASSES, "infer.tta", f"must be one of {', '.join(TTA_MODES)}")


@dataclass(frozen=True)
class LogConfig:
    tensorboard: bool = False
    """Write TensorBoard event files into RUN_DIR/tb (needs the tensorboard package)."""
    mlflow: bool = False
    """Log the run to MLflow (needs the mlflow package): parameters, per-epoch metrics, summary and predictions."""
    mlflow_uri: str | None = None
    """Where MLflow runs go: http://HOST:PORT (a tracking server), a folder such as mlruns (a file store), or any
    MLflow tracking URI; default MLFLOW_TRACKING_URI, else MLflow's own default."""
    mlflow_experiment: str = "locbench"
    """The MLflow experiment the runs are logged under (created when missing)."""
    progress: str = "auto"
    """auto (a bar on a terminal, log lines otherwise), bar or lines."""


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cell: CellConfig = field(default_factory=CellConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, overrides: dict[str, Any]) -> RunConfig:
        """A copy with dotted-key overrides applied (``{"loss.name": "focal"}``), validated."""
        d = self.to_dict()
        for key, value in overrides.items():
            set_dotted(d, key, value)
        return from_dict(d)


def _check(ok: bool, key: str, what: str) -> None:
    if not ok:
        raise LocbenchError(f"config key {key} {what}")


#: Seeds are those numpy's legacy seeding accepts (torch takes more): 0 <= seed < 2**32.
SEED_LIMIT = 2**32


def _check_seed(seed: int, key: str) -> None:
    _check(0 <= seed < SEED_LIMIT, key, f"must be between 0 and {SEED_LIMIT - 1}, got {seed}")


def set_dotted(d: dict, key: str, value: Any) -> None:
    """Set ``d["a"]["b"] = value`` for key ``"a.b"``; unknown sections or keys raise with the valid names."""
    parts = key.split(".")
    node = d
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[:i]) or "the config"
            valid = ", ".join(sorted(node)) if isinstance(node, dict) else "(not a section)"
            raise LocbenchError(f"unknown config key {key!r}: {where} has no {part!r}; valid: {valid}")
        if i == len(parts) - 1:
            node[part] = value
        else:
            node = node[part]


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (ints widen to floats); raise naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except LocbenchError:
                continue
        raise LocbenchError(f"config key {key}: {value!r} is not of type {_type_name(tp)}")
    if tp is type(None):
        if value is None:
            return None
    elif origin is dict:
        key_type, value_type = typing.get_args(tp)
        if isinstance(value, dict):
            return {_coerce(k, key_type, key): _coerce(v, value_type, f"{key}.{k}") for k, v in value.items()}
    elif origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, (list, tuple)):
            return [_coerce(v, inner, key) for v in value]
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and EXP_FLOAT.fullmatch(value.strip()):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise LocbenchError(f"config key {key}: {value!r} is not of type {_type_name(tp)}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise LocbenchError(f"config section {prefix or 'root'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"section {prefix!r}" if prefix else "the config"
        raise LocbenchError(f"unknown config key(s) {', '.join(unknown)} in {where}; valid: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key)
        else:
            kwargs[name] = _coerce(value, tp, key)
    return cls(**kwargs)


def from_dict(d: dict[str, Any]) -> RunConfig:
    """Build and validate a :class:`RunConfig` from a nested mapping (missing keys take defaults)."""
    cfg = _build(RunConfig, d or {}, "")
    validate_names(cfg)
    return cfg


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Load a YAML preset (or the defaults) and apply dotted overrides."""
    d = RunConfig().to_dict()
    if path is not None:
        merge(d, read_yaml(path), where=str(path))
    for key, value in (overrides or {}).items():
        set_dotted(d, key, value)
    return from_dict(d)


def merge(base: dict, extra: dict, where: str = "", prefix: str = "") -> dict:
    """Deep-merge ``extra`` into ``base`` in place; a key not in ``base`` raises naming ``where``."""
    if not isinstance(extra, dict):
        raise LocbenchError(f"{where}: expected a mapping at {prefix or 'top level'}, got {type(extra).__name__}")
    for k, v in extra.items():
        key = f"{prefix}.{k}" if prefix else k
        if k not in base:
            valid = ", ".join(sorted(base))
            raise LocbenchError(f"{where}: unknown config key {key!r}; valid here: {valid}")
        if isinstance(base[k], dict) and isinstance(v, dict):
            merge(base[k], v, where, key)
        else:
            base[k] = v
    return base


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a missing file or a syntax error is a :class:`LocbenchError`."""
    path = Path(path)
    if not path.is_file():
        raise LocbenchError(f"config file {path} not found")
    try:
        data = load_yaml(path.read_text(encoding="utf-8-sig"), where=str(path))
    except YamlTooLarge:
        raise
    except yaml.YAMLError as e:
        raise LocbenchError(f"{path} is not valid YAML: {e}") from None
    except UnicodeDecodeError as e:
        raise LocbenchError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); give a YAML file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LocbenchError(f"{path}: the top level must be a mapping of sections (data, model, ...)")
    return data


def parse_set(items: list[str]) -> dict[str, Any]:
    """Parse ``--set key=value`` items; values are YAML (``0.5`` → float, ``[1, 2]`` → list, ``null``)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise LocbenchError(f"--set {item!r}: expected section.key=value")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = load_yaml(raw, where=f"--set {key.strip()}")
        except YamlTooLarge:
            raise
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def validate_names(cfg: RunConfig) -> None:
    """Check backbone, loss, augmentation and head names against timm and the registries, and that the sections
    agree with each other (a probe trains without augmentation)."""
    LOSSES.get(cfg.loss.name)
    AUGMENTATIONS.get(cfg.augment.name)
    HEADS.get(cfg.model.head)
    backbones.check_backbone(cfg.model.backbone)
    if cfg.train.level == "cell" and cfg.cell.masks in ("auto", "segment"):
        SEGMENTERS.get(cfg.cell.backend)
    if cfg.model.mode == "probe" and cfg.augment.name != "none":
        # embeddings are computed once from the unaugmented images: an augmentation could not act on them, and a
        # sweep axis over augmentations would train the same probe twice under two names
        raise LocbenchError(
            f"config key augment.name={cfg.augment.name} does not apply to model.mode=probe: a probe trains on "
            "embeddings of the unaugmented images, computed once; set augment.name=none (in a sweep, an override "
            "when model.mode is probe), or use model.mode=finetune"
        )
    if cfg.model.mode == "probe" and cfg.infer.tta != "none":
        # the end-of-training pass predicts from the cached embeddings of the unaugmented images
        raise LocbenchError(
            f"config key infer.tta={cfg.infer.tta} does not apply to model.mode=probe: a probe's test part is "
            "predicted from embeddings of the unaugmented images; train with infer.tta=none and evaluate the run "
            f"with `locbench evaluate RUN --tta {cfg.infer.tta}` (it embeds every view from the images)"
        )
    if cfg.model.pool == CELL_MASK and (cfg.model.mode != "probe" or cfg.train.level != "cell"):
        # the per-cell pooling is computed once per field into the embedding cache: only a cell-level probe has one
        wrong = "model.mode=" + cfg.model.mode if cfg.model.mode != "probe" else "train.level=" + cfg.train.level
        raise LocbenchError(
            f"config key model.pool=cell_mask needs model.mode=probe and train.level=cell ({wrong} given): it pools "
            "each cell's mask on a frozen backbone's feature map of the whole field; set both (with augment.name="
            "none), or use model.pool=mean"
        )
    if isinstance(cfg.loss.class_weights, str) and cfg.loss.class_weights != "balanced":
        raise LocbenchError(f"config key loss.class_weights: {cfg.loss.class_weights!r}; use 'balanced' or a list")
