"""The data stream: train the pool encoder once on the whole pool, embed it, cache on disk.

The encoder (``encoder.name``: ``simclr``, the default contrastive encoder, or ``vae``) never changes
while labels arrive, so its embedding and the typicality derived from it are computed once per
(pool, encoder config, seed) and shared by every run of a sweep through the cache. A file lock makes
concurrent runs (parallel sweep jobs) wait for one training, not repeat it.

The ``encoder.finetune=true`` ablation (ECCV 2020 fine-tuned its encoder with the labels each round)
returns a :class:`FinetunedDataStream` instead: same start, but re-embedded after every round. It
deliberately gives up the frozen reference the method is built on; see that class.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from dualstream.augment import random_dihedral
from dualstream.disk_cache import locked
from dualstream.datamodules import PoolPatchData
from dualstream.errors import ConfigError, DualstreamError
from dualstream.models.encoder import ContrastiveEncoder
from dualstream.models.vae import PatchVAE
from dualstream.pool_store import PatchStore
from dualstream.streams.typicality import knn_typicality, typicality_from_distances
from dualstream.trainer import build_trainer, inference_options, inference_view

log = logging.getLogger(__name__)

#: ``encoder.name`` -> Lightning module class. ``simclr`` is the default when the name is missing.
ENCODERS: dict[str, type[pl.LightningModule]] = {"simclr": ContrastiveEncoder, "vae": PatchVAE}

#: The representation a supervised head sees when fine-tuning (unnormalised; dimension = embedding's).
FEATURES: dict[str, Callable[[Any, torch.Tensor], torch.Tensor]] = {
    "simclr": lambda module, x: module.backbone(x),
    "vae": lambda module, x: module.encode(x)[0],
}

#: Keys that only matter after the initial training: left out of the cache key, so frozen and
#: fine-tuned runs of a seed, and runs with another k of the density, share one trained encoder
#: (and start from the same embedding; typicality is recomputed from it).
POST_TRAINING_KEYS = frozenset({"finetune", "finetune_steps", "finetune_batch_size", "finetune_lr", "typicality_k"})

FROZEN_SCREEN = "screen_encoder.finetune=true: the screen's encoder stays frozen (it is the fixed reference); set it to false"


@dataclass
class DataStream:
    """Frozen-encoder view of the pool.

    Attributes:
        embedding: ``(N, D)`` float32, L2-normalised.
        typicality: ``(N,)`` float64, higher = denser neighbourhood.
        seconds: wall time of encoder training + embedding when it was computed.
        from_cache: whether this run loaded it instead of training.
        key: cache key (hash of pool pixels, encoder config and seed).
        neighbours: ``(distances (N, K) float32, indices (N, K) int32)`` of every item's ``K``
            nearest others in the embedding, for pools big enough that acquisitions would search
            them again (``N >= knn.EXACT_BELOW``; ``None`` below): handed to every acquisition in
            ``PoolView.extras`` (:data:`~dualstream.streams.knn.NEIGHBOUR_KEYS`) and cached on disk
            beside the embedding, so TypiClust, ProbCover and the typicality pass share one search.
        screen_embedding: ``(N, D')`` float32 of a second frozen encoder (``screen_encoder``), read by
            the embedding quality screen only; ``None``: the screen reads ``embedding``
            (:func:`fit_pool_streams`).
    """

    embedding: np.ndarray
    typicality: np.ndarray
    seconds: float
    from_cache: bool
    key: str
    neighbours: tuple[np.ndarray, np.ndarray] | None = None
    screen_embedding: np.ndarray | None = None


def encoder_name(encoder_cfg: Mapping[str, Any]) -> str:
    """``encoder.name`` checked against :data:`ENCODERS` (``simclr`` when unset)."""
    name = str(encoder_cfg.get("name") or "simclr")
    if name not in ENCODERS:
        raise ConfigError(f"encoder.name: unknown encoder {name!r}; choose one of {', '.join(sorted(ENCODERS))} (e.g. encoder=vae)")
    return name


def build_encoder(images: np.ndarray, encoder_cfg: Mapping[str, Any]) -> pl.LightningModule:
    """A fresh, untrained encoder module for ``(N, P, P)`` pool patches, as ``encoder_cfg`` says."""
    name = encoder_name(encoder_cfg)
    kwargs = dict(encoder_cfg.get("module", {}) or {})
    if name == "vae":
        p = int(images.shape[-1])
        if kwargs.get("patch_size") not in (None, p):
            raise ConfigError(f"encoder.module.patch_size={kwargs['patch_size']} does not match the pool's {p}x{p} patches; leave it unset")
        kwargs["patch_size"] = p
        depth = int(kwargs.get("depth", 4))
        if depth < 1 or p % 2**depth:
            raise ConfigError(
                f"encoder.module.depth={depth}: the VAE needs the patch size ({p}) to be a multiple of 2**depth = {2**depth};"
                " lower encoder.module.depth or change data.patch_size"
            )
    return ENCODERS[name](**kwargs)


def cache_key(images: np.ndarray, encoder_cfg: Mapping[str, Any], seed: int) -> str:
    """16 hex digits for (pool pixels, encoder config before training, seed).

    A disk pool (:class:`~dualstream.pool_store.PatchStore`) is keyed by the digest its writer computed,
    so the key never reads the pool; an in-memory pool by its bytes (keys of earlier runs unchanged).
    """
    if isinstance(images, PatchStore):
        h = hashlib.sha1(f"pool_store:{images.shape}:{images.digest}".encode())
    else:
        h = hashlib.sha1(np.ascontiguousarray(images).tobytes())
    cfg = {k: v for k, v in dict(encoder_cfg).items() if k not in POST_TRAINING_KEYS}
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    h.update(str(seed).encode())
    return h.hexdigest()[:16]


def embed(module: pl.LightningModule, images: np.ndarray, trainer_cfg: Mapping[str, Any]) -> np.ndarray:
    """``(N, D)`` float32 embedding of ``images`` by ``module.predict_step`` (eval mode)."""
    module.eval()
    trainer = build_trainer(trainer_cfg, 1)
    options = inference_options(trainer_cfg)  # trainer.channels_last / fuse_batchnorm / compile / predict_batch_size
    with torch.no_grad(), inference_view(module, options):
        out = trainer.predict(module, datamodule=PoolPatchData(images, steps=1, batch_size=1, eval_batch_size=options.predict_batch_size))
    return torch.cat(out).float().cpu().numpy()  # type: ignore[arg-type]


class _RankPoolData(PoolPatchData):
    """The pool for a fit on several devices: each rank draws its own ``steps * batch_size`` samples.

    Lightning would swap the fixed-steps sampler for a ``DistributedSampler`` (one pass over the pool,
    not ``steps`` batches), and every rank restarts from the same global seed, so without this the
    ranks would draw the same patches with the same augmentations. ``batch_size`` is per rank.
    """

    def __init__(self, images: np.ndarray, steps: int, batch_size: int, seed: int):
        super().__init__(images, steps=steps, batch_size=batch_size)
        self.seed = seed

    def train_dataloader(self) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer is not None else 0
        rank_seed = self.seed * 1009 + rank
        torch.manual_seed(rank_seed)  # the augmentations draw from torch's global generator
        sampler = RandomSampler(
            self.data, replacement=True, num_samples=self.steps * self.batch_size, generator=torch.Generator().manual_seed(rank_seed)
        )
        return DataLoader(self.data, batch_size=self.batch_size, sampler=sampler, drop_last=True)


def _train(images: np.ndarray, encoder_cfg: Mapping[str, Any], trainer_cfg: Mapping[str, Any], seed: int) -> tuple[pl.LightningModule, np.ndarray]:
    """Fit the encoder (on ``trainer.devices`` devices with ``trainer.strategy``), then embed the pool.

    ``encoder.batch_size`` is the global batch: on ``W`` processes each draws ``batch_size // W`` patches
    a step, so steps, samples per step and learning rate do not change with the device count (the
    contrastive negatives of a step are per rank, ``2 * batch_size // W - 1``). The ranks end with the
    fit; this process (rank 0, holding rank 0's weights) embeds the pool on one device.
    """
    pl.seed_everything(seed, workers=True, verbose=False)
    module = build_encoder(images, encoder_cfg)
    steps, batch_size = int(encoder_cfg["steps"]), int(encoder_cfg["batch_size"])
    trainer = build_trainer(trainer_cfg, steps, progress=f"encoder ({encoder_name(encoder_cfg)})", distributed=True)
    world = int(trainer.world_size)
    if world > 1:
        if batch_size % world:
            log.warning("encoder.batch_size=%d is not a multiple of the %d devices; each draws %d", batch_size, world, max(1, batch_size // world))
        data: PoolPatchData = _RankPoolData(images, steps, max(1, batch_size // world), seed)
    else:
        data = PoolPatchData(images, steps=steps, batch_size=batch_size)
    trainer.fit(module, datamodule=data)
    return module, embed(module, images, trainer_cfg)


def train_encoder(images: np.ndarray, encoder_cfg: Mapping[str, Any], trainer_cfg: Mapping[str, Any], seed: int) -> np.ndarray:
    """Train the ``encoder.name`` encoder on ``images`` ``(N, P, P)``; return the ``(N, D)`` embedding."""
    return _train(images, encoder_cfg, trainer_cfg, seed)[1]


class _FinetuneModule(pl.LightningModule):
    """Encoder + one linear head, trained on labelled patches; predicts the encoder's own embedding.

    ``kind="share"``: targets are foreground shares in ``[0, 1]``, MSE on the sigmoid output.
    ``kind="binary"``: targets are 0/1 answers, BCE on the logit. Views: random flips / rot90, which
    change neither target.
    """

    def __init__(self, encoder: pl.LightningModule, features: Callable, dim: int, kind: str, lr: float, weight_decay: float):
        super().__init__()
        self.encoder = encoder
        self.features = features
        self.head = nn.Linear(dim, 1)
        self.kind, self.lr, self.weight_decay = kind, lr, weight_decay

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        x, y = batch
        (x,) = random_dihedral(x)
        logit = self.head(self.features(self.encoder, x)).squeeze(1)
        if self.kind == "binary":
            loss = F.binary_cross_entropy_with_logits(logit, y)
        else:
            loss = F.mse_loss(torch.sigmoid(logit), y)
        self.log("encoder/finetune_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


def finetune_targets(answers: np.ndarray) -> tuple[np.ndarray, str]:
    """Supervised targets of the fine-tuning head from the loop's answers.

    Masks ``(L, P, P)`` (dense task) -> foreground share of each mask, ``kind="share"``;
    True/False ``(L,)`` (proposal task) -> 0/1, ``kind="binary"``.
    """
    answers = np.asarray(answers)
    if answers.ndim == 1:
        return (answers > 0).astype(np.float32), "binary"
    return (answers.reshape(len(answers), -1) > 0).mean(axis=1).astype(np.float32), "share"


@dataclass(eq=False)
class FinetunedDataStream(DataStream):
    """The ``encoder.finetune=true`` ablation: a data stream whose encoder also learns from the labels.

    Starts exactly like the frozen :class:`DataStream` (same cached encoder, same embedding); then the
    loop calls :meth:`update` every round with the labelled items, which fine-tunes a copy of the
    trained encoder with a supervised head and re-embeds the whole pool, replacing ``embedding`` and
    ``typicality``.

    This breaks the property the two-stream method relies on: the data stream is no longer a fixed
    reference, independent of the task stream. Its typicality now depends on which items were
    acquired (and hence on the acquisition function and on the task model's earlier uncertainty),
    so the two streams are coupled and "typical" drifts toward "like what was labelled". Measuring
    what that coupling costs or buys is the point of the ablation; the frozen stream is the method.

    Extra attributes: ``module`` (the trained, never fine-tuned encoder: each round restarts from it,
    as the task model is retrained from scratch, so the stream is a function of the current labelled
    set and the round's seed, not of the update history), ``images`` ``(N, P, P)`` (the pool, to
    re-embed), ``finetuned`` (the last round's encoder), ``updates`` and ``finetune_seconds``.
    """

    module: pl.LightningModule | None = field(default=None, repr=False)
    images: np.ndarray | None = field(default=None, repr=False)
    encoder_cfg: Mapping[str, Any] = field(default_factory=dict, repr=False)
    trainer_cfg: Mapping[str, Any] = field(default_factory=dict, repr=False)
    finetuned: pl.LightningModule | None = field(default=None, repr=False)
    updates: int = 0
    finetune_seconds: float = 0.0

    def update(self, images: np.ndarray, answers: np.ndarray, seed: int) -> float:
        """Fine-tune on ``(L, P, P)`` labelled ``images`` and their ``answers``; re-embed the pool.

        Args:
            images: the labelled patches.
            answers: ``(L, P, P)`` masks (the head regresses each mask's foreground share) or ``(L,)``
                True/False (the head is a binary classifier, BCE).
            seed: seeds the fine-tuning (the loop passes ``seed * 1000 + round``).

        Returns:
            The last fine-tuning loss.
        """
        assert self.module is not None and self.images is not None, "built by fit_data_stream(finetune=true)"
        if len(images) == 0 or len(images) != len(answers):
            raise ValueError(f"update needs as many answers as images (>= 1), got {len(images)} and {len(answers)}")
        start = time.perf_counter()
        cfg = self.encoder_cfg
        steps = int(cfg.get("finetune_steps", 50))
        batch_size = int(cfg.get("finetune_batch_size", 32))
        lr = float(cfg.get("finetune_lr", 3e-4))
        weight_decay = float(dict(cfg.get("module", {}) or {}).get("weight_decay", 1e-4))
        targets, kind = finetune_targets(answers)
        pl.seed_everything(seed, workers=True, verbose=False)
        encoder = build_encoder(self.images, cfg)  # a fresh copy of the trained encoder (no trainer attached)
        encoder.load_state_dict(self.module.state_dict())
        model = _FinetuneModule(encoder, FEATURES[encoder_name(cfg)], self.embedding.shape[1], kind, lr, weight_decay)
        data = TensorDataset(
            torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None], torch.from_numpy(targets)
        )
        sampler = RandomSampler(data, replacement=True, num_samples=steps * batch_size)
        loss = float("nan")
        if steps > 0:
            trainer = build_trainer(self.trainer_cfg, steps)
            trainer.fit(model, train_dataloaders=DataLoader(data, batch_size=batch_size, sampler=sampler, drop_last=True))
            loss = float(trainer.callback_metrics.get("encoder/finetune_loss", torch.tensor(float("nan"))))
        self.finetuned = encoder
        self.embedding = embed(encoder, self.images, self.trainer_cfg)
        self.typicality = knn_typicality(self.embedding, int(cfg.get("typicality_k", 20)))
        self.updates += 1
        seconds = time.perf_counter() - start
        self.finetune_seconds += seconds
        log.info("data stream: fine-tuned the encoder on %d labels (%s, %d steps), loss %.4f, %.1fs", len(images), kind, steps, loss, seconds)
        return loss


def _load_entry(
    folder: Path, images: np.ndarray, encoder_cfg: Mapping[str, Any], finetune: bool
) -> tuple[dict[str, Any], np.ndarray, pl.LightningModule | None]:
    """Read a cache entry: ``meta.json``, ``(N, D)`` ``embedding.npy`` and, when fine-tuning, the weights.

    Raises (any exception) when a file is truncated or does not fit the pool, so the caller rebuilds.
    """
    meta = json.loads((folder / "meta.json").read_text())
    seconds = float(meta["seconds"])
    emb = np.load(folder / "embedding.npy", allow_pickle=False)
    if emb.ndim != 2 or emb.shape[0] != len(images) or not np.isfinite(emb).all():
        raise ValueError(f"embedding of shape {emb.shape} (finite: {bool(np.isfinite(emb).all())}) for a pool of {len(images)}")
    module = None
    if finetune:
        module = build_encoder(images, encoder_cfg)
        module.load_state_dict(torch.load(folder / "encoder.pt", map_location="cpu", weights_only=True))
        module.eval()
    return {**meta, "seconds": seconds}, emb, module


#: Neighbours kept per item for big pools: TypiClust reads ``2 k = 40``, ProbCover's balls ``50``.
NEIGHBOURS_KEPT = 50


def typicality_and_neighbours(
    emb: np.ndarray, k: int, folder: Path | None = None
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """``(N,)`` typicality of the frozen embedding, and for big pools its neighbour lists.

    Below :data:`~dualstream.streams.knn.EXACT_BELOW` items: :func:`knn_typicality` alone (exact, and
    the acquisitions' own exact paths need no lists). From there on: one search of
    ``max(k, NEIGHBOURS_KEPT)`` neighbours, read from ``folder / neighbours_K.npz`` when an earlier
    process wrote it; the typicality is taken from its first ``k`` columns (the same numbers as a
    ``k``-search: columns are ascending over the same candidates).
    """
    from dualstream.streams.knn import EXACT_BELOW, knn

    if len(emb) < EXACT_BELOW:
        return knn_typicality(emb, k), None
    kept = max(int(k), NEIGHBOURS_KEPT)
    path = None if folder is None else folder / f"neighbours_{kept}.npz"
    lists = None
    if path is not None and path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                lists = (f["distances"], f["indices"])
            if lists[0].shape != (len(emb), min(kept, len(emb) - 1)):
                raise ValueError(f"neighbour lists of shape {lists[0].shape} for {len(emb)} items")
        except Exception as err:  # noqa: BLE001  (a truncated file: search again)
            log.warning("data stream: %s is unreadable (%s); searching the neighbours again", path, err)
            lists = None
    if lists is None:
        dist, idx = knn(emb, kept)
        lists = (dist, idx.astype(np.int32))  # 4 bytes per neighbour instead of 8: pools stay below 2^31 items
        if path is not None:
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, distances=lists[0], indices=lists[1])
            os.replace(tmp, path)  # atomic: a reader sees the old state or the whole file
    return typicality_from_distances(lists[0][:, :k]), lists


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
        encoder_cfg: the ``encoder`` config (``name``: ``simclr`` | ``vae``, ``steps``, ``batch_size``,
            ``typicality_k``, ``module``; ``finetune`` and ``finetune_*``).
        cache_dir: where embeddings (and encoder weights) are kept between runs; ``None`` disables caching.

    Returns:
        A frozen :class:`DataStream`; with ``encoder.finetune=true`` a :class:`FinetunedDataStream`
        (same start, updated by the loop every round with the labels).
    """
    encoder_name(encoder_cfg)  # fail on an unknown encoder before hashing or locking anything
    if rank_zero_only.rank != 0:
        # The encoder's ranks are spawned for its fit and never get here; a process that does was
        # started as one task of several (srun, torchrun) and would wait on rank 0's cache lock forever.
        raise ConfigError(
            f"fit_data_stream: this process is rank {rank_zero_only.rank} of a job started with several tasks;"
            " dualstream starts the encoder's processes itself: run one task per job (hydra.launcher.tasks_per_node=1)"
            " and set trainer.devices"
        )
    key = cache_key(images, encoder_cfg, seed)
    k = int(encoder_cfg.get("typicality_k", 20))
    finetune = bool(encoder_cfg.get("finetune", False))

    def compute() -> tuple[pl.LightningModule, np.ndarray, float]:
        start = time.perf_counter()
        module, emb = _train(images, encoder_cfg, trainer_cfg, seed)
        return module, emb, time.perf_counter() - start

    def stream(emb: np.ndarray, seconds: float, cached: bool, module: pl.LightningModule | None) -> DataStream:
        if not finetune:
            folder = None if cache_dir is None else Path(cache_dir) / "encoders" / key
            typicality, lists = typicality_and_neighbours(emb, k, folder)
            return DataStream(emb, typicality, seconds, cached, key, neighbours=lists)
        return FinetunedDataStream(
            emb, knn_typicality(emb, k), seconds, cached, key,
            module=module, images=images, encoder_cfg=encoder_cfg, trainer_cfg=trainer_cfg,
        )

    if cache_dir is None:
        module, emb, seconds = compute()
        return stream(emb, seconds, False, module)
    folder = Path(cache_dir) / "encoders" / key
    with locked(folder.with_suffix(".lock")):
        meta_path = folder / "meta.json"
        weights = folder / "encoder.pt"
        # A fine-tuned stream also needs the weights; entries written before they were kept lack them.
        if meta_path.exists() and (not finetune or weights.exists()):
            try:
                meta, emb, module = _load_entry(folder, images, encoder_cfg, finetune)
            except DualstreamError:
                raise
            except Exception as err:  # noqa: BLE001  (json, numpy, torch and pickle raise many types)
                # A truncated or foreign entry (full disk, killed job) must not fail every later run.
                log.warning("data stream: cache entry %s is unreadable (%s: %s); deleting it and retraining", folder, type(err).__name__, err)
                shutil.rmtree(folder, ignore_errors=True)
            else:
                log.info("data stream: loaded encoder embedding %s from cache", key)
                return stream(emb, float(meta["seconds"]), True, module)
        meta_path.unlink(missing_ok=True)  # rewriting an entry: incomplete until meta.json is back
        module, emb, seconds = compute()
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "embedding.npy", emb)
        torch.save({name: t.detach().cpu() for name, t in module.state_dict().items()}, weights)
        # meta.json is written last: its presence marks a complete entry.
        meta_path.write_text(json.dumps({"seconds": seconds, "seed": seed, "encoder": dict(encoder_cfg)}, default=str))
    return stream(emb, seconds, False, module)


def fit_pool_streams(
    images: np.ndarray,
    encoder_cfg: Mapping[str, Any],
    screen_cfg: Mapping[str, Any] | None,
    trainer_cfg: Mapping[str, Any],
    cache_dir: str | Path | None = None,
) -> DataStream:
    """The data stream of ``encoder_cfg``, and with ``screen_cfg`` a second frozen encoder for the screen.

    One encoder as the weight, the other as the veto (issue 10): ``encoder`` gives typicality, the
    coverage space and the diversity step; ``screen_encoder`` (``screen_cfg``) is trained once on the
    same patches and only its embedding is screened for outliers (``DataStream.screen_embedding``,
    handed to acquisitions as ``PoolView.extras["screen_embedding"]``). It is never fine-tuned. Each
    encoder is cached under its own key, so it is shared with runs that use it as their ``encoder``.

    Args:
        images: ``(N, P, P)`` float32 pool patches.
        encoder_cfg, screen_cfg: ``encoder`` and ``screen_encoder`` configs (``screen_cfg`` ``None``: no
            second encoder); each trains with its own ``seed``.
    """
    if screen_cfg and screen_cfg.get("finetune"):  # before any training
        raise ConfigError(FROZEN_SCREEN)
    stream = fit_data_stream(images, encoder_cfg, trainer_cfg, int(encoder_cfg.get("seed", 0)), cache_dir)
    if screen_cfg:
        log.info("data stream: second encoder (%s) for the quality screen", encoder_name(screen_cfg))
        screen = fit_data_stream(images, screen_cfg, trainer_cfg, int(screen_cfg.get("seed", 0)), cache_dir)
        stream.screen_embedding = screen.embedding
    return stream
