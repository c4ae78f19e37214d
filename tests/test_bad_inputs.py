"""Every bad input ends in one ``dualstream: error: <key or file>: ...`` line, exit 2, no traceback, before training.

Most cases run the CLI in-process (``dualstream.cli.main`` with ``sys.argv`` patched: ~0.5 s each);
a handful run the console script, for Hydra's own parsing of the command line.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from dualstream import cli

BIN = Path(sys.executable).parent
CUDA = False
try:  # torch is installed with the package; the GPU cases only make sense without a GPU
    import torch

    CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    pass


def run_cli(monkeypatch, capsys, tmp_path: Path, *args: str) -> tuple[int, str]:
    """``dualstream ARGS`` in this process, with a private run and cache folder; ``(exit code, stderr)``."""
    argv = ["dualstream", f"hydra.run.dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}", "logger=none", *args]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    capsys.readouterr()
    try:
        cli.main()
        code = 0
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *names: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("dualstream: error:")]
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


# --- config values: composed fine, rejected by dualstream.validate before anything is read -----------------

CONFIG_CASES = [
    # (overrides, text the error line must contain)
    (["loop.batch=abc"], "loop.batch"),
    (["loop.batch=0"], "loop.batch"),
    (["loop.batch=2.5"], "loop.batch"),
    (["loop.initial=0"], "loop.initial"),
    (["loop.initial=some"], "loop.initial"),
    (["loop.rounds=-1"], "loop.rounds"),
    (["loop.artifact_threshold=0"], "loop.artifact_threshold"),
    (["++loop.schedule=[8,4]"], "loop.schedule"),
    (["seed=abc"], "seed"),
    (["seed=-1"], "seed"),
    (["progress=maybe"], "progress"),
    (["data.patch_size=abc"], "data.patch_size"),
    (["data.patch_size=4"], "data.patch_size"),
    (["data.label_threshold=high"], "data.label_threshold"),
    (["data.downsample=0"], "data.downsample"),
    (["data.downsample=-2"], "data.downsample"),
    (["data.stride=0"], "data.stride"),
    (["data.test_fraction=1.5"], "data.test_fraction"),
    (["data.test_fraction=0"], "data.test_fraction"),
    (["data.inject_artifacts=1.0"], "data.inject_artifacts"),
    (["data.inject_artifacts=-0.1"], "data.inject_artifacts"),
    (["data.sections=abc"], "data.sections"),
    (["data.sections=[-1,2]"], "data.sections"),
    (["data.voxel_size=[5,5]"], "data.voxel_size"),
    (["data.voxel_size=[5,0,5]"], "data.voxel_size"),
    (["data.intensity_range=[255,0]"], "data.intensity_range"),
    (["data.image=/no/such/volume.h5:raw"], "data.image"),
    (["data.labels=/no/such/labels.tif"], "data.labels"),
    (["data.test_labels=/no/such/test_labels.tif"], "data.test_labels"),
    (["encoder.name=bogus"], "encoder.name"),
    (["encoder.steps=0"], "encoder.steps"),
    (["encoder.batch_size=0"], "encoder.batch_size"),
    (["encoder.typicality_k=0"], "encoder.typicality_k"),
    (["+encoder.module.widht=8"], "encoder.module.widht"),
    # a second encoder for the screen: only with a strategy that screens the embedding, frozen, valid
    (["acquisition=dualstream_v1", "screen_encoder=vae"], "acquisition.params.screen_embedding=true"),
    (["acquisition=dualstream_screen", "acquisition.params.screen_embedding=true", "screen_encoder=vae",
      "screen_encoder.finetune=true"], "screen_encoder.finetune"),
    (["acquisition=dualstream_screen", "acquisition.params.screen_embedding=true", "screen_encoder=vae",
      "screen_encoder.steps=0"], "screen_encoder.steps"),
    (["model.steps=0"], "model.steps"),
    (["model.steps=abc"], "model.steps"),
    (["model.batch_size=0"], "model.batch_size"),
    (["+model.mc_samples=8"], "model.module.mc_samples"),
    (["+model.module.bogus=1"], "model.module.bogus"),
    (["model.module.dropout=1.5"], "model.module.dropout"),
    (["model.module.mc_samples=0"], "model.module.mc_samples"),
    (["model.uncertainty.measure=bogus"], "model.uncertainty.measure"),
    (["model.uncertainty.reduction=median"], "model.uncertainty.reduction"),
    (["model.uncertainty.cold_ratio=-1"], "model.uncertainty.cold_ratio"),
    (["model.uncertainty.topk_until=0"], "model.uncertainty.topk_until"),
    (["model.uncertainty.topk_until=ten"], "model.uncertainty.topk_until"),
    (["model.uncertainty.measure=bald"], "model.module.mc_samples"),
    (["acquisition.name=nope"], "acquisition.name"),
    (["+acquisition.params.bogus=1"], "acquisition.params.bogus"),
    (["acquisition=random", "+acquisition.params.beta=2"], "acquisition.params.beta"),
    (["acquisition.module=no_such_plugin_xyz"], "no_such_plugin_xyz"),
    (["acquisition=dualstream_v2", "acquisition.params.typicality=bogus"], "acquisition.params.typicality"),
    (["acquisition=dualstream_v2", "acquisition.params.combine=sum"], "acquisition.params.combine"),
    (["acquisition=dualstream", "acquisition.params.gate=1.5"], "acquisition.params.gate"),
    (["logger.name=bogus"], "logger.name"),
    (["logger=wandb", "logger.mode=sometimes"], "logger.mode"),
    (["trainer.precision=bogus"], "trainer.precision"),
    (["trainer.cpu_threads=0"], "trainer.cpu_threads"),
    (["trainer.accelerator=tpu9"], "trainer.accelerator"),
    (["task.name=classify"], "task.name"),
    (["task=detect", "task.crop_size=abc"], "task.crop_size"),
    (["task=detect", "task.verifier.steps=0"], "task.verifier.steps"),
    (["task=detect", "task.detector.ensemble=0"], "task.detector.ensemble"),
    (["task=detect", "task.detector.tta=sometimes"], "task.detector.tta"),
    (["+bogus_top_level=1"], "bogus_top_level"),
]


@pytest.mark.parametrize("overrides, name", CONFIG_CASES, ids=[" ".join(c[0]) for c in CONFIG_CASES])
def test_bad_config_value(monkeypatch, capsys, tmp_path, overrides, name):
    code, err = run_cli(monkeypatch, capsys, tmp_path, *overrides)
    assert_one_line_error(code, err, name)
    assert not (tmp_path / "cache" / "encoders").exists()  # failed before the encoder


@pytest.mark.skipif(CUDA, reason="this machine has a GPU")
@pytest.mark.parametrize("override", ["trainer=gpu", "trainer.accelerator=gpu", "trainer.accelerator=cuda"])
def test_gpu_without_gpu_says_use_cpu(monkeypatch, capsys, tmp_path, override):
    code, err = run_cli(monkeypatch, capsys, tmp_path, override)
    line = assert_one_line_error(code, err, "trainer.accelerator")
    assert "trainer=cpu" in line


# --- Hydra's own errors (unknown key, unknown preset, bad syntax), reworded to one line -----------------------

HYDRA_CASES = [
    (["model.mc_samples=8"], "model.module.mc_samples"),
    (["model.step=10"], "model.steps"),
    (["logger=bogus"], "logger=bogus"),
    (["acquisition=nope"], "acquisition=nope"),
    (["loop.batch=="], "loop.batch"),
    # a key of another preset of the group (a sweep preset that selects it per job is applied after this check)
    (["acquisition.params.typicality=cluster"], "acquisition=dualstream_v2"),
    # the same for a group whose presets pull their keys in from another group (screen_encoder <- encoder)
    (["acquisition=random", "screen_encoder.steps=3"], "screen_encoder=simclr"),  # random names no screen encoder
    # a group set to null on the command line (Hydra raises a bare ValueError): name the ~group form
    (["screen_encoder=null"], "'~screen_encoder'"),
]


@pytest.mark.parametrize("overrides, name", HYDRA_CASES, ids=[" ".join(c[0]) for c in HYDRA_CASES])
def test_bad_override_in_process(monkeypatch, capsys, tmp_path, overrides, name):
    code, err = run_cli(monkeypatch, capsys, tmp_path, *overrides)
    assert_one_line_error(code, err, name)


def test_unwritable_cache_dir(monkeypatch, capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    code, err = run_cli(monkeypatch, capsys, tmp_path, f"paths.cache_dir={blocker / 'cache'}")
    assert_one_line_error(code, err, "paths.cache_dir")


# --- data: tiny volumes in tmp_path ---------------------------------------------------------------------------


def _labels(shape=(4, 64, 64), seed=1) -> np.ndarray:
    return ((np.random.default_rng(seed).random(shape) > 0.7) * 255).astype(np.uint8)


def _image(shape=(4, 64, 64), seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)


def _data_args(tmp_path: Path, image: np.ndarray, labels: np.ndarray, suffix: str = "tif") -> list[str]:
    img, lab = tmp_path / f"img.{suffix}", tmp_path / f"lab.{suffix}"
    tifffile.imwrite(img, image)
    tifffile.imwrite(lab, labels)
    return [
        f"data.image={img}", f"data.labels={lab}", "data.voxel_size=[5,5,5]", "data.patch_size=32",
        "data.sections=null", "loop.initial=2", "loop.batch=2", "loop.rounds=1", "encoder.steps=2", "model.steps=2",
    ]


def _nan_image():
    img = np.random.default_rng(0).random((4, 64, 64)).astype(np.float32)
    img[1, :3, :4] = np.nan  # 12 voxels
    return img


def _inf_image():
    img = np.random.default_rng(0).random((4, 64, 64)).astype(np.float32)
    img[0, 5, 5] = np.inf
    return img


DATA_CASES = {
    # name: (image, labels, extra overrides, texts the error line must contain)
    "nan": (_nan_image(), _labels(), [], ["img.tif", "12", "NaN"]),
    "inf": (_inf_image(), _labels(), [], ["img.tif", "1 ", "Inf"]),
    "all_zero": (np.zeros((4, 64, 64), np.uint8), _labels(), [], ["img.tif", "constant"]),
    "constant_float": (np.full((4, 64, 64), 0.5, np.float32), _labels(), [], ["img.tif", "constant"]),
    "constant_uint16": (np.full((4, 64, 64), 3000, np.uint16), _labels(), [], ["img.tif", "constant"]),
    "threshold_above_labels": (_image(), (_labels() > 0).astype(np.uint8), ["data.label_threshold=127"], ["data.label_threshold", "lab.tif"]),
    "empty_labels": (_image(), np.zeros((4, 64, 64), np.uint8), [], ["data.label_threshold", "lab.tif"]),
    "shape_mismatch": (_image(), _labels((3, 64, 64)), [], ["lab.tif", "does not match"]),
    "sections_out_of_range": (_image(), _labels(), ["data.sections=[0,9]"], ["data.sections"]),
    "patch_larger_than_sections": (_image(), _labels(), ["data.patch_size=128"], ["data.patch_size"]),
    "budget_above_pool": (_image(), _labels(), ["loop.rounds=50"], ["loop.rounds"]),
    "all_sections_held_out": (_image(shape=(1, 64, 64)), _labels((1, 64, 64)), [], ["data.test_fraction"]),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_data(monkeypatch, capsys, tmp_path, case):
    image, labels, extra, names = DATA_CASES[case]
    code, err = run_cli(monkeypatch, capsys, tmp_path, *_data_args(tmp_path, image, labels), *extra)
    assert_one_line_error(code, err, *names)
    assert not (tmp_path / "cache" / "encoders").exists()


def test_unreadable_tiff(monkeypatch, capsys, tmp_path):
    args = _data_args(tmp_path, _image(), _labels())
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"this is not a tiff")
    code, err = run_cli(monkeypatch, capsys, tmp_path, *args, f"data.image={bad}")
    assert_one_line_error(code, err, "broken.tif")


def test_hdf5_without_the_named_dataset(monkeypatch, capsys, tmp_path):
    path = tmp_path / "vol.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = _image()
    code, err = run_cli(monkeypatch, capsys, tmp_path, f"data.image={path}:volume", f"data.labels={path}:raw")
    assert_one_line_error(code, err, "vol.h5", "volume")


def test_test_image_without_test_labels(monkeypatch, capsys, tmp_path):
    args = _data_args(tmp_path, _image(), _labels())
    code, err = run_cli(monkeypatch, capsys, tmp_path, *args, f"data.test_image={tmp_path / 'img.tif'}")
    assert_one_line_error(code, err, "data.test_")


# --- a few through the console script: Hydra parses the real command line -----------------------------------


def _script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([str(BIN / "dualstream"), *args], cwd=cwd, capture_output=True, text=True, env={**env, "WANDB_MODE": "offline"}, timeout=300)


@pytest.mark.parametrize(
    "args, name",
    [
        (["model.mc_samples=8"], "model.module.mc_samples"),
        (["logger=bogus"], "logger=bogus"),
        (["loop.batch=[1,"], "loop.batch"),
        (["hydra.run.dir=/proc/no_such_dir/run"], "/proc/no_such_dir"),
        (["loop.batch=abc"], "loop.batch"),
    ],
)
def test_console_script(tmp_path, args, name):
    run = [] if any(a.startswith("hydra.run.dir") for a in args) else [f"hydra.run.dir={tmp_path / 'run'}"]
    proc = _script(*run, f"paths.cache_dir={tmp_path / 'cache'}", "logger=none", *args, cwd=tmp_path)
    assert_one_line_error(proc.returncode, proc.stderr, name)


# --- things that are not errors but were silently wrong -------------------------------------------------------


def _pool(tmp_path, image, labels=None, **data):
    from omegaconf import OmegaConf

    from dualstream.patches import build_pools

    img, lab = tmp_path / "img.tif", tmp_path / "lab.tif"
    tifffile.imwrite(img, image)
    tifffile.imwrite(lab, _labels(image.shape) if labels is None else labels)
    cfg = OmegaConf.create(
        dict(image=str(img), labels=str(lab), voxel_size=[5, 5, 5], patch_size=32, label_threshold=127, test_fraction=0.25, **data)
    )
    return build_pools(cfg)


def test_12_bit_data_in_uint16_spans_zero_to_one(tmp_path):
    image = (np.random.default_rng(0).random((4, 64, 64)) * 4095).astype(np.uint16)
    pool, test = _pool(tmp_path, image)
    assert pool.images.max() > 0.95 and pool.images.min() < 0.05  # was [0, 0.0625]
    assert test.images.max() > 0.95


def test_float_image_in_0_255_is_not_clipped(tmp_path):
    image = (np.random.default_rng(0).random((4, 64, 64)) * 255).astype(np.float32)
    pool, _ = _pool(tmp_path, image)
    assert (pool.images >= 1.0).mean() < 0.01  # was 99.6% at 1.0
    assert abs(float(pool.images.mean()) - 0.5) < 0.05


def test_float_image_in_unit_range_is_kept(tmp_path):
    image = np.random.default_rng(0).random((4, 64, 64)).astype(np.float32) * 0.5 + 0.25
    pool, _ = _pool(tmp_path, image)
    np.testing.assert_allclose(pool.images[0], image[0, :32, :32], atol=1e-6)


def test_uint8_spanning_its_range_keeps_the_dtype_scaling(tmp_path):
    image = _image()
    pool, _ = _pool(tmp_path, image)
    np.testing.assert_array_equal(pool.images[0], image[0, :32, :32].astype(np.float32) / 255.0)


def test_configured_intensity_range_wins(tmp_path):
    image = _image()
    pool, _ = _pool(tmp_path, image, intensity_range=[0, 127])
    np.testing.assert_allclose(pool.images[0], np.clip(image[0, :32, :32] / 127.0, 0, 1), atol=1e-6)


def test_bundled_sample_is_unchanged():
    """The sample (uint8 0-255) keeps the dtype scaling: same pixels as before the data-driven range."""
    from dualstream.patches import normalise_intensity
    from dualstream.sample import sample_path
    from dualstream.volume import intensity_range, open_volume

    vol = open_volume(sample_path() + ":image")
    assert intensity_range(vol) == (0.0, 255.0)
    sec = vol.section(3)
    np.testing.assert_array_equal(normalise_intensity(sec, (0.0, 255.0)), normalise_intensity(sec))


def test_tiff_without_voxel_size_warns(tmp_path, caplog):
    from dualstream.volume import open_volume

    path = tmp_path / "img.tif"
    tifffile.imwrite(path, _image())
    with caplog.at_level(logging.WARNING, logger="dualstream.volume"):
        vol = open_volume(path, None, role="data.image")
    assert vol.voxel_size == (1.0, 1.0, 1.0)
    assert any("data.voxel_size" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("steps", [1, 5, 10, 12])
def test_any_model_steps_train(steps):
    """OneCycleLR divided by zero at exactly 10 steps (a one-step warm-up)."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from dualstream.models.segmentation import SegmentationModule

    x = torch.rand(8, 1, 16, 16)
    data = DataLoader(TensorDataset(x, (x > 0.5).float()), batch_size=2, sampler=torch.utils.data.RandomSampler(x, True, steps * 2))
    trainer = pl.Trainer(max_steps=steps, max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(SegmentationModule(width=4, depth=1, augment=False), train_dataloaders=data)
    assert trainer.global_step == steps


# --- the encoder cache: a truncated entry is rebuilt, not fatal ------------------------------------------------


@pytest.mark.parametrize("damage", ["meta.json", "embedding.npy"])
def test_truncated_cache_entry_is_rebuilt(tmp_path, caplog, damage):
    from dualstream.streams.data_stream import fit_data_stream

    images = np.random.default_rng(0).random((12, 16, 16)).astype(np.float32)
    enc = {"name": "simclr", "steps": 1, "batch_size": 4, "typicality_k": 3, "module": {"width": 4, "depth": 1, "embed_dim": 8, "proj_dim": 8}}
    trainer = {"accelerator": "cpu"}
    first = fit_data_stream(images, enc, trainer, 0, tmp_path)
    (entry,) = (tmp_path / "encoders").glob("*/")
    path = entry / damage
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with caplog.at_level(logging.WARNING, logger="dualstream.streams.data_stream"):
        again = fit_data_stream(images, enc, trainer, 0, tmp_path)
    assert not again.from_cache and any("unreadable" in r.getMessage() for r in caplog.records)
    np.testing.assert_allclose(again.embedding, first.embedding, atol=1e-5)  # same seed, same encoder
    third = fit_data_stream(images, enc, trainer, 0, tmp_path)
    assert third.from_cache
    json.loads((entry / "meta.json").read_text())


# --- every shipped preset passes validation ------------------------------------------------------------------


def _presets() -> list[list[str]]:
    root = Path(cli.CONF_DIR).parent
    out = [[]]
    out += [[f"experiment={p.stem}"] for p in sorted((root / "experiments").glob("*.yaml"))]
    out += [[f"sweep={p.stem}"] for p in sorted((root / "sweeps").glob("*.yaml"))]
    out += [[f"acquisition={p.stem}"] for p in sorted((Path(cli.CONF_DIR) / "acquisition").glob("*.yaml"))]
    out += [["encoder=vae"], ["task=detect"], ["logger=csv"]]
    out += [[f"screen_encoder={p.stem}", "acquisition=dualstream_screen", "acquisition.params.screen_embedding=true"]
            for p in sorted((Path(cli.CONF_DIR) / "screen_encoder").glob("*.yaml"))]
    return out


@pytest.mark.parametrize("overrides", _presets(), ids=lambda o: " ".join(o) or "defaults")
def test_shipped_presets_validate(tmp_path, overrides):
    from hydra import compose, initialize_config_dir

    from dualstream.validate import load_plugins, validate

    cli._register_resolvers()
    with initialize_config_dir(config_dir=str(cli.CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"paths.cache_dir={tmp_path}"])
    load_plugins(cfg)
    validate(cfg, tmp_path / "run", check_files=False)
