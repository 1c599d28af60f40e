"""Device, precision and memory-format choices."""

from __future__ import annotations

import logging
import resource
import sys
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from locbench.config import TrainConfig
from locbench.errors import LocbenchError
from locbench.models.quirks import Quirks

log = logging.getLogger(__name__)


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` → cuda, then mps, then cpu; an unavailable explicit device is a clear error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise LocbenchError(f"train.device {name!r} is not a device name (auto, cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LocbenchError(f"train.device {name!r} asked for, but CUDA is not available here; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise LocbenchError(f"train.device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return dev


def describe_device(setting: str, device: torch.device) -> str:
    """The device a run uses, in words; for ``auto`` falling back to the CPU, why (no CUDA, no MPS)."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type != "cpu":
        return str(device)
    text = f"cpu ({torch.get_num_threads()} threads)"
    if setting != "auto":
        return text
    if torch.version.cuda is None:
        cuda = "this torch build has no CUDA support"
    else:
        cuda = f"no CUDA device visible to torch {torch.__version__} (check nvidia-smi and CUDA_VISIBLE_DEVICES)"
    mps = "no MPS (Apple GPU)" if sys.platform == "darwin" else "MPS is macOS only"
    return f"{text}; train.device auto found no GPU: {cuda}; {mps}"


def amp_dtype(setting: str, device: torch.device, *, on_cpu: bool = False) -> torch.dtype | None:
    """The autocast dtype for ``train.amp``, or None for full precision.

    Mixed precision is used on CUDA; on a CPU only with ``on_cpu`` (``train.gpu_paths_on_cpu``, a testing aid),
    where ``auto`` means bf16.
    """
    if setting == "off":
        return None
    if device.type == "cpu" and on_cpu:
        return torch.float16 if setting == "fp16" else torch.bfloat16
    if device.type != "cuda":
        if setting in ("bf16", "fp16"):
            log.info(
                "mixed precision %s is only used on CUDA (or with train.gpu_paths_on_cpu); float32 on %s",
                setting,
                device,
            )
        return None
    if setting == "fp16":
        return torch.float16
    if setting == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def use_channels_last(setting: str, device: torch.device, quirks: Quirks, *, on_cpu: bool = False) -> bool:
    """channels_last helps convolutions on CUDA tensor cores, unless the model's quirks say it does not (NFNets);
    ``auto`` decides so on a CPU too with ``on_cpu`` (``train.gpu_paths_on_cpu``); ``on`` uses it on any device."""
    if setting == "on":
        return True
    if setting == "off":
        return False
    return (device.type == "cuda" or (device.type == "cpu" and on_cpu)) and quirks.channels_last


@dataclass(frozen=True)
class Accel:
    """How a model runs on its device: the autocast dtype (None: float32) and the memory layout of its weights and
    inputs. Training, validation, the test part, ``evaluate`` and ``predict`` all run a model through one of these,
    so what a GPU run does is decided here once (and done on a CPU too with ``train.gpu_paths_on_cpu``)."""

    device: torch.device
    dtype: torch.dtype | None = None
    channels_last: bool = False

    @classmethod
    def for_config(cls, tcfg: TrainConfig, device: torch.device, quirks: Quirks) -> Accel:
        """What ``train.amp``, ``train.channels_last`` and ``train.gpu_paths_on_cpu`` give on ``device``."""
        on_cpu = tcfg.gpu_paths_on_cpu
        return cls(
            device,
            amp_dtype(tcfg.amp, device, on_cpu=on_cpu),
            use_channels_last(tcfg.channels_last, device, quirks, on_cpu=on_cpu),
        )

    @property
    def pin(self) -> bool:
        """Whether loaders should pin host memory (only CUDA copies from it asynchronously)."""
        return self.device.type == "cuda"

    def place(self, model: nn.Module) -> nn.Module:
        """``model`` moved to the device, in the memory layout (in place; returned for chaining)."""
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """A float batch on the device in the model's memory layout."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self) -> AbstractContextManager:
        """Autocast to the dtype on the device, or nothing for float32."""
        return torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None else nullcontext()

    def describe(self) -> str:
        """The settings in words, for the log."""
        dtype = str(self.dtype).removeprefix("torch.") + " autocast" if self.dtype is not None else "float32"
        return f"{dtype}, {'channels_last' if self.channels_last else 'contiguous'} layout"


def reset_peak_memory(device: torch.device) -> None:
    """Measure peak CUDA memory from now on, so that a process training several runs (a sweep worker, a benchmark)
    reports each run's own peak; the CPU's peak resident memory cannot be reset."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak accelerator memory (CUDA) or peak resident memory of this process (CPU), in MB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024
