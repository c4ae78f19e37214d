"""End to end through the console scripts: one run, a sweep plus its report, and user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import torch

BIN = Path(sys.executable).parent
RECORD_KEYS = {"round", "n_labeled", "n_queried", "n_skipped", "score", "stream_correlation", "seconds"}


def dualstream(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([str(BIN / "dualstream"), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def test_one_run_writes_results_and_csv_log(tmp_path, tiny_overrides):
    run_dir = tmp_path / "run"
    proc = dualstream(*tiny_overrides, "logger=csv", f"hydra.run.dir={run_dir}", "acquisition=dualstream", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["acquisition"] == "dualstream" and results["seed"] == 0
    assert results["task"] == "segment" and results["metric"] == "foreground_iou"
    assert results["config"]["loop"]["batch"] == 4
    # the default dualstream: the VAE as the weight, a SimCLR screen trained as long (BENCHMARKS §3, session 19)
    assert results["config"]["encoder"]["name"] == "vae" and results["config"]["screen_encoder"]["name"] == "simclr"
    assert results["config"]["screen_encoder"]["steps"] == 3
    assert "second encoder (simclr) for the quality screen" in proc.stdout
    env = results["environment"]  # where it ran: runs repeat exactly on one machine only
    assert env["torch"] == torch.__version__ and env["cpu"] and env["python"].startswith("3.")
    records = results["records"]
    assert [r["round"] for r in records] == [0, 1]
    assert results["finished"] is True  # the last round's rewrite says so
    assert RECORD_KEYS <= set(records[0])
    assert [r["n_queried"] for r in records] == [4, 8]
    assert all(0.0 <= r["score"] <= 1.0 for r in records)
    assert results["pool_size"] == 144 and results["test_size"] == 48  # 3 pool + 1 test section x 48 tiles
    assert (run_dir / "csv" / "metrics.csv").exists()


def test_a_second_encoder_for_the_screen_trains_once_and_is_shared(tmp_path, tiny_overrides):
    """screen_encoder=vae: SimCLR stays the weight, a VAE is trained (and cached) for the screen; a later
    encoder=vae run of the same seed loads that VAE instead of training its own."""
    small = ["screen_encoder.steps=3", "screen_encoder.batch_size=16"]
    both = dualstream(
        *tiny_overrides, "logger=none", f"hydra.run.dir={tmp_path / 'both'}", "acquisition=dualstream_screen",
        "acquisition.params.screen_embedding=true", "acquisition.params.screen_k=20", "screen_encoder=vae", *small, cwd=tmp_path,
    )
    assert both.returncode == 0, both.stderr[-3000:]
    assert "second encoder (vae) for the quality screen" in both.stdout
    entries = {json.loads(m.read_text())["encoder"]["name"] for m in (tmp_path / "cache" / "encoders").glob("*/meta.json")}
    assert entries == {"simclr", "vae"}
    results = json.loads((tmp_path / "both" / "results.json").read_text())
    assert results["config"]["screen_encoder"]["name"] == "vae" and len(results["records"]) == 2
    vae = dualstream(
        *tiny_overrides, "logger=none", f"hydra.run.dir={tmp_path / 'vae'}", "encoder=vae", "~screen_encoder", "encoder.steps=3",
        "encoder.batch_size=16", "loop.rounds=0", cwd=tmp_path,
    )
    assert vae.returncode == 0, vae.stderr[-3000:]
    assert "loaded encoder embedding" in vae.stdout
    assert len(list((tmp_path / "cache" / "encoders").glob("*/meta.json"))) == 2


def test_wandb_is_offline_by_default(tmp_path, tiny_overrides):
    run_dir = tmp_path / "run"
    proc = dualstream(*tiny_overrides, "loop.rounds=0", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert (run_dir / "results.json").exists()


def test_sweep_then_report(tmp_path, tiny_overrides):
    sweep = tmp_path / "sweep"
    proc = dualstream(
        "-m", *tiny_overrides, "logger=none", "acquisition=random,dualstream", "seed=0,1",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list(sweep.glob("*/results.json"))) == 4
    rep = subprocess.run([str(BIN / "dualstream-report"), str(sweep)], capture_output=True, text=True)
    assert rep.returncode == 0, rep.stderr
    assert rep.stdout.strip().endswith("report.md")
    summary = json.loads((sweep / "summary.json").read_text())
    assert set(summary["groups"]) == {"random", "dualstream"}
    assert summary["groups"]["random"]["seeds"] == [0, 1]
    assert (sweep / "learning_curves.png").stat().st_size > 1000
    assert "| dualstream | 2 |" in (sweep / "report.md").read_text()


def _write_volumes(tmp_path: Path, image_shape, label_shape) -> tuple[Path, Path]:
    img, lab = tmp_path / "img.tif", tmp_path / "lab.tif"
    rng = np.random.default_rng(0)  # a textured image and labels with foreground: only the case's flaw is wrong
    tifffile.imwrite(img, (rng.random(image_shape) * 255).astype(np.uint8))
    tifffile.imwrite(lab, ((rng.random(label_shape) > 0.7) * 255).astype(np.uint8))
    return img, lab


@pytest.mark.parametrize(
    "case, expect",
    [
        ("missing", "no such file"),
        ("mismatch", "does not match image"),
        ("unreadable", "cannot read"),
        ("empty", "the pool is empty"),
        ("budget", "the pool has only"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, tiny_overrides, case, expect):
    img, lab = _write_volumes(tmp_path, (4, 64, 64), (4, 64, 64))
    args = [f"data.image={img}", f"data.labels={lab}", "data.voxel_size=[5,5,5]", "data.patch_size=32"]
    if case == "missing":
        args[0] = f"data.image={tmp_path / 'missing.h5'}:raw"
    elif case == "mismatch":
        _, lab = _write_volumes(tmp_path, (4, 64, 64), (3, 64, 64))
    elif case == "unreadable":
        bad = tmp_path / "broken.tif"
        bad.write_bytes(b"this is not a tiff")
        args[0] = f"data.image={bad}"
    elif case == "empty":
        args[3] = "data.patch_size=128"
    elif case == "budget":
        args.append("loop.rounds=50")
    proc = dualstream(*tiny_overrides, "logger=none", f"hydra.run.dir={tmp_path / 'run'}", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("dualstream: error:")]
    assert len(errors) == 1 and expect in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


def test_hdf5_volume_with_test_split_files(tmp_path, tiny_overrides):
    """An HDF5 pool with separate HDF5 test volumes runs and scores on the given test set."""
    rng = np.random.default_rng(0)
    path = tmp_path / "vol.h5"
    with h5py.File(path, "w") as f:
        for name, z in (("raw", 2), ("test_raw", 1)):
            f[name] = (rng.random((z, 64, 64)) * 255).astype(np.uint8)
            f[name.replace("raw", "gt")] = (rng.random((z, 64, 64)) > 0.7).astype(np.uint8)
    proc = dualstream(
        *tiny_overrides, "logger=none", f"hydra.run.dir={tmp_path / 'run'}", "data.patch_size=32",
        f"data.image={path}:raw", f"data.labels={path}:gt", f"data.test_image={path}:test_raw",
        f"data.test_labels={path}:test_gt", "data.label_threshold=0", "data.voxel_size=[30,4,4]", "data.sections=null",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["pool_size"] == 8 and results["test_size"] == 4


PLUGIN = """
import numpy as np

