"""Engine parts: checkpoints, seeds, the epoch sampler, device choices, class weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from locbench.config import TrainConfig
from locbench.engine import checkpoint as ckpt
from locbench.engine.data import EpochSampler, to_unit
from locbench.engine.device import Accel, amp_dtype, pick_device, use_channels_last
from locbench.engine.optim import build_scheduler
from locbench.engine.seed import derive_seed
from locbench.errors import LocbenchError
from locbench.losses import class_weights
from locbench.models import quirks


def test_checkpoint_round_trip_keeps_nested_state(tmp_path):
    state = {
        "model": {"w": torch.arange(6.0).view(2, 3), "b": torch.zeros(2, dtype=torch.int64)},
        "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        "pair": (1, "x", None, True),
        "ema": None,
    }
    ckpt.save_checkpoint(tmp_path / "c", state, {"epoch": 4})
    loaded, meta = ckpt.load_checkpoint(tmp_path / "c")
    assert meta["epoch"] == 4 and meta["format_version"] == ckpt.FORMAT_VERSION
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["model"]["b"].dtype == torch.int64
    assert loaded["optimizer"]["state"] == {0: {"step": torch.tensor(3.0)}}  # int keys survive
    assert loaded["optimizer"]["param_groups"] == [{"lr": 0.1, "params": [0]}]
    assert loaded["pair"] == (1, "x", None, True) and loaded["ema"] is None
    with pytest.raises(TypeError, match="cannot store"):
        ckpt.save_checkpoint(tmp_path / "bad", {"f": object()}, {})


def test_corrupt_or_half_written_checkpoints_are_skipped(tmp_path):
    for epoch in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path / f"epoch-{epoch:04d}", {"w": torch.full((4,), float(epoch))}, {"epoch": epoch})
    blob = tmp_path / "epoch-0003.safetensors"
    blob.write_bytes(blob.read_bytes()[:-3])  # truncated
    (tmp_path / "epoch-0002.json").write_text("{")  # torn metadata
    stem, meta = ckpt.latest_good(tmp_path)
    assert stem.name == "epoch-0001" and meta["epoch"] == 1
    with pytest.raises(LocbenchError, match="epoch-0003.safetensors is missing or corrupt"):
        ckpt.load_checkpoint(tmp_path / "epoch-0003")
    assert ckpt.verify(tmp_path / "epoch-0009") is None


def test_prune_keeps_the_newest(tmp_path):
    for epoch in range(1, 5):
        ckpt.save_checkpoint(tmp_path / f"epoch-{epoch:04d}", {"w": torch.zeros(1)}, {})
    ckpt.prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "epoch-0003.json",
        "epoch-0003.safetensors",
        "epoch-0004.json",
        "epoch-0004.safetensors",
    ]
    assert [e for e, _ in ckpt.epoch_checkpoints(tmp_path)] == [4, 3]


def test_checkpoint_from_a_newer_locbench_is_refused(tmp_path):
    ckpt.save_checkpoint(tmp_path / "c", {"w": torch.zeros(1)}, {})
    meta = json.loads((tmp_path / "c.json").read_text())
    meta["format_version"] = ckpt.FORMAT_VERSION + 1
    (tmp_path / "c.json").write_text(json.dumps(meta))
    with pytest.raises(LocbenchError, match="newer locbench"):
        ckpt.load_checkpoint(tmp_path / "c")


def test_derive_seed_is_stable_and_separates_parts():
    # fixed numbers: a change here changes every run's draws (and breaks resuming runs across versions)
    assert derive_seed(0, "epoch", 1) == derive_seed(0, "epoch", 1)
    assert derive_seed(0, "epoch", 1) != derive_seed(0, "epoch", 2) != derive_seed(1, "epoch", 1)
    assert derive_seed(0, "order", 0) != derive_seed(0, "augment", 0)
    assert 0 <= derive_seed("x") < 2**63


def test_epoch_sampler_order_depends_on_seed_and_epoch_only():
    s = EpochSampler(37, seed=0, batch_size=8)
    s.set_epoch(0)
    first = list(s)
    s.set_epoch(1)
    second = list(s)
    s.set_epoch(0)
    assert list(s) == first and first != second
    assert sorted(first) == list(range(37)) and len(s) == 37
    other = EpochSampler(37, seed=1, batch_size=8)
    assert list(other) != first


def test_epoch_sampler_drops_a_last_batch_of_one():
    s = EpochSampler(17, seed=0, batch_size=8)  # 8 + 8 + 1: BatchNorm cannot train on one image
    assert len(s) == 16 and len(set(s)) == 16


def test_epoch_sampler_ddp_shards_are_disjoint_and_equal():
    shards = [list(EpochSampler(37, seed=3, batch_size=8, rank=r, world=2)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 18
    assert not set(shards[0]) & set(shards[1])


def test_devices_and_precision_on_cpu():
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(LocbenchError, match="not a device name"):
        pick_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(LocbenchError, match="CUDA is not available here"):
            pick_device("cuda:1")
        assert pick_device("auto").type in ("cpu", "mps")
    cpu = torch.device("cpu")
    assert amp_dtype("auto", cpu) is None and amp_dtype("bf16", cpu) is None and amp_dtype("off", cpu) is None
    assert amp_dtype("fp16", torch.device("cuda")) == torch.float16
    assert not use_channels_last("auto", cpu, quirks("resnet50"))
    assert use_channels_last("auto", torch.device("cuda"), quirks("resnet50"))
    # NFNets slow down in that layout
    assert not use_channels_last("auto", torch.device("cuda"), quirks("eca_nfnet_l0"))
    assert use_channels_last("on", cpu, quirks("x")) and not use_channels_last("off", torch.device("cuda"), quirks("x"))


def test_gpu_paths_on_cpu_decide_as_cuda_does():
    """train.gpu_paths_on_cpu (a testing aid) makes a CPU take CUDA's precision and layout decisions."""
    cpu = torch.device("cpu")
    assert amp_dtype("auto", cpu, on_cpu=True) == amp_dtype("bf16", cpu, on_cpu=True) == torch.bfloat16
    assert amp_dtype("fp16", cpu, on_cpu=True) == torch.float16 and amp_dtype("off", cpu, on_cpu=True) is None
    assert use_channels_last("auto", cpu, quirks("resnet50"), on_cpu=True)
    assert not use_channels_last("auto", cpu, quirks("eca_nfnet_l0"), on_cpu=True)
    assert not use_channels_last("off", cpu, quirks("resnet50"), on_cpu=True)
    # not on other devices (MPS has neither)
    assert amp_dtype("bf16", torch.device("mps"), on_cpu=True) is None
    tcfg = TrainConfig(amp="fp16", gpu_paths_on_cpu=True)
    assert Accel.for_config(tcfg, cpu, quirks("resnet50")) == Accel(cpu, torch.float16, True)
    assert Accel.for_config(TrainConfig(), cpu, quirks("resnet50")) == Accel(cpu, None, False)


