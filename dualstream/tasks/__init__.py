"""Tasks as plug-ins: what the annotator is shown and answers, and the task model that learns from it.

A task is one module and one config (``conf/task/NAME.yaml`` with ``name: NAME``). The module
defines three functions, and the runner knows nothing else about it:

- ``check_config(cfg) -> None``: cheap checks of the task's own config keys (before any work);
- ``raise_mc_samples(cfg, wanted: int) -> None``: give the task model ``wanted`` MC-dropout samples
  (BALD asks for them through ``acquisition.mc_samples``);
- ``prepare(cfg, run_dir) -> TaskSetup``: build the pool (what is queried), the budget, the streams'
  factory, the simulated annotator (when the data has ground truth) and the results' extra numbers.

Built in: ``segment`` (dense masks of patches) and ``detect`` (True/False verdicts on detector
proposals, Lin et al., ECCV 2020). A task of your own: ``task.module=my_pkg.my_task task.name=mine``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from dualstream.errors import ConfigError

if TYPE_CHECKING:
    from dualstream.loop import LoopSettings, TaskModel
    from dualstream.oracle import Annotator
    from dualstream.streams.data_stream import DataStream

BUILTIN = {"segment": "dualstream.tasks.segment", "detect": "dualstream.tasks.detect"}


@dataclass
class TaskSetup:
    """What a task hands the runner for one run.

    Attributes:
        items: ``(N, ...)`` what the annotator is shown (``(N, P, P)`` patches, ``(N, 2, C, C)`` crops).
        settings: the labelling budget, checked against ``N``.
        streams: builds the frozen data stream and the task model (called inside the logger's lifetime).
        annotator: the simulated annotator answering from ground truth; ``None`` when the pool has no
            labels (then only ``annotator=files`` can answer).
        extra: numbers for ``results.json`` (pool size, artifacts, task-specific counts).
        pool: the task's pool object (``PatchPool``, ``Proposals``), for callers that need more than
            ``items`` (patch origins for a lab's query list).
    """

    items: np.ndarray
    settings: "LoopSettings"
    streams: Callable[[], tuple["DataStream", "TaskModel"]]
    annotator: "Annotator | None"
    extra: dict[str, Any] = field(default_factory=dict)
    pool: Any = None


def task_module(cfg: Any) -> ModuleType:
    """The module of ``task.name`` (a built-in, or the one ``task.module`` names).

    Raises:
        ConfigError: unknown name, or a ``task.module`` that cannot be imported or lacks the three functions.
    """
    name = cfg.task.get("name")
    path = cfg.task.get("module") or BUILTIN.get(name)
    if path is None:
        raise ConfigError(
            f"task.name={name!r} is not a built-in task ({', '.join(BUILTIN)}); choose one, or give your own"
            " task's module as task.module=my_pkg.my_task"
        )
    try:
        module = importlib.import_module(path)
    except Exception as err:  # noqa: BLE001  whatever a user's module raises on import
        raise ConfigError(f"task.module: cannot import {path!r} ({type(err).__name__}: {err})") from err
    missing = [f for f in ("check_config", "raise_mc_samples", "prepare") if not callable(getattr(module, f, None))]
    if missing:
        raise ConfigError(f"task.module: {path!r} does not define {', '.join(missing)} (see dualstream.tasks)")
    return module