from dualstream.acquisition import PoolView, Selection, register


@register("my_strategy")
def my_strategy(view: PoolView, batch_size: int, rng, alpha: float = 1.0) -> Selection:
    utilities = np.full(len(view), np.nan)
    utilities[view.candidates] = alpha * view.typicality[view.candidates]
    order = np.argsort(-utilities[view.candidates], kind="stable")
    return Selection(view.candidates[order[:batch_size]], utilities)
"""


@pytest.mark.slow
def test_readme_recipe_user_acquisition_module(tmp_path, tiny_overrides):
    """README "Adding an acquisition function": a module on PYTHONPATH, named by acquisition.module."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "my_plugin.py").write_text(PLUGIN)
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": f"{plugins}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    args = [
        *tiny_overrides, "logger=none", f"hydra.run.dir={run_dir}",
        "acquisition=random", "acquisition.name=my_strategy", "acquisition.module=my_plugin", "+acquisition.params.alpha=2.0",
    ]
    proc = subprocess.run([str(BIN / "dualstream"), *args], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["acquisition"] == "my_strategy"
    assert results["config"]["acquisition"]["params"] == {"alpha": 2.0}
    assert [r["n_queried"] for r in results["records"]] == [4, 8]
    # a parameter the function does not take is refused before training
    bad = subprocess.run(
        [str(BIN / "dualstream"), *args[:-1], "+acquisition.params.beta=1", f"hydra.run.dir={tmp_path / 'bad'}"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600,
    )
    assert bad.returncode == 2 and "acquisition.params.beta: not a parameter of my_strategy" in bad.stderr, bad.stderr[-2000:]


@pytest.mark.slow
def test_sweep_with_one_bad_job_runs_the_others_and_exits_2(tmp_path, tiny_overrides):
    sweep = tmp_path / "sweep"
    proc = dualstream(
        "-m", *tiny_overrides, "logger=none", "acquisition=random", "loop.batch=4,abc", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("dualstream: error:")]
    assert any("job 1 (" in line and "loop.batch=abc" in line and "loop.batch: expected an integer" in line for line in errors), errors
    assert "1 job(s) of the sweep failed" in errors[-1]
    assert len(list(sweep.glob("*/results.json"))) == 1  # the good job finished
    assert len(list(sweep.glob("*/error.txt"))) == 1


def test_encoder_progress_only_when_asked(tmp_path, caplog):
    import logging

    from dualstream.streams.data_stream import fit_data_stream
    from dualstream.trainer import set_progress

    images = np.random.default_rng(0).random((12, 16, 16)).astype(np.float32)
    enc = {"name": "simclr", "steps": 4, "batch_size": 4, "typicality_k": 3, "module": {"width": 4, "depth": 1, "embed_dim": 8, "proj_dim": 8}}
    try:
        for shown in (False, True):
            set_progress(shown)
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="dualstream.trainer"):
                fit_data_stream(images, enc, {"accelerator": "cpu"}, 0, None)
            steps = [r.getMessage() for r in caplog.records if "step" in r.getMessage()]
            if shown:
                assert any("encoder (simclr): step 4/4" in m for m in steps), steps
            else:
                assert steps == []
    finally:
        set_progress(False)
