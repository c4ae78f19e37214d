"""Presets, sweeps and launchers: every experiment/sweep composes; submitit and Optuna really run."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from dualstream.cli import CONF_DIR
from conftest import compose_config
from test_cli import dualstream

ROOT = CONF_DIR.parent
EXPERIMENTS = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))
SWEEPS = sorted(p.stem for p in (ROOT / "sweeps").glob("*.yaml"))


def _compose(*overrides: str):
    return compose_config(overrides, hydra=True)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_presets_compose(name):
    cfg = _compose(f"experiment={name}")
    assert cfg.loop.initial >= 1 and cfg.acquisition.name
    assert cfg.data.image and cfg.data.labels


@pytest.mark.parametrize("name", SWEEPS)
def test_sweeps_compose_and_name_known_choices(name):
    cfg = _compose(f"sweep={name}")
    assert cfg.hydra.mode.name == "MULTIRUN"
    params = cfg.hydra.sweeper.params
    assert params, f"sweep {name} sweeps nothing"
    for acq in str(params.get("acquisition", "")).split(","):
        if acq:
            assert (CONF_DIR / "acquisition" / f"{acq.strip()}.yaml").exists(), acq


def test_sweep_settings_win_over_the_experiment_preset():
    # experiment=mito_epfl sets loop.initial=4; sweep=full_pool must still label the whole pool
    cfg = _compose("experiment=mito_epfl", "sweep=full_pool")
    assert str(cfg.loop.initial) == "all" and cfg.acquisition.name == "random"
    assert cfg.data.downsample == 2  # the experiment's data choice is kept


def _encoders(cfg) -> tuple[str, str | None]:
    screen = cfg.get("screen_encoder")
    return str(cfg.encoder.name), (str(screen.name) if screen else None)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ((), ("vae", "simclr")),                                   # the default dualstream: VAE weight, SimCLR veto
        (("acquisition=random",), ("simclr", None)),               # every other strategy: SimCLR alone
        (("acquisition=dualstream_v1",), ("simclr", None)),
        (("encoder=simclr", "~screen_encoder"), ("simclr", None)),  # candidate H, as BENCHMARKS reruns it
        (("encoder=simclr",), ("simclr", "simclr")),               # the command line wins over the strategy
        (("experiment=mito_epfl_artifacts",), ("vae", "simclr")),
        (("experiment=demo3d",), ("simclr", None)),                # 3D: both of the pair are 2D only
        (("experiment=detect_psd",), ("simclr", None)),            # detect presets: no VAE-weight runs
        (("experiment=detect_psd_artifacts",), ("simclr", None)),
        (("experiment=detect_mito",), ("simclr", None)),
        (("experiment=detect_demo",), ("simclr", None)),
        (("experiment=detect_psd", "encoder=vae"), ("vae", None)),
    ],
)
def test_which_encoders_each_strategy_and_preset_selects(overrides, expected):
    """acquisition=dualstream selects the VAE weight and SimCLR veto for itself only (BENCHMARKS §3, session 19)."""
    cfg = _compose(*overrides)
    assert _encoders(cfg) == expected
    assert not cfg.get("screen_encoder") or cfg.screen_encoder.steps == cfg.encoder.steps  # trained as long


def test_the_lab_loop_uses_the_default_encoders_and_a_screened_cold_start():
    """conf/suggest.yaml: the default dualstream's VAE weight and SimCLR veto (BENCHMARKS §7, session 20)."""
    from dualstream.runner import cold_screen_params

    cfg = compose_config(["project=p", "data.image=v.zarr"], name="suggest")
    asked = compose_config(["project=p", "data.image=v.zarr", "encoder=simclr", "~screen_encoder"], name="suggest")
    assert cfg.acquisition.name == "dualstream" and _encoders(cfg) == ("vae", "simclr")
    assert cfg.loop.cold_start == "typiclust" and cold_screen_params(cfg)["screen_z"] == 3.5
    assert _encoders(asked) == ("simclr", None)


def test_default_launcher_is_parallel_joblib():
    cfg = _compose()
    assert "JoblibLauncher" in cfg.hydra.launcher._target_ and cfg.hydra.launcher.n_jobs == 2
    slurm = _compose("hydra/launcher=slurm")
    assert "SlurmLauncher" in slurm.hydra.launcher._target_


def test_submitit_local_launcher_runs_a_job(tmp_path, tiny_overrides):
    sweep = tmp_path / "sweep"
    proc = dualstream(
        "-m", "hydra/launcher=submitit_local", *tiny_overrides, "logger=none", "loop.rounds=0",
        "acquisition=random", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (sweep / "0_random_s0" / "results.json").exists()


def test_optuna_sweep_maximises_the_mean_over_tuning_seeds(tmp_path, tiny_overrides):
    sweep = tmp_path / "sweep"
    storage = f"hydra.sweeper.storage=sqlite:///{tmp_path / 'study.db'}"  # absolute path: four slashes
    proc = dualstream(
        "sweep=optuna_dualstream", *tiny_overrides, "logger=none", "hydra.sweeper.n_trials=2", "tune.seeds=[100,101]",
        storage, f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    knobs = {f"acquisition.params.{k}" for k in ("beta", "factor", "mix", "screen_z", "screen_embedding", "diverse_end")}
    fade = {"acquisition.params.mix_start", "acquisition.params.mix_end"}  # sampled only with the mix on (tune.only_if)
    assert set(best["best_params"]) == knobs | (fade if best["best_params"]["acquisition.params.mix"] else set())
    assert len(list(Path(sweep).glob("*/seed_*/results.json"))) == 4  # 2 trials x 2 tuning seeds
    trials = [json.loads(p.read_text()) for p in Path(sweep).glob("*/tune.json")]
    assert len(trials) == 2 and all(t["seeds"] == [100, 101] for t in trials)
    for t in trials:  # the objective is the mean of the seeds' log2 AULC, read back from their results
        assert t["mean"] == pytest.approx(sum(t["values"].values()) / 2)
    assert best["best_value"] == pytest.approx(max(t["mean"] for t in trials))

    # A search spread over sittings: a second launch into a new sweep dir with the same storage adds
    # its trials to the same study (job numbers restart at 0, so the dir must differ) and reports the
    # best over all of them.
    again = tmp_path / "sweep2"
    proc = dualstream(
        "sweep=optuna_dualstream", *tiny_overrides, "logger=none", "hydra.sweeper.n_trials=1", "tune.seeds=[100,101]",
        storage, f"hydra.sweep.dir={again}", cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="dualstream_knobs", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    third = json.loads(next(again.glob("*/tune.json")).read_text())["mean"]
    both = yaml.safe_load((again / "optimization_results.yaml").read_text())
    assert both["best_value"] == pytest.approx(max(best["best_value"], third))
