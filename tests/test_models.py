"""Networks, augmentations and Lightning modules: shapes, invariants, and that training learns."""

from __future__ import annotations

import numpy as np
import torch

from dualstream.augment import EMAugment, gaussian_blur, random_dihedral
from dualstream.models.encoder import ContrastiveEncoder, nt_xent
from dualstream.models.networks import ConvEncoder, UNet
from dualstream.models.segmentation import SegmentationModule
from dualstream.streams.data_stream import fit_data_stream
from dualstream.streams.task_stream import TaskStream

CPU = {"accelerator": "cpu", "devices": 1}


def test_network_shapes():
    x = torch.rand(3, 1, 32, 32)
    assert UNet(width=4, depth=3)(x).shape == (3, 1, 32, 32)
    assert ConvEncoder(width=4, depth=3, embed_dim=10)(x).shape == (3, 10)
    enc = ContrastiveEncoder(width=4, depth=3, embed_dim=10)
    assert torch.allclose(enc(x).norm(dim=1), torch.ones(3), atol=1e-5)


def test_dihedral_moves_image_and_mask_together():
    torch.manual_seed(0)
    img = torch.rand(16, 1, 8, 8)
    a, b = random_dihedral(img, img.clone())
    assert torch.equal(a, b)
    assert not torch.equal(a, img)  # 16 samples: some transform is not the identity
    # Each output is one of the 8 dihedral images of its input.
    for out, src in zip(a, img):
        variants = [torch.rot90(s, k, dims=(-2, -1)) for s in (src, src.flip(-1)) for k in range(4)]
        assert any(torch.equal(out, v) for v in variants)


