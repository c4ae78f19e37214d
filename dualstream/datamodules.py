"""LightningDataModules over in-memory patch arrays: 2D tiles ``(N, P, P)`` or 3D blocks ``(N, D, P, P)``
(``data.patch_depth > 1``), batched with one channel axis, ``(B, 1, P, P)`` / ``(B, 1, D, P, P)``.

Training loaders draw a fixed number of samples with replacement (``steps * batch_size``), so one
epoch is the whole training however few patches are labelled; evaluation loaders keep pool order.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, RandomSampler, TensorDataset


def _images(arr: np.ndarray) -> torch.Tensor:
    """``(N, P, P)`` -> float32 tensor ``(N, 1, P, P)``; 3D blocks ``(N, D, P, P)`` -> ``(N, 1, D, P, P)``."""
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[:, None]


def _fixed_steps_loader(dataset: TensorDataset, steps: int, batch_size: int) -> DataLoader:
    sampler = RandomSampler(dataset, replacement=True, num_samples=steps * batch_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True)


class PoolPatchData(pl.LightningDataModule):
    """All pool patches, unlabelled: trains the contrastive encoder and is embedded by it.

    Args:
        images: ``(N, P, P)`` float32 in ``[0, 1]``.
    """

    def __init__(self, images: np.ndarray, steps: int, batch_size: int, eval_batch_size: int = 256):
        super().__init__()
        self.data = TensorDataset(_images(images))
        self.steps, self.batch_size, self.eval_batch_size = steps, min(batch_size, len(images)), eval_batch_size

    def train_dataloader(self) -> DataLoader:
        return _fixed_steps_loader(self.data, self.steps, self.batch_size)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=self.eval_batch_size)


class LabeledPatchData(pl.LightningDataModule):
    """Labelled patches for the segmentation model, the test set, and the pool to score.

    Args:
        images, masks: labelled ``(L, P, P)`` images (float32) and answered masks (``{0, 1}``).
        test_images, test_masks: held-out ``(T, P, P)`` patches.
        pool_images: ``(N, P, P)`` patches to predict for uncertainty.
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
        self.train_set = TensorDataset(_images(images), _images(masks))
        self.test_set = TensorDataset(_images(test_images), _images(test_masks))
        self.pool_set = TensorDataset(_images(pool_images))
        self.steps, self.batch_size, self.eval_batch_size = steps, batch_size, eval_batch_size

    def train_dataloader(self) -> DataLoader:
        return _fixed_steps_loader(self.train_set, self.steps, self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.pool_set, batch_size=self.eval_batch_size)
