"""The ``trainer`` inference options (channels_last, fuse_batchnorm, predict_batch_size): same outputs
as the plain predict within float rounding, defaults bit-identical, bad values refused in one line.

Tolerance: 1e-4 absolute on L2-normalised embeddings, probabilities and pooled features of tiny random
networks (folding BatchNorm and NHWC convolutions change only the order of float32 sums, ~1e-6).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from dualstream.errors import ConfigError
from dualstream.models.blocks3d import UNet3d
from dualstream.models.networks import ConvEncoder, UNet, fold_batchnorm, pool_before_relu
from dualstream.models.segmentation import SegmentationModule
from dualstream.streams.data_stream import build_encoder, embed
from dualstream.streams.task_stream import TaskStream
from dualstream.trainer import InferenceOptions, inference_options, inference_view

FAST = {"accelerator": "cpu", "channels_last": True, "fuse_batchnorm": True, "predict_batch_size": 5}
TOL = 1e-4


def _randomise_batchnorm(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters, so folding them is really exercised."""
    g = torch.Generator().manual_seed(seed)
    for bn in module.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            n = bn.num_features
            bn.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            with torch.no_grad():
                bn.weight.copy_(torch.rand(n, generator=g) + 0.5)
                bn.bias.copy_(torch.rand(n, generator=g) - 0.5)


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).random((12, 32, 32), dtype=np.float32)


@pytest.fixture
def encoder(images):
    torch.manual_seed(0)
    module = build_encoder(images, {"name": "simclr", "module": {"width": 4, "depth": 3, "embed_dim": 16, "proj_dim": 8}})
    _randomise_batchnorm(module)
    return module


def test_defaults_are_the_plain_predict(encoder, images):
    assert inference_options({}) == InferenceOptions()
    assert not InferenceOptions().changes_model
    plain = embed(encoder, images, {"accelerator": "cpu"})
    explicit = embed(encoder, images, {"accelerator": "cpu", **{k: v for k, v in vars(InferenceOptions()).items()}})
    assert np.array_equal(plain, explicit)


def test_embedding_with_options_matches(encoder, images):
    plain = embed(encoder, images, {"accelerator": "cpu"})
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    fast = embed(encoder, images, FAST)
    assert fast.shape == plain.shape == (12, 16)
    assert np.abs(fast - plain).max() < TOL
    # the encoder itself (what the cache stores) is untouched: same keys, same values, same children
    after = encoder.state_dict()
    assert list(after) == list(before) and all(torch.equal(before[k], after[k]) for k in before)
    assert any(isinstance(m, nn.BatchNorm2d) for m in encoder.backbone.modules())


def test_folding_changes_something(encoder):
    """The folded copy really has no BatchNorm left (the test above would pass with a no-op fold)."""
    folded = fold_batchnorm(encoder.backbone)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in encoder.backbone.modules())


def test_pool_before_relu_is_exact():
    torch.manual_seed(6)
    enc = ConvEncoder(4, 4, 8).eval()
    _randomise_batchnorm(enc)
    x = torch.randn(3, 1, 32, 32)
    moved = pool_before_relu(copy.deepcopy(enc))
    relus_before_pool = sum(isinstance(m, nn.Sequential) and isinstance(m[0], nn.Conv2d) and isinstance(m[-1], nn.ReLU) for m in moved.features)
    assert relus_before_pool == 1  # only the stem (no pool after it) keeps its ReLU
    unet = UNet(4, 2).eval()
    with torch.no_grad():
        assert torch.equal(enc(x), moved(x))
        assert torch.equal(unet(x), pool_before_relu(copy.deepcopy(unet))(x))  # skips keep their ReLU


@pytest.mark.parametrize("ndim", [2, 3])
def test_unet_predict_step_with_options_matches(ndim):
    torch.manual_seed(1)
    module = SegmentationModule(width=4, depth=2, ndim=ndim).eval()
    _randomise_batchnorm(module)
    x = torch.rand(3, 1, 16, 16) if ndim == 2 else torch.rand(3, 1, 4, 16, 16)
    with torch.no_grad():
        plain = module.predict_step((x,), 0)
        net = module.net
        with inference_view(module, {"channels_last": True, "fuse_batchnorm": True}):
            assert module.net is not net  # the prepared copy is in place during the block
            fast = module.predict_step((x,), 0)
        assert module.net is net
    for key in ("probs", "features", "grad"):
        assert torch.allclose(plain[key], fast[key], atol=TOL), key


