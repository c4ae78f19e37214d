"""The data stream: train the contrastive encoder once on the whole pool, embed it, cache on disk.

The encoder never changes while labels arrive, so its embedding and the typicality derived from it
are computed once per (pool, encoder config, seed) and shared by every run of a sweep through the
cache. A file lock makes concurrent runs (parallel sweep jobs) wait for one training, not repeat it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pytorch_lightning as pl
import torch

from dualstream.datamodules import PoolPatchData
from dualstream.models.encoder import ContrastiveEncoder
from dualstream.streams.typicality import knn_typicality
from dualstream.trainer import build_trainer

log = logging.getLogger(__name__)


@dataclass
class DataStream:
    """Frozen-encoder view of the pool.

    Attributes:
        embedding: ``(N, D)`` float32, L2-normalised.
        typicality: ``(N,)`` float64, higher = denser neighbourhood.
        seconds: wall time of encoder training + embedding when it was computed.
        from_cache: whether this run loaded it instead of training.
        key: cache key (hash of pool pixels, encoder config and seed).
    """

    embedding: np.ndarray
    typicality: np.ndarray
    seconds: float
    from_cache: bool
    key: str


def cache_key(images: np.ndarray, encoder_cfg: Mapping[str, Any], seed: int) -> str:
    h = hashlib.sha1(np.ascontiguousarray(images).tobytes())
    h.update(json.dumps(dict(encoder_cfg), sort_keys=True, default=str).encode())
    h.update(str(seed).encode())
    return h.hexdigest()[:16]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def train_encoder(images: np.ndarray, encoder_cfg: Mapping[str, Any], trainer_cfg: Mapping[str, Any], seed: int) -> np.ndarray:
    """Train a :class:`ContrastiveEncoder` on ``images`` ``(N, P, P)``; return the ``(N, D)`` embedding."""
    pl.seed_everything(seed, workers=True, verbose=False)
    module = ContrastiveEncoder(**dict(encoder_cfg.get("module", {})))
    data = PoolPatchData(images, steps=int(encoder_cfg["steps"]), batch_size=int(encoder_cfg["batch_size"]))
    trainer = build_trainer(trainer_cfg, int(encoder_cfg["steps"]))
    trainer.fit(module, datamodule=data)
    module.eval()
    with torch.no_grad():
        emb = torch.cat(trainer.predict(module, datamodule=data)).float().cpu().numpy()  # type: ignore[arg-type]
    return emb


def fit_data_stream(
    images: np.ndarray,
    encoder_cfg: Mapping[str, Any],
    trainer_cfg: Mapping[str, Any],
    seed: int,
    cache_dir: str | Path | None = None,
) -> DataStream:
    """Embedding and typicality of the pool, from the cache when this exact encoder was trained before.

    Args:
        images: ``(N, P, P)`` float32 pool patches.
        encoder_cfg: the ``encoder`` config (``steps``, ``batch_size``, ``typicality_k``, ``module``).
        cache_dir: where embeddings are kept between runs; ``None`` disables caching.
    """
    key = cache_key(images, encoder_cfg, seed)
    k = int(encoder_cfg.get("typicality_k", 20))

    def compute() -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        emb = train_encoder(images, encoder_cfg, trainer_cfg, seed)
        return emb, time.perf_counter() - start

    if cache_dir is None:
        emb, seconds = compute()
        return DataStream(emb, knn_typicality(emb, k), seconds, False, key)
    folder = Path(cache_dir) / "encoders" / key
    with _locked(folder.with_suffix(".lock")):
        meta_path = folder / "meta.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            emb = np.load(folder / "embedding.npy")
            log.info("data stream: loaded encoder embedding %s from cache", key)
            return DataStream(emb, knn_typicality(emb, k), float(meta["seconds"]), True, key)
        emb, seconds = compute()
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "embedding.npy", emb)
        # meta.json is written last: its presence marks a complete entry.
        meta_path.write_text(json.dumps({"seconds": seconds, "seed": seed, "encoder": dict(encoder_cfg)}, default=str))
    return DataStream(emb, knn_typicality(emb, k), seconds, False, key)
