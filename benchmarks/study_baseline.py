"""A faithful re-implementation of the study's notebook pipeline, the baseline the benchmarks compare against.

What a typical Kaggle HPA notebook of the study does (and locbench does not): every epoch, every item is
decoded from its PNG with ``cv2.imread`` (the green stain, read as 3-channel BGR, so the stain is repeated
three times), converted to RGB, resized with cv2's default bilinear interpolation, turned into a float tensor
and augmented per sample by torchvision transforms inside the Dataset; a DataLoader with 0 workers batches it;
the loop calls ``loss.item()`` every step and validates through the same slow loader. Written here from that
description, for timing only: nothing from it is used by locbench.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class StudyDataset(Dataset):
    """Green-stain PNGs decoded and resized per item; torchvision augmentation per sample when ``train``."""

    def __init__(self, paths: Sequence[Path], targets: np.ndarray, *, size: int, train: bool) -> None:
        from torchvision import transforms

        self.paths, self.targets, self.size = [str(p) for p in paths], targets.astype(np.float32), size
        self.to_tensor = transforms.ToTensor()
        self.augment = (
            transforms.Compose(
                [
                    transforms.RandomHorizontalFlip(),
                    transforms.RandomVerticalFlip(),
                    transforms.RandomAffine(degrees=20, translate=(0.1, 0.1)),
                ]
            )
            if train
            else None
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = cv2.imread(self.paths[i])
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        img = cv2.resize(img, (self.size, self.size))
        x = self.to_tensor(img)
        if self.augment is not None:
            x = self.augment(x)
        return x, torch.from_numpy(self.targets[i])


def green_paths(table, indices: Sequence[int]) -> list[Path]:
    """The green-stain file of each field ``indices`` of a locbench table."""
    return [table.paths(int(i))["green"] for i in indices]


def study_loader(table, indices: Sequence[int], *, size: int, train: bool, batch_size: int = 32) -> DataLoader:
    """The notebook's loader: 0 workers, shuffled for training.

    A last training batch of one image is dropped (BatchNorm cannot train on it), as locbench's sampler does,
    so that both pipelines do the same work.
    """
    ds = StudyDataset(green_paths(table, indices), table.targets[np.asarray(indices)], size=size, train=train)
    drop = train and len(ds) % batch_size == 1
    return DataLoader(ds, batch_size=batch_size, shuffle=train, num_workers=0, drop_last=drop)


def study_train(
    model: torch.nn.Module, train_loader: DataLoader, val_loader: DataLoader, *, epochs: int, lr: float = 1e-4
) -> dict:
    """The notebook's loop: BCE, Adam, ``.item()`` every step, validation every epoch; returns wall and CPU
    seconds per epoch (0 workers: all of its work is in this process)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    epoch_s, epoch_cpu_s, history = [], [], []
    t_start = time.perf_counter()
    for _ in range(epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        model.train()
        running = 0.0
        for x, y in train_loader:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            running += loss.item() * x.shape[0]
        model.eval()
        val_loss, probs = 0.0, []
        with torch.no_grad():
            for x, y in val_loader:
                out = model(x)
                val_loss += loss_fn(out, y).item() * x.shape[0]
                probs.append(torch.sigmoid(out).numpy())
        epoch_s.append(time.perf_counter() - t0)
        epoch_cpu_s.append(time.process_time() - c0)
        history.append({"train_loss": running / len(train_loader.dataset), "val_loss": val_loss})
    return {
        "epoch_s": epoch_s,
        "epoch_cpu_s": epoch_cpu_s,
        "total_s": time.perf_counter() - t_start,
        "history": history,
    }
