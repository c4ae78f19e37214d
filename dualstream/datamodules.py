"""LightningDataModules over patch arrays: 2D tiles ``(N, P, P)`` or 3D blocks ``(N, D, P, P)``
(``data.patch_depth > 1``), batched with one channel axis, ``(B, 1, P, P)`` / ``(B, 1, D, P, P)``.

Training loaders draw a fixed number of samples with replacement (``steps * batch_size``), so one
epoch is the whole training however few patches are labelled; evaluation loaders keep pool order.

In-memory arrays are wrapped whole (``TensorDataset``, no copy); a disk pool
(:class:`dualstream.pool_store.PatchStore`) is read a batch at a time (:class:`LazyPatches`), with
the same draws and the same batches.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, TensorDataset


def _images(arr: np.ndarray) -> torch.Tensor:
    """``(N, P, P)`` -> float32 tensor ``(N, 1, P, P)``; 3D blocks ``(N, D, P, P)`` -> ``(N, 1, D, P, P)``."""
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[:, None]


class LazyPatches(Dataset):
    """Items of one or more ``(N, ...)`` arrays or pool stores, read when a batch asks for them.

    Each item is a tuple of float32 tensors with one channel axis (like ``TensorDataset(_images(a), ...)``);
    ``__getitems__`` (the DataLoader's batched fetch) reads a whole batch with one indexed read per array.
    """

    def __init__(self, *arrays: Any):
        if not arrays or any(len(a) != len(arrays[0]) for a in arrays):
            raise ValueError(f"LazyPatches needs arrays of one length, got {[len(a) for a in arrays]}")
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return tuple(_images(a[index : index + 1])[0] for a in self.arrays)

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, ...]]:
        idx = np.asarray(indices, dtype=np.int64)
        parts = [_images(a[idx]) for a in self.arrays]
        return [tuple(p[j] for p in parts) for j in range(len(idx))]


def patch_dataset(*arrays: Any) -> Dataset:
    """``TensorDataset`` over in-memory arrays (as before), :class:`LazyPatches` when any is a store."""
    if all(isinstance(a, np.ndarray) for a in arrays):
        return TensorDataset(*(_images(a) for a in arrays))
    return LazyPatches(*arrays)


def _fixed_steps_loader(dataset: Dataset, steps: int, batch_size: int) -> DataLoader:
    sampler = RandomSampler(dataset, replacement=True, num_samples=steps * batch_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True)


class PoolPatchData(pl.LightningDataModule):
    """All pool patches, unlabelled: trains the contrastive encoder and is embedded by it.

    Args:
        images: ``(N, P, P)`` float32 in ``[0, 1]`` (or a pool store of them).
    """

    def __init__(self, images: np.ndarray, steps: int, batch_size: int, eval_batch_size: int = 256):
        super().__init__()
        self.data = patch_dataset(images)
        self.steps, self.batch_size, self.eval_batch_size = steps, min(batch_size, len(images)), eval_batch_size

    def train_dataloader(self) -> DataLoader:
        return _fixed_steps_loader(self.data, self.steps, self.batch_size)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=self.eval_batch_size)


class LabeledPatchData(pl.LightningDataModule):
    """Labelled patches for the segmentation model, the test set, and the pool to score.

    Args:
        images, masks: labelled ``(L, P, P)`` images (float32) and answered masks (``{0, 1}``).
        test_images, test_masks: held-out ``(T, P, P)`` patches (arrays or pool stores).
        pool_images: ``(N, P, P)`` patches to predict for uncertainty (an array or a pool store).
    """

    def __init__(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        test_images: np.ndarray,
        test_masks: np.ndarray,
        pool_images: np.ndarray,
        steps: int,
        batch_size: int,
        eval_batch_size: int = 256,
    ):
        super().__init__()
        self.train_set = patch_dataset(images, masks)
        self.test_set = patch_dataset(test_images, test_masks)
        self.pool_set = patch_dataset(pool_images)
        self.steps, self.batch_size, self.eval_batch_size = steps, batch_size, eval_batch_size

    def train_dataloader(self) -> DataLoader:
        return _fixed_steps_loader(self.train_set, self.steps, self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.pool_set, batch_size=self.eval_batch_size)
