"""The encoder on several devices: ``trainer.devices`` / ``trainer.strategy`` (DDP, gloo on CPU processes).

The slow test trains the data stream's encoder with two CPU processes in a child interpreter (so a
hung process group is killed by a timeout instead of hanging pytest) and checks the ranks, the
embedding returned to rank 0 and the cache; the fast ones pin the trainer wiring and the validation.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf
from pytorch_lightning.strategies import DDPStrategy, SingleDeviceStrategy

from dualstream.errors import ConfigError
from dualstream.streams.data_stream import _RankPoolData
from dualstream.trainer import apply_cpu_threads, build_trainer, requested_processes
from dualstream.validate import check_trainer

CPU_DDP = {"accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn", "precision": "32-true", "deterministic": False}


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# --- trainer wiring (no processes started) ---------------------------------------------------------


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn", "auto"])
def test_encoder_trainer_spawns_ddp_for_its_fit_alone(strategy):
    trainer = build_trainer({**CPU_DDP, "strategy": strategy}, 5, distributed=True)
    assert trainer.world_size == 2
    assert isinstance(trainer.strategy, DDPStrategy)
    # never Lightning's script re-launch, which would re-run the whole program in every rank
    assert trainer.strategy._start_method == "spawn"
    assert trainer.strategy.cluster_environment.__class__.__name__ == "LightningEnvironment"


def test_other_fits_stay_on_one_device_whatever_devices_says():
    trainer = build_trainer(CPU_DDP, 5)  # the task model, the detector, every predict
    assert trainer.world_size == 1 and isinstance(trainer.strategy, SingleDeviceStrategy)
    one = build_trainer({**CPU_DDP, "devices": 1, "strategy": "ddp"}, 5, distributed=True)
    assert one.world_size == 1 and isinstance(one.strategy, SingleDeviceStrategy)


def test_requested_processes():
    assert requested_processes({"devices": 3}) == 3
    assert requested_processes({"devices": [0, 1]}) == 2
    assert requested_processes({"devices": "auto", "accelerator": "cpu"}) == 1
    assert requested_processes({"devices": -1, "accelerator": "cpu"}) == _cores()


def test_ranks_draw_their_own_patches():
    images = np.random.default_rng(0).random((64, 8, 8), dtype=np.float32)

    def first_batch(rank: int) -> np.ndarray:
        data = _RankPoolData(images, steps=2, batch_size=8, seed=3)
        data.trainer = SimpleNamespace(global_rank=rank)
        return next(iter(data.train_dataloader()))[0].numpy()

    np.testing.assert_array_equal(first_batch(0), first_batch(0))  # reproducible per (seed, rank)
    assert not np.array_equal(first_batch(0), first_batch(1))
    assert first_batch(1).shape == (8, 1, 8, 8)


# --- validation ----------------------------------------------------------------------------------


def _trainer_cfg(**trainer):
    return OmegaConf.create({"trainer": {**CPU_DDP, "devices": 1, "strategy": "auto", **trainer}})


def test_unknown_strategy_is_a_config_error():
    with pytest.raises(ConfigError, match=r"trainer.strategy: Lightning knows no strategy 'dpp'") as err:
        check_trainer(_trainer_cfg(strategy="dpp"))
    assert "\n" not in str(err.value)


def test_more_devices_than_the_machine_has_is_a_config_error():
    with pytest.raises(ConfigError, match=r"trainer.devices=.*CPU cores.*lower trainer.devices") as err:
        check_trainer(_trainer_cfg(devices=_cores() + 1, strategy="ddp_spawn"))
    assert "\n" not in str(err.value)


def test_non_ddp_strategy_on_several_devices_is_a_config_error():
    if _cores() < 2:
        pytest.skip("needs 2 CPU cores")
    with pytest.raises(ConfigError, match=r"trainer.strategy=fsdp: .*DDP strategies only"):
        check_trainer(_trainer_cfg(devices=2, strategy="fsdp"))


def test_valid_multi_process_configs_pass():
    check_trainer(_trainer_cfg())
    check_trainer(_trainer_cfg(strategy="ddp"))  # one device: the strategy name is only checked
    if _cores() >= 2:
        check_trainer(_trainer_cfg(devices=2, strategy="ddp_spawn"))


# --- two CPU processes, for real -----------------------------------------------------------------

_SCRIPT = textwrap.dedent(
    '''
    """Train the encoder on 2 CPU processes (ddp_spawn, gloo); record what each rank saw."""
    import json
    import sys
    from pathlib import Path

    import numpy as np
    import pytorch_lightning as pl
    import torch

    import dualstream.streams.data_stream as ds


    class RankProbe(pl.Callback):
        """Runs in every rank: the world size the module's trainer and the process group report."""

        def __init__(self, folder):
            self.folder = folder

        def on_train_start(self, trainer, module):
            group = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
            record = {"rank": trainer.global_rank, "world_size": module.trainer.world_size, "group": group}
            Path(self.folder, f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


    def main(out):
        build = ds.build_trainer

        def with_probe(cfg, steps, progress=None, distributed=False):
            trainer = build(cfg, steps, progress, distributed)
            if distributed:
                trainer.callbacks.append(RankProbe(out))
            return trainer

        ds.build_trainer = with_probe
        images = np.random.default_rng(0).random((64, 32, 32), dtype=np.float32)
        encoder = {
            "name": "simclr", "steps": 3, "batch_size": 16, "typicality_k": 5,
            "module": {"width": 8, "depth": 2, "embed_dim": 16, "proj_dim": 8},
        }
        trainer = {"accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn", "precision": "32-true", "deterministic": False}
        stream = ds.fit_data_stream(images, encoder, trainer, seed=0, cache_dir=Path(out) / "cache")
        np.save(Path(out) / "embedding.npy", stream.embedding)
        np.save(Path(out) / "typicality.npy", stream.typicality)


    if __name__ == "__main__":
        main(sys.argv[1])
    '''
)


@pytest.mark.slow
def test_encoder_trains_on_two_cpu_processes(tmp_path):
    if _cores() < 2:
        pytest.skip("needs 2 CPU cores")
    script = tmp_path / "train_ddp.py"
    script.write_text(_SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT", "SLURM_PROCID", "SLURM_NTASKS"):
        env.pop(var, None)  # a test launched by a cluster must not look like one of its tasks
    # A session of its own, so a hung process group is killed whole (the ranks with it).
    proc = subprocess.Popen([sys.executable, str(script), str(out)], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"two-process encoder training did not finish in 300 s:\n{log[-3000:]}")
    assert proc.returncode == 0, log[-3000:]

    ranks = sorted(json.loads(p.read_text())["rank"] for p in out.glob("rank*.json"))
    assert ranks == [0, 1], log[-3000:]
    for path in out.glob("rank*.json"):
        record = json.loads(path.read_text())
        assert record["world_size"] == 2 and record["group"] == 2

    embedding = np.load(out / "embedding.npy")
    assert embedding.shape == (64, 16) and embedding.dtype == np.float32
    assert np.isfinite(embedding).all()
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-4)
    assert np.load(out / "typicality.npy").shape == (64,)

    entries = [p for p in (out / "cache" / "encoders").iterdir() if p.is_dir()]
    assert len(entries) == 1
    assert (entries[0] / "meta.json").exists() and (entries[0] / "embedding.npy").exists()
    np.testing.assert_array_equal(np.load(entries[0] / "embedding.npy"), embedding)


def test_cpu_threads_are_applied_only_when_set():
    import torch

    before = torch.get_num_threads()
    try:
        apply_cpu_threads({"cpu_threads": 1})
        assert torch.get_num_threads() == 1
        apply_cpu_threads({"cpu_threads": None})  # null keeps what is there
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
