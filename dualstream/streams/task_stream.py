"""The task stream: retrain the segmentation model each round, score the test set and the pool."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pytorch_lightning as pl
import torch

from dualstream.datamodules import LabeledPatchData
from dualstream.disk_cache import locked
from dualstream.models.segmentation import SegmentationModule
from dualstream.streams.uncertainty import foreground_recall, pixel_uncertainty, reduce_per_item
from dualstream.trainer import INFERENCE_KEYS, build_trainer, inference_options, inference_view

log = logging.getLogger(__name__)


class TaskStream:
    """Holds the current round's segmentation model and what it says about the pool.

    Args:
        model_cfg: the ``model`` config (``steps``, ``batch_size``, ``module``, ``uncertainty``).
        trainer_cfg: the ``trainer`` config.
        pool_images: ``(N, P, P)`` float32 candidates (3D blocks: ``(N, D, P, P)``, with
            ``model.module.ndim=3``, which the segment task sets from ``data.patch_depth``).
        test_images, test_masks: ``(T, P, P)`` (or ``(T, D, P, P)``) held-out patches.
        fit_cache: folder where the *first* fit of this stream is cached (``None``: no cache). A run's
            first fit is round 0, trained on the seed's random initial set, which every acquisition of
            that seed shares: the runs of a sweep train it once (a file lock makes parallel runs wait)
            and load it after. The weights, the train loss and the RNG state after the fit are kept,
            so a loaded fit gives the same scores, uncertainties and MC-dropout samples as training.
    """

    def __init__(
        self,
        model_cfg: Mapping[str, Any],
        trainer_cfg: Mapping[str, Any],
        pool_images: np.ndarray,
        test_images: np.ndarray,
        test_masks: np.ndarray,
        fit_cache: str | Path | None = None,
    ):
        self.model_cfg, self.trainer_cfg = model_cfg, trainer_cfg
        self.fit_cache = Path(fit_cache) if fit_cache is not None else None
        self.n_fits = 0
        self.cold = False  # the last pool_uncertainty's model state (topk_when_cold only)
        self.pool_images, self.test_images, self.test_masks = pool_images, test_images, test_masks
        self.module: SegmentationModule | None = None
        self.trainer: pl.Trainer | None = None
        self.data: LabeledPatchData | None = None

    def fit(self, images: np.ndarray, masks: np.ndarray, seed: int) -> float:
        """Train a fresh model on ``(L, P, P)`` labelled images and masks; return the last train loss."""
        self.n_fits += 1
        if self.fit_cache is None or self.n_fits > 1:
            return self._fit(images, masks, seed)
        folder = self.fit_cache / _fit_key(images, masks, seed, self.model_cfg, self.trainer_cfg)
        with locked(folder.with_suffix(".lock")):
            try:
                return self._load_fit(folder, images, masks)
            except FileNotFoundError:
                pass
            except Exception as err:  # a truncated entry (a killed run): rebuild it
                log.warning("task stream: cached fit %s unreadable (%s); training again", folder, err)
            loss = self._fit(images, masks, seed)
            self._save_fit(folder, loss)
            return loss

    def _fit(self, images: np.ndarray, masks: np.ndarray, seed: int) -> float:
        pl.seed_everything(seed, workers=True, verbose=False)
        self._prepare(images, masks)
        assert self.trainer is not None and self.module is not None
        self.trainer.fit(self.module, datamodule=self.data)
        return float(self.trainer.callback_metrics.get("task/train_loss", torch.tensor(float("nan"))))

    def _prepare(self, images: np.ndarray, masks: np.ndarray) -> None:
        steps = int(self.model_cfg["steps"])
        self._labelled = (images, masks)  # for label_recall and the label count (reductions topk_when_cold, topk_then_mean)
        self.module = SegmentationModule(**dict(self.model_cfg.get("module", {})))
        self.data = LabeledPatchData(
            images, masks, self.test_images, self.test_masks, self.pool_images,
            steps=steps, batch_size=int(self.model_cfg["batch_size"]),
            eval_batch_size=inference_options(self.trainer_cfg).predict_batch_size,
        )
        self.trainer = build_trainer(self.trainer_cfg, steps)

    def _save_fit(self, folder: Path, loss: float) -> None:
        assert self.module is not None
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "fit.pt.tmp"
        np_state = np.random.get_state()
        torch.save(
            {
                "state_dict": self.module.state_dict(),
                "loss": loss,
                "torch_rng": torch.get_rng_state(),
                "numpy_rng": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
            },
            tmp,
        )
        os.replace(tmp, folder / "fit.pt")  # atomic: a killed run never leaves half an entry

    def _load_fit(self, folder: Path, images: np.ndarray, masks: np.ndarray) -> float:
        entry = torch.load(folder / "fit.pt", map_location="cpu", weights_only=True)
        self._prepare(images, masks)
        assert self.module is not None
        self.module.load_state_dict(entry["state_dict"])
        torch.set_rng_state(entry["torch_rng"])
        name, keys, pos, has_gauss, gauss = entry["numpy_rng"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        log.info("task stream: first fit loaded from %s", folder)
        return float(entry["loss"])

    def score(self) -> float:
        """Foreground IoU of the current model on the test set (NaN without one: a lab's unlabelled volume)."""
        assert self.trainer is not None, "fit() first"
        if len(self.test_images) == 0:
            return float("nan")
        return float(self.trainer.test(self.module, datamodule=self.data, verbose=False)[0]["test/iou"])

    def _predict_pool(self) -> dict[str, np.ndarray]:
        assert self.trainer is not None, "fit() first"
        with inference_view(self.module, self.trainer_cfg):  # trainer.channels_last / fuse_batchnorm / compile
            outs = self.trainer.predict(self.module, datamodule=self.data)
        return {k: torch.cat([o[k] for o in outs]).float().cpu().numpy() for k in outs[0]}  # type: ignore[index]

    def pool_probabilities(self) -> np.ndarray:
        """``(N, T, P, P)`` float32 foreground probabilities of the pool (``T`` MC samples)."""
        return self._predict_pool()["probs"]

    def pool_uncertainty(self) -> np.ndarray:
        """``(N,)`` per-patch uncertainty, reduced as the ``model.uncertainty`` config says.

        The same pass fills :meth:`pool_extras`: ``margin`` and ``least_confidence`` (identical
        rankings for a binary task: least confidence is half the margin score per pixel), ``bald``
        (with MC dropout), ``task_embedding`` ``(N, F)``, ``grad_embedding`` ``(N, w + 1)`` and
        ``foreground`` ``(N,)`` (share of each patch's pixels predicted foreground).
        """
        u = dict(self.model_cfg.get("uncertainty", {}))
        measure = u.get("measure", "entropy")
        reduction = u.get("reduction", "mean")
        if reduction == "topk_then_mean":  # the label count decides before the pass
            reduction = "topk_mean" if len(self._labelled[0]) < int(u.get("topk_until", 16)) else "mean"
        # topk_when_cold: both reductions in one pass; which one, the model's recall on its own labels decides
        reduce = PerBatchReduction(measure, "mean" if reduction == "topk_when_cold" else reduction, u.get("topk", 0.1),
                                   also_topk=reduction == "topk_when_cold")
        assert self.trainer is not None, "fit() first"
        # Reduced batch by batch (a callback), so the pool's (N, T, P, P) probabilities never exist at once.
        self.trainer.callbacks.append(reduce)
        try:
            with inference_view(self.module, self.trainer_cfg):  # trainer.channels_last / fuse_batchnorm / compile
                self.trainer.predict(self.module, datamodule=self.data, return_predictions=False)
        finally:
            self.trainer.callbacks.remove(reduce)
        out = reduce.result()
        if reduction == "topk_when_cold":
            recall = self.label_recall()
            self.cold = bool(recall < float(u.get("cold_ratio", 0.25)))  # NaN (no labelled foreground): not cold
            if self.cold:
                log.info("task stream: the model finds %.1f%% of its labels' foreground pixels: cold, uncertainty "
                         "from the top %.0f%% of each patch's pixels", 100 * recall, 100 * float(u.get("topk", 0.1)))
                out.update({k[len("topk:"):]: v for k, v in out.items() if k.startswith("topk:")})
        self._extras = {k: out[k] for k in ("margin", "least_confidence", "task_embedding", "grad_embedding", "foreground", "bald") if k in out}
        return out[measure]

    def label_recall(self, batch: int = 64) -> float:
        """Share of the labelled foreground pixels the current model predicts (p >= 0.5); NaN without any."""
        images, masks = self._labelled
        predicted = [self._masks_of(images[i:i + batch]) for i in range(0, len(images), batch)]
        return foreground_recall(np.concatenate(predicted), masks)

    def predict_masks(self, indices: np.ndarray) -> np.ndarray:
        """``(B, P, P)`` (3D: ``(B, D, P, P)``) uint8 0/1 masks the current model predicts for pool items ``indices`` (p >= 0.5)."""
        return self._masks_of(self.pool_images[np.asarray(indices)])

    def _masks_of(self, images: np.ndarray) -> np.ndarray:
        """``(B, P, P)`` (3D: ``(B, D, P, P)``) uint8 0/1 masks the current model predicts for ``images`` (p >= 0.5), in one pass."""
        assert self.module is not None, "fit() first"
        self.module.eval()
        x = torch.from_numpy(np.ascontiguousarray(images))[:, None]
        with torch.no_grad():
            probs = torch.sigmoid(self.module(x.to(self.module.device)))
        return (probs[:, 0] >= 0.5).cpu().numpy().astype(np.uint8)

    def pool_extras(self) -> dict[str, np.ndarray]:
        """Arrays computed by the last :meth:`pool_uncertainty` call, for ``PoolView.extras``."""
        return dict(getattr(self, "_extras", {}))


class PerBatchReduction(pl.Callback):
    """Reduces each predict batch's probabilities to per-item scores as it comes (see :meth:`TaskStream.pool_uncertainty`).

    Memory grows with the batch, not with the pool: per item only the scores, the ``(F,)`` bottleneck
    and the ``(w + 1,)`` gradient embedding are kept. The scores are those of :func:`patch_uncertainty`
    on the whole pool, item by item (each item's reduction reads that item's pixels only).
    """

    def __init__(self, measure: str, reduction: str, topk: float, also_topk: bool = False):
        self.measure, self.reduction, self.topk, self.also_topk = measure, reduction, topk, also_topk
        self.parts: dict[str, list[np.ndarray]] = {}

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: D102
        probs = outputs["probs"].float().cpu().numpy()
        scores = {
            "task_embedding": outputs["features"].float().cpu().numpy(),
            "grad_embedding": outputs["grad"].float().cpu().numpy(),
            # (B,) predicted foreground share (pixels, or a block's voxels, with mean p >= 0.5), for foreground_random
            "foreground": (probs.mean(axis=1) >= 0.5).mean(axis=tuple(range(-(probs.ndim - 2), 0))).astype(np.float64),
        }
        if self.measure == "bald" and probs.shape[1] < 2:
            pixel_uncertainty(probs, "bald")  # raises the clear error
        for m in ("margin", "entropy", "bald") if probs.shape[1] > 1 else ("margin", "entropy"):
            pixel = pixel_uncertainty(probs, m)  # one per-pixel map per measure, however many reductions read it
            scores[m] = reduce_per_item(pixel, self.reduction, self.topk)
            if self.also_topk:  # "topk:<measure>": the same map reduced by topk_mean, for topk_when_cold
                scores["topk:" + m] = reduce_per_item(pixel, "topk_mean", self.topk)
        scores["least_confidence"] = 0.5 * scores["margin"]
        if self.also_topk:
            scores["topk:least_confidence"] = 0.5 * scores["topk:margin"]
        for key, value in scores.items():
            self.parts.setdefault(key, []).append(value)

    def result(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) for k, v in self.parts.items()}


def _fit_key(images: np.ndarray, masks: np.ndarray, seed: int, model_cfg: Mapping[str, Any], trainer_cfg: Mapping[str, Any]) -> str:
    """Hash of everything a fit depends on: the labelled data, the seed, the model and trainer configs."""
    h = hashlib.sha1(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(masks).tobytes())
    model = {k: v for k, v in dict(model_cfg).items() if k != "uncertainty"}  # read after the fit only
    # strategy only drives the encoder's fit (this one is single-device), the inference keys only the predicts
    # after it: left out, so older keys still match
    trainer = {k: v for k, v in dict(trainer_cfg).items() if k not in ("cpu_threads", "strategy", *INFERENCE_KEYS)}
    h.update(json.dumps([model, trainer, int(seed), torch.__version__], sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]