def test_accel_places_the_model_and_its_inputs():
    cpu = torch.device("cpu")
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    x = torch.rand(2, 4, 16, 16)
    plain = Accel(cpu)
    with plain.autocast():
        ref = plain.place(model)(plain.layout(x))
    assert ref.dtype == torch.float32 and not plain.pin and plain.describe() == "float32, contiguous layout"
    accel = Accel(cpu, torch.bfloat16, True)
    assert accel.place(model) is model and model[0].weight.is_contiguous(memory_format=torch.channels_last)
    xl = accel.layout(x)
    assert xl.is_contiguous(memory_format=torch.channels_last) and torch.equal(xl, x)
    with accel.autocast():
        out = model(xl)
    assert out.dtype == torch.bfloat16 and accel.describe() == "bfloat16 autocast, channels_last layout"
    assert torch.allclose(out.float(), ref, atol=0.05)


def test_to_unit():
    assert torch.equal(to_unit(torch.tensor([0, 255], dtype=torch.uint8)), torch.tensor([0.0, 1.0]))
    assert to_unit(torch.tensor([0.25])).dtype == torch.float32


def test_balanced_class_weights_are_inverse_frequency_with_mean_one():
    targets = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 0], [1, 0, 0]], dtype=np.uint8)
    w = class_weights("balanced", targets, 3)
    # positives 4 and 1: raw weights 4/4 = 1 and 4/1 = 4, mean 2.5 -> 0.4 and 1.6; an absent class gets 0
    assert w.tolist() == pytest.approx([0.4, 1.6, 0.0])
    assert class_weights(None, targets, 3) is None
    assert class_weights([1, 2, 3], targets, 3).tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(LocbenchError, match="has 2 values; the data has 3 classes"):
        class_weights([1, 2], targets, 3)


def test_schedules():
    from locbench.config import OptimConfig

    def lrs(ocfg, steps=4, epochs=3):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        sched = build_scheduler(ocfg, opt, steps, epochs)
        out = []
        for _ in range(steps * epochs):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    assert lrs(OptimConfig(lr=1.0)) == [1.0] * 12
    warm = lrs(OptimConfig(lr=1.0, warmup_epochs=1.0))
    assert warm[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0]) and warm[4:] == [1.0] * 8
    cos = lrs(OptimConfig(lr=1.0, schedule="cosine", warmup_epochs=1.0))
    assert cos[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(a >= b for a, b in zip(cos[4:], cos[5:], strict=False)) and cos[-1] < 0.1
