"""Objective of one hyperparameter trial: one run, or the mean over several tuning seeds.

A knob tuned on one seed learns that seed's initial set (issue 10: the old search tuned on a seed
whose random start held 3.8% foreground). With ``tune.seeds: [100, 101, 102]`` one trial runs each
seed in its own sub-folder (``seed_100/`` ...) and scores the mean, so the search sees the knob and
not the start. Seeds given here must stay apart from the reported ones (0-9 in BENCHMARKS.md).

Each sub-folder is an ordinary run (``results.json``, loop state, ``.hydra/overrides.yaml`` with
the trial's overrides plus ``seed=S``), so a relaunched study skips finished seeds and
``dualstream-report`` pairs the trials seed by seed. ``tune.json`` in the trial folder keeps the
per-seed values and their mean.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dualstream.errors import ConfigError

log = logging.getLogger(__name__)

OBJECTIVES = ("aulc_log2", "aulc")
DEFAULT_OBJECTIVE = OBJECTIVES[0]  # the benchmark's headline score
TUNE_FILE = "tune.json"


def check_tune(cfg: Any) -> None:
    """One-line :class:`ConfigError` for a bad ``tune`` section (``seeds``, ``objective``, ``only_if``)."""
    tune = cfg.get("tune") or {}
    objective = tune.get("objective", DEFAULT_OBJECTIVE)
    if objective not in OBJECTIVES:
        raise ConfigError(f"tune.objective={objective!r}; choose one of {', '.join(OBJECTIVES)}")
    _check_only_if(tune)
    seeds = tune.get("seeds")
    if seeds is None:
        return
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not len(seeds):
        raise ConfigError(f"tune.seeds: expected a non-empty list of seeds (e.g. tune.seeds=[100,101,102]) or null, got {seeds!r}")
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"tune.seeds: expected distinct integers >= 0, got {list(seeds)!r}")


def conditional_space(cfg: Any, trial: Any) -> None:
    """Optuna search-space extender (``hydra.sweeper.custom_search_space``) for ``tune.only_if``.

    ``tune.only_if`` maps a boolean knob of ``hydra.sweeper.params`` to knobs that act only when it is
    true, each with its choices, e.g. the budget mix's fade points under ``acquisition.params.mix``.
    They are suggested only on the trials that turn the switch on, so the sampler does not spend
    trials (and TPE's density estimates) on values a run never reads.

    Args:
        cfg: the sweep's primary config (``DictConfig``).
        trial: the ``optuna.trial.Trial`` being configured; its ``params`` hold the sampled switches.
    """
    tune = cfg.get("tune") or {}
    _check_only_if(tune)  # the sweeper calls this before any job validates the config
    for switch, knobs in (tune.get("only_if") or {}).items():
        if switch not in trial.params:
            raise ConfigError(
                f"tune.only_if.{switch}: {switch} is not in hydra.sweeper.params, so nothing samples it;"
                f" add it there (e.g. {switch}: choice(true, false)) or drop it from tune.only_if"
            )
        if trial.params[switch] in (True, "true", "True"):
            for name, choices in knobs.items():
                trial.suggest_categorical(str(name), list(choices))


def _check_only_if(tune: Any) -> None:
    rules = tune.get("only_if")
    if rules is None:
        return
    if not hasattr(rules, "items"):
        raise ConfigError(f"tune.only_if: expected a mapping switch -> {{knob: [choices]}}, got {rules!r}")
    for switch, knobs in rules.items():
        if not hasattr(knobs, "items") or not len(knobs):
            raise ConfigError(f"tune.only_if.{switch}: expected a mapping knob -> [choices], got {knobs!r}")
        for name, choices in knobs.items():
            if isinstance(choices, (str, bytes)) or not isinstance(choices, Sequence) or not len(choices):
                raise ConfigError(f"tune.only_if.{switch}.{name}: expected a non-empty list of choices, e.g. [4, 8], got {choices!r}")


def objective_of(run_dir: str | Path, objective: str) -> float:
    """``objective`` (a key of ``results.json``: ``aulc_log2``, ``aulc``) of the run in ``run_dir``; NaN when missing."""
    from dualstream.results import RESULTS_FILE

    try:
        value = json.loads((Path(run_dir) / RESULTS_FILE).read_text()).get(objective)
    except (OSError, ValueError):
        return float("nan")
    return float("nan") if value is None else float(value)


def run_seeds(
    cfg: Any,
    run_dir: str | Path,
    overrides: Sequence[str],
    run_one: Callable[[Any, Path], None],
) -> float:
    """Run the trial ``cfg`` once per ``cfg.tune.seeds`` and return the mean ``cfg.tune.objective``.

    Args:
        cfg: the trial's composed config (``DictConfig``); copied with ``seed`` set per sub-run.
        run_dir: the trial's folder; seed ``S`` runs in ``run_dir / f"seed_{S}"``.
        overrides: the trial's Hydra overrides, written beside each sub-run (plus ``seed=S``).
        run_one: ``(cfg, run_dir) -> None``: runs (or skips, when finished) one seed into its folder.

    Returns:
        The mean objective over seeds; NaN if any seed's is NaN (a failed curve must not look good).
    """
    from omegaconf import OmegaConf

    run_dir = Path(run_dir)
    seeds = [int(s) for s in cfg.tune.seeds]
    objective = str(cfg.tune.get("objective", DEFAULT_OBJECTIVE))
    values: dict[str, float] = {}
    for seed in seeds:
        sub = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        sub.seed = seed
        sub_dir = run_dir / f"seed_{seed}"
        (sub_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        kept = [o for o in overrides if not o.lstrip("+~").startswith(("seed=", "tune."))]
        (sub_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in [*kept, f"seed={seed}"]))
        log.info("tuning trial %s: seed %d of %s", run_dir.name, seed, seeds)
        run_one(sub, sub_dir)
        values[str(seed)] = objective_of(sub_dir, objective)
    finite = [v for v in values.values() if math.isfinite(v)]
    mean = sum(finite) / len(finite) if len(finite) == len(values) else float("nan")
    summary = {"objective": objective, "seeds": seeds, "values": values, "mean": mean if math.isfinite(mean) else None}
    (run_dir / TUNE_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    log.info("tuning trial %s: mean %s %.4f over seeds %s", run_dir.name, objective, mean, seeds)
    return mean
