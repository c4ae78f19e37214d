"""experiments/scripts/optuna_enqueue.py: the default's knobs read, checked against the search space, enqueued."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments" / "scripts"))
import optuna_enqueue  # noqa: E402

SWEEP = ROOT / "sweeps" / "optuna_dualstream.yaml"


def test_the_default_is_read_from_its_config_and_overridden_by_set():
    import yaml

    space = optuna_enqueue.search_space(SWEEP)
    conf = yaml.safe_load((ROOT / "conf" / "acquisition" / "dualstream.yaml").read_text())
    params = optuna_enqueue.trial_params(conf, space, [])
    assert set(params) == {"acquisition.params." + k for k in space}  # the default mixes: its fade points too
    knobs = conf["acquisition"]["params"]  # dualstream.yaml is a global-package config (it also sets model.uncertainty)
    assert params["acquisition.params.mix_start"] == knobs["mix_start"]
    assert params["acquisition.params.beta"] == pytest.approx(knobs["beta"])
    d = optuna_enqueue.trial_params(conf, space, ["mix_start=8", "mix_end=64"])
    assert (d["acquisition.params.mix_start"], d["acquisition.params.mix_end"]) == (8, 64)
    off = optuna_enqueue.trial_params(conf, space, ["mix=false"])  # fade points only under the mix (tune.only_if)
    assert off["acquisition.params.mix"] is False and "acquisition.params.mix_start" not in off


def test_fade_points_are_sampled_only_when_the_mix_is_on():
    """tune.only_if: Optuna suggests mix_start/mix_end on the trials with mix on, never with it off."""
    import yaml
    from omegaconf import OmegaConf

    from dualstream.errors import ConfigError
    from dualstream.tuning import conditional_space

    cfg = OmegaConf.create({"tune": yaml.safe_load(SWEEP.read_text())["tune"]})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        mix = trial.suggest_categorical("acquisition.params.mix", [True, False])
        conditional_space(cfg, trial)
        has = {"acquisition.params.mix_start", "acquisition.params.mix_end"} <= set(trial.params)
        assert has == mix and (not mix or trial.params["acquisition.params.mix_start"] in (4, 8))
        seen.add(mix)
        study.tell(trial, 0.0)
    assert seen == {True, False}
    with pytest.raises(ConfigError, match="not in hydra.sweeper.params"):  # a switch nothing samples
        conditional_space(cfg, study.ask())
    bad = OmegaConf.create({"tune": {"only_if": {"acquisition.params.mix": 4}}})
    with pytest.raises(ConfigError, match="expected a mapping knob"):  # checked here: the sweeper calls it before any job
        conditional_space(bad, study.ask())


@pytest.mark.parametrize("sets, message", [
    (["mix_end=20"], r"mix_end=20 is not among the search space's choices \[16, 32, 64, 128\]"),
    (["beta=3"], r"beta=3 is outside the search space's interval \[0.0, 2.0\]"),
    (["screen_k=50"], r"--set 'screen_k=50': expected KNOB=VALUE with KNOB one of"),
])
def test_values_outside_the_space_are_one_clear_line(sets, message):
    import yaml

    conf = yaml.safe_load((ROOT / "conf" / "acquisition" / "dualstream.yaml").read_text())
    with pytest.raises(SystemExit, match=message):
        optuna_enqueue.trial_params(conf, optuna_enqueue.search_space(SWEEP), sets)


def test_enqueued_trial_waits_in_the_study_file(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    optuna_enqueue.main(["--storage", storage, "--set", "mix_end=64"])
    assert "1 waiting" in capsys.readouterr().out
    study = optuna.load_study(study_name="dualstream_knobs", storage=storage)
    (trial,) = study.trials
    assert trial.state.name == "WAITING"
    assert study.trials[0].system_attrs["fixed_params"]["acquisition.params.mix_end"] == 64
    with pytest.raises(SystemExit, match="no acquisition config"):  # checked before the study is opened
        optuna_enqueue.main(["--storage", storage, "--acquisition", "nope"])
    assert len(optuna.load_study(study_name="dualstream_knobs", storage=storage).trials) == 1