def test_unet_mc_dropout_still_samples():
    torch.manual_seed(2)
    module = SegmentationModule(width=4, depth=2, dropout=0.5, mc_samples=4).eval()
    _randomise_batchnorm(module)
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        torch.manual_seed(5)
        plain = module.predict_step((x,), 0)["probs"]
        torch.manual_seed(5)
        with inference_view(module, {"fuse_batchnorm": True, "channels_last": True}):
            probs = module.predict_step((x,), 0)["probs"]
    assert probs.shape == (2, 4, 16, 16)
    assert (probs[:, 0] - probs[:, 1]).abs().max() > 0  # dropout stays stochastic in the prepared copy
    assert torch.allclose(plain, probs, atol=TOL)  # and draws the same masks from the same seed
    assert not module.net.dropout.training


@pytest.mark.slow
def test_task_stream_scores_match(images):
    rng = np.random.default_rng(3)
    masks = (rng.random((6, 32, 32)) > 0.7).astype(np.float32)
    model_cfg = {"steps": 2, "batch_size": 4, "module": {"width": 4, "depth": 2}}
    out = {}
    for name, trainer_cfg in (("plain", {"accelerator": "cpu"}), ("fast", FAST)):
        stream = TaskStream(model_cfg, trainer_cfg, images, images[:2], masks[:2])
        stream.fit(images[:6], masks, seed=0)
        out[name] = (stream.pool_uncertainty(), stream.pool_extras())
    assert np.abs(out["plain"][0] - out["fast"][0]).max() < TOL
    for key in ("task_embedding", "grad_embedding"):
        assert np.abs(out["plain"][1][key] - out["fast"][1][key]).max() < TOL, key


def test_unet3d_fold():
    torch.manual_seed(4)
    net = UNet3d(4, 2, 0.0).eval()
    _randomise_batchnorm(net)
    x = torch.rand(2, 1, 4, 16, 16)
    with torch.no_grad():
        assert torch.allclose(net(x), fold_batchnorm(net)(x), atol=TOL)
    assert isinstance(UNet(4, 2), nn.Module)


@pytest.mark.parametrize(
    "cfg, key",
    [
        ({"channels_last": "yes"}, "trainer.channels_last"),
        ({"fuse_batchnorm": 1}, "trainer.fuse_batchnorm"),
        ({"compile": "false"}, "trainer.compile"),
        ({"predict_batch_size": 0}, "trainer.predict_batch_size"),
        ({"predict_batch_size": 2.5}, "trainer.predict_batch_size"),
        ({"predict_batch_size": True}, "trainer.predict_batch_size"),
    ],
)
def test_bad_values_refused(cfg, key):
    with pytest.raises(ConfigError) as err:
        inference_options(cfg)
    message = str(err.value)
    assert message.startswith(key) and "\n" not in message


def test_validate_refuses_bad_value_and_unknown_key(tmp_path):
    from hydra import compose, initialize_config_dir

    from dualstream import cli
    from dualstream.validate import validate

    cli._register_resolvers()
    for override, key in (("trainer.channels_last=maybe", "trainer.channels_last"), ("+trainer.channel_last=true", "trainer.channel_last")):
        with initialize_config_dir(config_dir=str(cli.CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=[override, f"paths.cache_dir={tmp_path}"])
        with pytest.raises(ConfigError, match=key):
            validate(cfg, None, check_files=False)
    with initialize_config_dir(config_dir=str(cli.CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["trainer.channels_last=true", "trainer.predict_batch_size=64", f"paths.cache_dir={tmp_path}"])
    validate(cfg, None, check_files=False)


@pytest.mark.slow
def test_compiled_predict_matches():
    """``trainer.compile=true`` (torch.compile, frozen weights) on a tiny U-Net: same outputs (tens of seconds)."""
    import shutil

    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler for torch.compile")
    torch.manual_seed(7)
    module = SegmentationModule(width=4, depth=1).eval()
    _randomise_batchnorm(module)
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        plain = module.predict_step((x,), 0)
        with inference_view(module, {"compile": True, "fuse_batchnorm": True, "channels_last": True}):
            fast = module.predict_step((x,), 0)
    for key in ("probs", "features", "grad"):
        assert torch.allclose(plain[key], fast[key], atol=TOL), key
