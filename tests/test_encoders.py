"""Encoder ablations (issue 5): the VAE data stream, dispatch by ``encoder.name``, and fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dualstream.errors import ConfigError
from dualstream.models.vae import PatchVAE
from dualstream.streams.data_stream import DataStream, FinetunedDataStream, fit_data_stream

CPU = {"accelerator": "cpu", "devices": 1}
VAE_MODULE = {"width": 4, "depth": 2, "latent_dim": 6}
SIMCLR_MODULE = {"width": 4, "depth": 2, "embed_dim": 8, "proj_dim": 4}


def _blobs(n: int = 24, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tiny synthetic EM-like patches: a bright square on a noisy background, and its mask."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for m in masks:
        side = int(rng.integers(3, size // 2))
        y, x = rng.integers(0, size - side, 2)
        m[y : y + side, x : x + side] = 1
    images = 0.25 + 0.5 * masks + 0.05 * rng.standard_normal(masks.shape)
    return np.clip(images, 0, 1).astype(np.float32), masks


def _cfg(name: str, **extra) -> dict:
    module = VAE_MODULE if name == "vae" else SIMCLR_MODULE
    return {"name": name, "steps": 2, "batch_size": 8, "typicality_k": 5, "module": dict(module), **extra}


def test_vae_shapes():
    vae = PatchVAE(patch_size=16, width=4, depth=2, latent_dim=6)
    x = torch.rand(3, 1, 16, 16)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (3, 6)
    assert vae.decode(mu).shape == (3, 1, 16, 16)
    emb = vae.predict_step((x,), 0)
    assert emb.shape == (3, 6)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    for recon in ("bce", "mse"):
        terms = PatchVAE(patch_size=16, width=4, depth=2, latent_dim=6, recon=recon).loss_terms(x)
        assert terms["kl"] >= 0 and terms["recon"] > 0 and terms["loss"].ndim == 0
    with pytest.raises(ValueError):
        PatchVAE(patch_size=20, depth=3)  # 20 is not a multiple of 2**3


def test_vae_loss_decreases():
    torch.manual_seed(0)
    images, _ = _blobs(16)
    x = torch.from_numpy(images)[:, None]
    # MSE: its floor is 0 (BCE on grey pixels keeps their entropy), so the drop is clear.
    vae = PatchVAE(patch_size=16, width=4, depth=2, latent_dim=6, lr=5e-3, augment=False, recon="mse")
    opt = vae.configure_optimizers()

    def loss() -> float:
        vae.eval()
        with torch.no_grad():
            return float(vae.loss_terms(x, sample=False)["loss"])

    before = loss()
    vae.train()
    for _ in range(40):
        opt.zero_grad()
        vae.loss_terms(x)["loss"].backward()
        opt.step()
    assert loss() < 0.7 * before


def test_fit_data_stream_vae_embeds_and_caches(tmp_path):
    images, _ = _blobs(20)
    first = fit_data_stream(images, _cfg("vae"), CPU, seed=0, cache_dir=tmp_path)
    second = fit_data_stream(images, _cfg("vae"), CPU, seed=0, cache_dir=tmp_path)
    assert type(first) is DataStream and not hasattr(first, "update")
    assert first.embedding.shape == (20, 6) and first.typicality.shape == (20,)
    assert np.allclose(np.linalg.norm(first.embedding, axis=1), 1, atol=1e-5)
    assert not first.from_cache and second.from_cache
    assert np.array_equal(first.embedding, second.embedding)
    simclr = fit_data_stream(images, _cfg("simclr"), CPU, seed=0, cache_dir=tmp_path)
    assert simclr.key != first.key and simclr.embedding.shape == (20, 8)


def test_vae_trains_on_a_one_item_pool():
    """Batch norm needs two samples where the VAE's last block is 1 x 1: a one-item pool (a detect pool with
    one proposal) is trained on two copies of its item instead of failing inside Lightning."""
    from dualstream.streams.data_stream import train_encoder

    images, _ = _blobs(1, size=16)
    deep = {**_cfg("vae"), "module": {"width": 4, "depth": 4, "latent_dim": 6}}  # 16 px / 2**4 = 1 x 1
    embedding = train_encoder(images, deep, CPU, seed=0)
    assert embedding.shape == (1, 6) and np.isfinite(embedding).all()


def test_pool_streams_give_the_screen_a_second_frozen_encoder(tmp_path):
    """fit_pool_streams: SimCLR as the weight, the VAE's embedding for the screen (cached on its own key, so
    a run with encoder=vae loads it); a fine-tuned screen encoder is refused before anything trains."""
    from dualstream.streams.data_stream import fit_pool_streams

    images, _ = _blobs(20)
    alone = fit_pool_streams(images, _cfg("simclr"), None, CPU, tmp_path)
    assert alone.screen_embedding is None
    both = fit_pool_streams(images, _cfg("simclr"), _cfg("vae"), CPU, tmp_path)
    vae = fit_data_stream(images, _cfg("vae"), CPU, seed=0, cache_dir=tmp_path)
    assert vae.from_cache and np.array_equal(both.screen_embedding, vae.embedding)
    assert np.array_equal(both.embedding, alone.embedding)  # the weight's stream is untouched
    with pytest.raises(ConfigError, match="screen_encoder.finetune"):
        fit_pool_streams(images, _cfg("simclr"), _cfg("vae", finetune=True), CPU, tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_unknown_encoder_is_a_config_error():
    images, _ = _blobs(4)
    with pytest.raises(ConfigError) as err:
        fit_data_stream(images, _cfg("bogus"), CPU, seed=0)
    message = str(err.value)
    assert "encoder.name" in message and "bogus" in message and "\n" not in message


@pytest.mark.parametrize("name", ["simclr", "vae"])
def test_finetune_updates_embedding_for_masks_and_labels(tmp_path, name):
    images, masks = _blobs(20)
    cfg = _cfg(name, finetune=True, finetune_steps=3, finetune_batch_size=4, finetune_lr=1e-2)
    stream = fit_data_stream(images, cfg, CPU, seed=0, cache_dir=tmp_path)
    assert isinstance(stream, FinetunedDataStream) and hasattr(stream, "update")
    # The frozen run of the same seed shares the trained encoder: same cache entry, same start.
    frozen = fit_data_stream(images, _cfg(name), CPU, seed=0, cache_dir=tmp_path)
    assert frozen.from_cache and frozen.key == stream.key
    assert np.array_equal(frozen.embedding, stream.embedding)

    idx = np.arange(8)
    answer_kinds = {"masks": masks[idx], "labels": (masks[idx].reshape(8, -1).mean(1) > 0.1).astype(np.uint8)}
    for kind, answers in answer_kinds.items():
        emb, typ = stream.embedding.copy(), stream.typicality.copy()
        loss = stream.update(images[idx], answers, seed=1)
        assert np.isfinite(loss), kind
        assert stream.embedding.shape == emb.shape and stream.typicality.shape == typ.shape
        assert not np.allclose(stream.embedding, emb), kind
        assert not np.allclose(stream.typicality, typ), kind
        assert np.allclose(np.linalg.norm(stream.embedding, axis=1), 1, atol=1e-5)
    assert stream.updates == 2
    assert np.array_equal(frozen.embedding, fit_data_stream(images, _cfg(name), CPU, seed=0, cache_dir=tmp_path).embedding)


def test_finetuned_stream_from_cache_and_without_cache(tmp_path):
    images, masks = _blobs(12)
    cfg = _cfg("vae", finetune=True, finetune_steps=2, finetune_batch_size=4)
    fit_data_stream(images, _cfg("vae"), CPU, seed=0, cache_dir=tmp_path)  # frozen run trains first
    cached = fit_data_stream(images, cfg, CPU, seed=0, cache_dir=tmp_path)
    assert cached.from_cache and isinstance(cached, FinetunedDataStream)
    fresh = fit_data_stream(images, cfg, CPU, seed=0, cache_dir=None)
    assert isinstance(fresh, FinetunedDataStream) and not fresh.from_cache
    # Fine-tuning restarts from the trained encoder each round: same labels and seed, same result.
    a = cached.update(images[:4], masks[:4], seed=3)
    emb = cached.embedding.copy()
    cached.update(images[:6], masks[:6], seed=4)
    b = cached.update(images[:4], masks[:4], seed=3)
    assert a == pytest.approx(b) and np.allclose(cached.embedding, emb, atol=1e-5)


def test_typicality_k_shares_the_trained_encoder(tmp_path):
    """k of the density is applied to the cached embedding: another k reuses the encoder, not its typicality."""
    images, _ = _blobs(20)
    first = fit_data_stream(images, _cfg("simclr"), CPU, seed=0, cache_dir=tmp_path)
    other_k = fit_data_stream(images, {**_cfg("simclr"), "typicality_k": 2}, CPU, seed=0, cache_dir=tmp_path)
    assert other_k.from_cache and other_k.key == first.key
    assert np.array_equal(other_k.embedding, first.embedding)
    assert not np.allclose(other_k.typicality, first.typicality)
