"""The task stream of ``task=detect``: retrain the proposal verifier each round, score test proposals.

Implements the loop's ``TaskModel`` protocol (:class:`dualstream.loop.TaskModel`) over proposals:
``fit`` on answered proposals (True/False), ``score`` = ROI accuracy on the test proposals,
``metrics`` = detection precision / recall / F1 / centroid error of the test proposals it accepts,
``pool_uncertainty`` = binary entropy of its pool probabilities.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from dualstream.errors import ConfigError
from dualstream.matching import detection_scores
from dualstream.models.verifier import VerificationClassifier
from dualstream.proposals import Proposals
from dualstream.streams.uncertainty import bald, binary_entropy
from dualstream.trainer import build_trainer

EVAL_BATCH = 512


def _tensor(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


class VerificationStream:
    """Holds the current round's verifier and what it says about the test and pool proposals.

    Args:
        verifier_cfg: the ``task.verifier`` config (``steps``, ``batch_size``, ``width``, ``lr``, ...).
        trainer_cfg: the ``trainer`` config.
        pool_crops: ``(N, 2, C, C)`` float32 pool proposal crops (what the loop queries).
        test: the test proposals (crops, their True/False and their matching to ``test_objects``).
        test_objects_nm: ``(K, 3)`` centroids in nm of all ground-truth objects of the test sections.
        metric: the round's score: ``f1`` of the test proposals the verifier accepts (default), or
            ``roi_accuracy`` (share of test proposals judged right; on imbalanced proposal sets it sits
            near the share of False proposals whatever the verifier does, see ``always_false_accuracy``).
    """

    def __init__(
        self,
        verifier_cfg: Mapping[str, Any],
        trainer_cfg: Mapping[str, Any],
        pool_crops: np.ndarray,
        test: Proposals,
        test_objects_nm: np.ndarray,
        metric: str = "f1",
    ):
        if metric not in ("f1", "roi_accuracy"):
            raise ConfigError(f"task.metric={metric!r} is not a detect score; use f1 or roi_accuracy")
        self.metric = metric
        self.cfg, self.trainer_cfg = verifier_cfg, trainer_cfg
        self.pool_set = TensorDataset(_tensor(pool_crops))
        self.test = test
        self.test_set = TensorDataset(_tensor(test.crops), _tensor(test.truth))
        self.test_objects_nm = test_objects_nm
        self.module: VerificationClassifier | None = None
        self.trainer: pl.Trainer | None = None

    def fit(self, images: np.ndarray, masks: np.ndarray, seed: int) -> float:
        """Train a fresh verifier on answered proposals; return the last train loss.

        Args:
            images: ``(L, 2, C, C)`` float32 crops of the answered proposals.
            masks: ``(L,)`` uint8 answers, 1 = True. All one class is fine (BCE still trains; the
                verifier then learns that class's prior).
        """
        pl.seed_everything(seed, workers=True, verbose=False)
        steps, batch = int(self.cfg["steps"]), int(self.cfg["batch_size"])
        keys = ("width", "dropout", "lr", "weight_decay", "augment")  # the rest (steps, mc_samples) is the stream's
        self.module = VerificationClassifier(**{k: self.cfg[k] for k in keys if k in self.cfg})
        train = TensorDataset(_tensor(images), _tensor(np.asarray(masks).reshape(-1)))
        # A fixed number of draws with replacement: one epoch is the whole training, however few answers.
        loader = DataLoader(train, batch_size=batch, sampler=RandomSampler(train, replacement=True, num_samples=steps * batch))
        self.trainer = build_trainer(self.trainer_cfg, steps)
        self.trainer.fit(self.module, train_dataloaders=loader)
        return float(self.trainer.callback_metrics.get("verifier/train_loss", torch.tensor(float("nan"))))

    def _predict(self, dataset: TensorDataset) -> np.ndarray:
        assert self.trainer is not None and self.module is not None, "fit() first"
        out = self.trainer.predict(self.module, dataloaders=DataLoader(dataset, batch_size=EVAL_BATCH))
        return torch.cat(out).float().cpu().numpy()  # type: ignore[arg-type]

    def score(self) -> float:
        """The configured metric: F1 of the accepted test proposals, or ROI accuracy."""
        if self.metric == "f1":
            return float(self.metrics()["f1"])
        return self.roi_accuracy()

    def roi_accuracy(self) -> float:
        """ROI accuracy: share of test proposals whose True/False the verifier gets right (torchmetrics)."""
        assert self.trainer is not None, "fit() first"
        loader = DataLoader(self.test_set, batch_size=EVAL_BATCH)
        return float(self.trainer.test(self.module, dataloaders=loader, verbose=False)[0]["test/accuracy"])

    def test_probabilities(self) -> np.ndarray:
        """``(T,)`` float32 probability that each test proposal is True."""
        return self._predict(TensorDataset(self.test_set.tensors[0]))

    def metrics(self) -> dict[str, float]:
        """Detection quality of the test proposals the verifier accepts (``p >= 0.5``).

        ``precision``, ``recall``, ``f1`` against the test sections' ground-truth objects (each
        object counted once) and ``centroid_distance_nm`` of the matched pairs; see
        :func:`dualstream.matching.detection_scores`.
        """
        accepted = self.test_probabilities() >= 0.5
        scores = detection_scores(accepted, self.test.object_index, self.test.iou, self.test.centroids_nm, self.test_objects_nm)
        out = {k: scores[k] for k in ("precision", "recall", "f1", "centroid_distance_nm")}
        truth = self.test_set.tensors[1].numpy()
        out["roi_accuracy"] = float(((accepted.astype(np.float32)) == truth).mean()) if len(truth) else float("nan")
        out["always_false_accuracy"] = float((truth == 0).mean()) if len(truth) else float("nan")
        return out

    def pool_probabilities(self) -> np.ndarray:
        """``(N,)`` float32 probability that each pool proposal is True."""
        return self._predict(self.pool_set)

    def _pool_features(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One pass over the pool (eval mode): ``(N, F)`` features, ``(N,)`` probabilities, and with
        ``mc_samples > 1`` ``(N, T)`` MC-dropout probabilities (else ``None``)."""
        assert self.module is not None, "fit() first"
        module = self.module.eval()
        device = next(module.parameters()).device
        samples = int(self.cfg.get("mc_samples", 1))
        feats, probs, mc = [], [], []
        with torch.no_grad():
            for (x,) in DataLoader(self.pool_set, batch_size=EVAL_BATCH):
                f = module.embed(x.to(device)).float()
                feats.append(f.cpu())
                probs.append(torch.sigmoid(module.head(f)[:, 0]).cpu())
                if samples > 1:
                    # Only the dropout before the head is stochastic: features are computed once.
                    module.dropout.train()
                    mc.append(torch.stack([torch.sigmoid(module.head(module.dropout(f))[:, 0]) for _ in range(samples)], 1).cpu())
                    module.dropout.eval()
        return torch.cat(feats).numpy(), torch.cat(probs).numpy(), torch.cat(mc).numpy() if mc else None

    def pool_uncertainty(self) -> np.ndarray:
        """``(N,)`` binary entropy (bits) of the pool probabilities: 1 at p = 0.5.

        The same pass fills :meth:`pool_extras`, so every acquisition of the registry works on
        proposals: ``margin`` ``(N,)`` ``1 - |2p - 1|``, ``least_confidence`` ``(N,)`` (half the
        margin, the same ranking), ``task_embedding`` ``(N, F)`` the verifier's pooled features, and
        ``grad_embedding`` ``(N, F + 1)`` (BADGE: the BCE gradient w.r.t. the head's weights and bias
        under the predicted label, ``(p - [p >= 0.5]) * [features, 1]``), ``foreground`` ``(N,)`` = p;
        with ``mc_samples > 1`` also ``bald`` ``(N,)`` (MC dropout on the head's input).
        """
        feats, p, mc = self._pool_features()
        margin = (1.0 - np.abs(2.0 * p - 1.0)).astype(np.float64)
        residual = (p - (p >= 0.5)).astype(np.float32)[:, None]
        self._extras = {
            "margin": margin,
            "least_confidence": 0.5 * margin,
            "task_embedding": feats,
            "grad_embedding": np.concatenate([residual * feats, residual], axis=1),
            "foreground": p.astype(np.float64),  # (N,) p(True): the proposal-level foreground share
        }
        if mc is not None:
            self._extras["bald"] = bald(mc).astype(np.float64)
        return binary_entropy(p).astype(np.float64)

    def pool_extras(self) -> dict[str, np.ndarray]:
        """Arrays computed by the last :meth:`pool_uncertainty` call, for ``PoolView.extras``."""
        return dict(getattr(self, "_extras", {}))
