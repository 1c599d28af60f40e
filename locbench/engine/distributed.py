"""Data-parallel training under torchrun in one place: this process's rank, its device, the wrapped model and the
points where the ranks meet."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as td
from torch import nn

from locbench.engine.device import pick_device


@dataclass
class DistEnv:
    """torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK); a single process when absent."""

    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> DistEnv:
        return cls(
            int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        )

    @property
    def main(self) -> bool:
        """Rank 0: the process that validates and writes the run folder."""
        return self.rank == 0

    def device(self, setting: str) -> torch.device:
        """This process's device for ``train.device``; joins the process group first when there are several."""
        if self.world == 1:
            return pick_device(setting)
        if not td.is_initialized():
            td.init_process_group("nccl" if torch.cuda.is_available() and setting != "cpu" else "gloo")
        if torch.cuda.is_available() and setting != "cpu":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` as the forward pass of this process sees it: in DistributedDataParallel when there are
        several processes. Keep ``model`` itself for checkpoints, EMA and clipping (same parameters)."""
        if self.world == 1:
            return model
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def barrier(self) -> None:
        if self.world > 1:
            td.barrier()

    def from_main(self, flag: bool, device: torch.device) -> bool:
        """Rank 0's ``flag`` on every rank (the others' value is ignored)."""
        if self.world == 1:
            return flag
        t = torch.tensor([int(flag)], device=device)
        td.broadcast(t, 0)
        return bool(t.item())

    def close(self) -> None:
        """Every rank waits for rank 0's last writes, then they leave the group together: a rank that exits while
        another still holds gloo connections aborts ("terminate called without an active exception")."""
        if self.world > 1:
            td.barrier()
            td.destroy_process_group()
