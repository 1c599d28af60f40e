"""Device, precision and memory-format choices."""

from __future__ import annotations

import logging
import resource
import sys

import torch

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


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.amp``, or None for full precision."""
    if setting == "off" or device.type != "cuda":
        if setting in ("bf16", "fp16") and device.type != "cuda":
            log.info("mixed precision %s is only used on CUDA; training in float32 on %s", setting, device)
        return None
    if setting == "fp16":
        return torch.float16
    if setting == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def use_channels_last(setting: str, device: torch.device, quirks: Quirks) -> bool:
    """channels_last helps convolutions on CUDA tensor cores, unless the model's quirks say it does not (NFNets)."""
    if setting == "on":
        return True
    if setting == "off":
        return False
    return device.type == "cuda" and quirks.channels_last


def peak_memory_mb(device: torch.device) -> float:
    """Peak accelerator memory (CUDA) or peak resident memory of this process (CPU), in MB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024
