"""Tuning trials over several seeds (dualstream.tuning): the mean objective, the sub-run folders, the checks."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from omegaconf import OmegaConf

from dualstream.errors import ConfigError
from dualstream.tuning import TUNE_FILE, check_tune, objective_of, run_seeds


def fake_run(values: dict[int, float | None]):
    """A run_one that writes a results.json with the given aulc_log2 per seed, and records its calls."""
    calls = []

    def run_one(cfg, run_dir):
        calls.append((int(cfg.seed), run_dir.name))
        (run_dir / "results.json").write_text(json.dumps({"aulc_log2": values[int(cfg.seed)], "aulc": 0.5}))

    return run_one, calls


def trial_cfg(seeds, objective="aulc_log2"):
    return OmegaConf.create({"seed": 0, "acquisition": {"name": "dualstream"}, "tune": {"seeds": seeds, "objective": objective}})


def test_mean_over_seeds_with_one_folder_each(tmp_path):
    run_one, calls = fake_run({100: 0.50, 101: 0.60, 102: 0.70})
    overrides = ["acquisition.params.beta=0.5", "seed=7", "tune.seeds=[100,101,102]"]
    mean = run_seeds(trial_cfg([100, 101, 102]), tmp_path, overrides, run_one)
    assert mean == pytest.approx(0.60)
    assert calls == [(100, "seed_100"), (101, "seed_101"), (102, "seed_102")]
    summary = json.loads((tmp_path / TUNE_FILE).read_text())
    assert summary["values"] == {"100": 0.5, "101": 0.6, "102": 0.7} and summary["mean"] == pytest.approx(0.6)
    # Each sub-run carries the trial's knobs and its own seed, so the report pairs trials seed by seed.
    written = yaml.safe_load((tmp_path / "seed_101" / ".hydra" / "overrides.yaml").read_text())
    assert written == ["acquisition.params.beta=0.5", "seed=101"]


def test_objective_choice_and_a_failed_seed_is_nan(tmp_path):
    run_one, _ = fake_run({1: 0.4, 2: None})
    assert math.isnan(run_seeds(trial_cfg([1, 2]), tmp_path, [], run_one))
    assert json.loads((tmp_path / TUNE_FILE).read_text())["mean"] is None  # strict JSON, no NaN
    assert run_seeds(trial_cfg([1], objective="aulc"), tmp_path / "b", [], fake_run({1: 0.4})[0]) == 0.5
    assert math.isnan(objective_of(tmp_path / "missing", "aulc_log2"))


@pytest.mark.parametrize(
    "tune, match",
    [
        ({"seeds": None, "objective": "f1"}, "tune.objective='f1'"),
        ({"seeds": 100, "objective": "aulc"}, "tune.seeds: expected a non-empty list"),
        ({"seeds": [], "objective": "aulc"}, "tune.seeds: expected a non-empty list"),
        ({"seeds": [100, -1], "objective": "aulc"}, "distinct integers >= 0"),
        ({"seeds": [100, 100], "objective": "aulc"}, "distinct integers >= 0"),
        ({"seeds": ["a"], "objective": "aulc"}, "distinct integers >= 0"),
        ({"only_if": [1, 2]}, "tune.only_if: expected a mapping"),
        ({"only_if": {"acquisition.params.mix": 4}}, r"tune.only_if.acquisition.params.mix: expected a mapping knob"),
        ({"only_if": {"acquisition.params.mix": {"acquisition.params.mix_end": []}}}, "expected a non-empty list of choices"),
        ({"only_if": {"acquisition.params.mix": {"acquisition.params.mix_end": "16"}}}, "expected a non-empty list of choices"),
    ],
)
def test_bad_tune_settings_are_one_line_errors(tune, match):
    with pytest.raises(ConfigError, match=match):
        check_tune(OmegaConf.create({"tune": tune}))
    check_tune(OmegaConf.create({"tune": {"seeds": [100, 101], "objective": "aulc"}}))  # fine
    check_tune(OmegaConf.create({}))  # no tune section: defaults