def test_augment_keeps_range_and_shape():
    torch.manual_seed(0)
    x = torch.rand(8, 1, 32, 32)
    y = EMAugment(p_missing=0.5, p_low_contrast=0.5)(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    blurred = gaussian_blur(x, torch.full((8,), 2.0))
    assert blurred.std() < x.std()  # blur removes high-frequency variance
    assert torch.equal(gaussian_blur(x, torch.zeros(8)), x)


def test_nt_xent_rewards_matching_views():
    torch.manual_seed(0)
    z = torch.randn(16, 8)
    matched = nt_xent(z, z + 0.01 * torch.randn_like(z), 0.2)
    unmatched = nt_xent(z, torch.randn(16, 8), 0.2)
    assert matched < unmatched
    assert matched >= 0


def _stripes(n, size=32, seed=0):
    """Synthetic segmentation task: bright vertical bars are foreground."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for m in masks:
        for x0 in rng.choice(size - 4, 2, replace=False):
            m[:, x0 : x0 + 4] = 1
    images = (0.2 + 0.6 * masks + 0.05 * rng.standard_normal(masks.shape)).astype(np.float32)
    return np.clip(images, 0, 1), masks


def test_task_stream_learns_and_scores_the_pool():
    images, masks = _stripes(24)
    cfg = {"steps": 60, "batch_size": 8, "module": {"width": 4, "depth": 2, "lr": 1e-2, "augment": False}}
    task = TaskStream(cfg, CPU, images, images[:8], masks[:8])
    task.fit(images[:16], masks[:16], seed=0)
    assert task.score() > 0.6
    u = task.pool_uncertainty()
    assert u.shape == (24,) and np.all((u >= 0) & (u <= 1))


def test_first_fit_is_cached_and_gives_what_training_gives(tmp_path):
    """A loaded first fit scores, predicts and MC-samples exactly like the fit it replaces."""
    images, masks = _stripes(16)
    cfg = {"steps": 6, "batch_size": 4, "module": {"width": 4, "depth": 2, "mc_samples": 3, "dropout": 0.3}}
    outputs = []
    for cache in (None, tmp_path / "fits", tmp_path / "fits"):  # no cache, write, read
        task = TaskStream(cfg, CPU, images, images[:4], masks[:4], fit_cache=cache)
        loss = task.fit(images[:6], masks[:6], seed=3)
        outputs.append((loss, task.score(), task.pool_uncertainty(), task.pool_extras()["bald"]))
        task.fit(images[:8], masks[:8], seed=4)  # later fits are never cached
    assert len(list((tmp_path / "fits").glob("*/fit.pt"))) == 1
    for loss, score, u, bald in outputs[1:]:
        assert loss == outputs[0][0] and score == outputs[0][1]
        assert np.array_equal(u, outputs[0][2]) and np.array_equal(bald, outputs[0][3])
    # Another seed or other labels are another entry.
    TaskStream(cfg, CPU, images, images[:4], masks[:4], fit_cache=tmp_path / "fits").fit(images[:6], masks[:6], seed=5)
    assert len(list((tmp_path / "fits").glob("*/fit.pt"))) == 2


def test_truncated_fit_cache_entry_is_rebuilt(tmp_path):
    images, masks = _stripes(8)
    cfg = {"steps": 3, "batch_size": 4, "module": {"width": 4, "depth": 2}}
    TaskStream(cfg, CPU, images, images[:4], masks[:4], fit_cache=tmp_path).fit(images[:4], masks[:4], seed=0)
    (entry,) = tmp_path.glob("*/fit.pt")
    entry.write_bytes(entry.read_bytes()[:100])
    task = TaskStream(cfg, CPU, images, images[:4], masks[:4], fit_cache=tmp_path)
    task.fit(images[:4], masks[:4], seed=0)
    assert 0.0 <= task.score() <= 1.0 and entry.stat().st_size > 100


def test_predict_outputs_probabilities_embeddings_and_gradients():
    images, masks = _stripes(4)
    module = SegmentationModule(width=4, depth=2, mc_samples=3, dropout=0.5)
    module.eval()
    out = module.predict_step((torch.from_numpy(images)[:, None],), 0)
    assert out["probs"].shape == (4, 3, 32, 32)
    assert not torch.equal(out["probs"][:, 0], out["probs"][:, 1])  # MC dropout samples differ
    assert not module.net.dropout.training  # restored after sampling
    assert out["features"].shape == (4, 16)  # bottleneck width 4 * 2**2, pooled
    assert out["grad"].shape == (4, 5)  # last features (4) + bias
    # The bias part of the gradient embedding is the mean residual p - round(p) of the first pass.
    logits, _, _ = module.net.forward_features(torch.from_numpy(images)[:, None])
    p = torch.sigmoid(logits)
    assert torch.allclose(out["grad"][:, -1], (p - (p >= 0.5).float()).mean(dim=(1, 2, 3)), atol=1e-6)


def test_task_stream_supplies_extras_for_the_zoo():
    images, masks = _stripes(12)
    cfg = {"steps": 5, "batch_size": 4, "module": {"width": 4, "depth": 2, "mc_samples": 2}}
    task = TaskStream(cfg, CPU, images, images[:4], masks[:4])
    task.fit(images[:6], masks[:6], seed=0)
    u = task.pool_uncertainty()
    extras = task.pool_extras()
    assert set(extras) == {"margin", "least_confidence", "bald", "task_embedding", "grad_embedding", "foreground"}
    assert ((extras["foreground"] >= 0) & (extras["foreground"] <= 1)).all()
    assert all(len(v) == 12 for v in extras.values())
    assert np.allclose(extras["least_confidence"], extras["margin"] / 2)
    assert u.shape == (12,)


def test_data_stream_is_cached(tmp_path):
    images, _ = _stripes(20)
    cfg = {"steps": 2, "batch_size": 8, "typicality_k": 5, "module": {"width": 4, "depth": 2, "embed_dim": 8, "proj_dim": 4}}
    first = fit_data_stream(images, cfg, CPU, seed=0, cache_dir=tmp_path)
    second = fit_data_stream(images, cfg, CPU, seed=0, cache_dir=tmp_path)
    other_seed = fit_data_stream(images, cfg, CPU, seed=1, cache_dir=tmp_path)
    assert not first.from_cache and second.from_cache and not other_seed.from_cache
    assert np.array_equal(first.embedding, second.embedding)
    assert first.embedding.shape == (20, 8) and first.typicality.shape == (20,)
    assert first.key != other_seed.key


def test_data_stream_without_cache():
    images, _ = _stripes(10)
    cfg = {"steps": 2, "batch_size": 8, "module": {"width": 4, "depth": 2, "embed_dim": 8, "proj_dim": 4}}
    stream = fit_data_stream(images, cfg, CPU, seed=0, cache_dir=None)
    assert stream.embedding.shape == (10, 8) and not stream.from_cache
