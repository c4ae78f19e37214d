"""Tasks are plug-ins: the runner finds a task's module by name (or ``task.module``) and nothing else."""

from __future__ import annotations

import sys
import types

import pytest
from omegaconf import OmegaConf

from dualstream.errors import ConfigError
from dualstream.tasks import BUILTIN, task_module


def _cfg(**task):
    return OmegaConf.create({"task": task})


def test_builtin_tasks_resolve_to_their_modules():
    for name, path in BUILTIN.items():
        assert task_module(_cfg(name=name)).__name__ == path


def test_a_users_task_module_is_loaded_and_checked(monkeypatch):
    mine = types.ModuleType("my_lab_task")
    mine.check_config = lambda cfg: None
    mine.raise_mc_samples = lambda cfg, wanted: None
    mine.prepare = lambda cfg, run_dir: None
    monkeypatch.setitem(sys.modules, "my_lab_task", mine)
    assert task_module(_cfg(name="mine", module="my_lab_task")) is mine

    half = types.ModuleType("half_task")
    half.prepare = lambda cfg, run_dir: None
    monkeypatch.setitem(sys.modules, "half_task", half)
    with pytest.raises(ConfigError, match="does not define check_config, raise_mc_samples"):
        task_module(_cfg(name="half", module="half_task"))


def test_unknown_task_and_unimportable_module_are_config_errors():
    with pytest.raises(ConfigError, match="not a built-in task"):
        task_module(_cfg(name="segmnet"))
    with pytest.raises(ConfigError, match="cannot import 'no_such_pkg.task'"):
        task_module(_cfg(name="x", module="no_such_pkg.task"))


def test_no_task_branches_left_in_the_runner():
    import inspect

    import dualstream.runner as runner

    source = inspect.getsource(runner)
    assert '"detect"' not in source and "detect_runner" not in source
