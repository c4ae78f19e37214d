"""``dualstream-report SWEEP_DIR``: aggregate every ``results.json`` under a directory.

Writes, into ``SWEEP_DIR`` (or ``--out``):

- ``report.md``: per setting (acquisition plus any other override that varies), the score at each
  budget as mean ± sample SD over seeds, the area under the learning curve (log2 AULC, the headline,
  and linear AULC beside it), the share of the budget spent on artifacts, the stream correlation and
  the selection time; then every setting paired by seed against a reference setting.
- ``learning_curves.png``: score vs queries on a log2 axis (mean line, ±1 SD band) beside a bar per
  setting of its log2 AULC with a 95% confidence interval.
- ``paired.png``: the paired comparison against the reference: Δ log2 AULC per setting with its
  bootstrap CI (filled where p < 0.05) beside a settings x budgets map of Δ score (see
  :mod:`dualstream.report_plots`).
- ``summary.json``: the same numbers, strict JSON (undefined values are ``null``, never ``NaN``).

Runs are grouped by their Hydra overrides minus ``seed`` (read from ``.hydra/overrides.yaml`` beside
each ``results.json``); without them, by acquisition name.

Statistics
----------
- **Spread.** Every ± is the sample standard deviation over seeds (``ddof=1``); with one seed it is
  undefined and shown as ``n/a``. The bars of the plot are Student-t 95% intervals of the mean AULC.
- **AULC.** Log2 AULC weighs each doubling of the budget equally, linear AULC each query equally
  (see :mod:`dualstream.results`). Both are computed from the records here, only over runs that reached
  the group's last round; a budget column uses every seed that reached that budget (its ``n`` is shown
  when some did not).
- **What is paired.** Two settings run with the same seed share the initial random set, the model
  initialisation and the split, so the report compares them within a seed: ``Δ = value(setting) −
  value(reference)`` for every seed both ran (``--reference``, default ``random``, naming a setting or
  the acquisition of exactly one setting; when it is missing, ``dualstream``, and the report says so). This is done for both AULCs and for the score at each budget, where
  budgets are matched by their ``n_queried`` value, not by round index.
- **Interval.** The 95% CI of the mean Δ is a percentile bootstrap (10 000 resamples of the seeds'
  Δ with replacement, generator seeded with 0, so reports are reproducible). With fewer than about
  10 seeds it is too narrow; read it together with the test.
- **Test.** Two-sided Wilcoxon signed-rank test on the Δ (``scipy.stats.wilcoxon``): it asks whether
  the Δ are symmetric around 0 without assuming they are normal. Zero differences are dropped (all
  zero: p = 1); with one seed there is no test (p is ``null``, "untested"). With 5 or fewer non-zero
  differences it cannot reach p < 0.05 (the smallest exact two-sided p is ``2 / 2**n``).
- **Significant** means p < 0.05 for that one comparison. It is *uncorrected for multiple
  comparisons*: with k settings against the reference (and again per budget) about one true null in
  20 is flagged by chance; apply Bonferroni (p < 0.05 / k) or similar before claiming a winner.
- **Seeds needed.** For each comparison, the seeds a paired test would need to resolve a 0.02 AULC
  difference at the measured SD of Δ (normal approximation, two-sided 0.05, power 0.8; see
  :func:`dualstream.stats.seeds_needed`).

Damaged input is reported, not hidden: a results file that is not a JSON object with numeric records
is skipped with a warning; runs of one setting with different lengths (a killed sweep) and a seed
found twice in one setting are warned about on stderr and in ``report.md``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dualstream.report_plots import HIGHLIGHT, plot_curves, plot_paired
from dualstream.results import RESULTS_FILE, area_under_curve, log_area_under_curve
from dualstream.stats import ALPHA, holm, mean_ci, paired_difference, seeds_needed

DEFAULT_REFERENCE = "random"
FALLBACK_REFERENCE = "dualstream"
STANDARD_KEYS = {
    "round", "n_labeled", "n_queried", "n_skipped", "score", "stream_correlation", "seconds", "selection_seconds", "train_loss",
}
FULL_POOL = "full pool"  # runs with loop.initial=all: the score of training on every pool item
TARGET_SHARE = 0.95
EFFECT = 0.02  # the AULC difference the "seeds needed" column is sized for
N_BOOT = 10000
CI = 0.95
BOOT_SEED = 0
SIGNIFICANT = "✱ significant at 0.05"
NOT_SIGNIFICANT = "not significant"
UNTESTED = "untested (n < 2)"


@dataclass
class Run:
    path: Path
    group: str
    seed: int
    data: dict[str, Any]

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.data["records"]

    @property
    def planned(self) -> int:
        """Rounds the run's own config asks for (0 when it does not say): a run killed or still
        running has fewer records, even when it is the only run of its setting."""
        loop = (self.data.get("config") or {}).get("loop") or {}
        try:
            if loop.get("schedule"):
                return len(loop["schedule"])
            if str(loop.get("initial")) == "all":
                return 1
            return int(loop["rounds"]) + 1
        except (KeyError, TypeError, ValueError):
            return 0

    def by_budget(self, key: str) -> dict[float, float]:
        """``n_queried -> value of key`` over the run's records (a missing or null value is NaN)."""
        return {float(rec["n_queried"]): _num(rec.get(key)) for rec in self.records}


@dataclass
class Group:
    """All seeds of one setting; curves are aligned by budget (``n_queried``), not by round."""

    name: str
    runs: list[Run] = field(default_factory=list)

    @property
    def length(self) -> int:
        """Rounds of the longest run, or that the runs' configs plan: a run with fewer did not finish."""
        return max(max(len(r.records), r.planned) for r in self.runs)

    @property
    def complete(self) -> list[Run]:
        return [r for r in self.runs if len(r.records) == self.length]

    @property
    def incomplete(self) -> list[Run]:
        return [r for r in self.runs if len(r.records) < self.length]

    def budgets(self) -> list[float]:
        """Sorted union of the budgets any run reached."""
        return sorted({float(rec["n_queried"]) for r in self.runs for rec in r.records})

    def at_budget(self, key: str, budget: float) -> dict[int, float]:
        """``seed -> value of key`` at ``budget`` for the runs that reached it."""
        found = {r.seed: r.by_budget(key) for r in self.runs}
        return {seed: values[budget] for seed, values in found.items() if budget in values}

    def values(self, key: str) -> np.ndarray:
        """Every record's value of ``key`` over all runs, flattened, as floats (NaN where missing)."""
        return np.array([_num(rec.get(key)) for r in self.runs for rec in r.records], dtype=float)

    def aulc(self, log: bool = True) -> dict[int, float]:
        """``seed -> AULC`` (log2 or linear) of the complete runs."""
        fn = log_area_under_curve if log else area_under_curve
        return {r.seed: fn(r.records) for r in self.complete}


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _warn(warnings: list[str] | None, message: str) -> None:
    """A one-line warning on stderr, kept for ``report.md`` too."""
    print(f"dualstream-report: warning: {message}", file=sys.stderr)
    if warnings is not None:
        warnings.append(message)


def _problem(data: Any) -> str | None:
    """What makes a parsed ``results.json`` unusable, in a few words; ``None`` when it is usable."""
    if not isinstance(data, dict):
        return f"top level is a JSON {type(data).__name__}, expected an object with 'records'"
    records = data.get("records")
    if not isinstance(records, list):
        return "no 'records' list"
    if not records:
        return "no records (the run finished no round)"
    seed = data.get("seed", 0)
    if not _is_number(seed) or not float(seed).is_integer():
        return f"seed is {seed!r}, not an integer"
    last = -math.inf
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            return f"record {i} is a JSON {type(rec).__name__}, not an object"
        for key in ("n_queried", "score"):
            if key not in rec:
                return f"record {i} has no '{key}'"
            if not _is_number(rec[key]) or not math.isfinite(rec[key]):
                return f"record {i} has {key}={rec[key]!r}, not a finite number"
        for key, value in rec.items():
            if value is not None and not _is_number(value):
                return f"record {i} has {key}={value!r}, not a number"
        if rec["n_queried"] < last:
            return f"n_queried goes down at record {i} ({last:g} -> {rec['n_queried']:g})"
        last = rec["n_queried"]
    return None


def _overrides(results_path: Path, warnings: list[str] | None = None) -> dict[str, str]:
    """``key -> value`` of the run's Hydra overrides, from ``.hydra/overrides.yaml`` beside the results."""
    path = results_path.parent / ".hydra" / "overrides.yaml"
    if not path.exists():
        return {}
    import yaml

    try:
        items = yaml.safe_load(path.read_text()) or []
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as err:
        _warn(warnings, f"{path}: unreadable ({type(err).__name__}); grouping that run by acquisition only")
        return {}
    if not isinstance(items, list):
        _warn(warnings, f"{path}: not a list of overrides; grouping that run by acquisition only")
        return {}
    return dict(str(item).lstrip("+~").split("=", 1) for item in items if "=" in str(item))


# Run settings that do not define a strategy's setting: the seed, the strategy itself, output, and
# how fast the same computation runs (threads, pool-inference options; float rounding at most).
IGNORED_KEYS = (
    "seed", "acquisition", "progress", "logger", "trainer.cpu_threads",
    "trainer.channels_last", "trainer.fuse_batchnorm", "trainer.compile", "trainer.predict_batch_size",
    "tune.seeds", "tune.objective",
)


def _recorded_params(data: dict[str, Any]) -> dict[str, str]:
    """The run's acquisition parameters as its config recorded them, a missing one at the strategy's
    default (a key added to a preset later means the default), each as a JSON string for comparing."""
    cfg = data.get("config") if isinstance(data.get("config"), dict) else {}
    acq = cfg.get("acquisition") if isinstance(cfg.get("acquisition"), dict) else {}
    recorded = acq.get("params") if isinstance(acq.get("params"), dict) else {}
    defaults: dict[str, Any] = {}
    try:
        from dualstream.acquisition import REGISTRY
        from dualstream.acquisition.base import strategy_params

        fn = REGISTRY.get(str(data.get("acquisition")))
        if fn is not None:
            defaults = {n: q.default for n, q in strategy_params(fn).items() if q.default is not inspect.Parameter.empty}
    except (ImportError, TypeError, ValueError):  # a user strategy that is not registered here
        defaults = {}
    return {k: json.dumps(v, sort_keys=True, default=str) for k, v in {**defaults, **recorded}.items()}


def _differing_params(
    found: list[tuple[Path, Any, dict[str, str]]], params: list[dict[str, str]], named: set[str], ignored: set[str] = frozenset()
) -> dict[str, list[str]]:
    """``acquisition -> parameter names`` whose recorded values differ between runs of that strategy
    that no override in their names tells apart (a preset edited between runs, a default changed, a
    copy of the runs without their ``.hydra`` folder): without them in the setting's name, different
    computations would be merged into one setting.

    ``named``: the overrides that go into setting names. An override names parameter ``k`` of a run
    when that run carries ``acquisition.params.k`` or the whole mapping ``acquisition.params`` among
    them; an override on *other* runs (another strategy's, say) names nothing for this one.
    ``ignored``: overrides the user leaves out of settings (``--ignore-key``): such parameters merge.
    """
    by_acq: dict[str, list[tuple[dict[str, str], dict[str, str]]]] = {}
    for (_, data, overrides), p in zip(found, params):
        by_acq.setdefault(str(data.get("acquisition", "?")), []).append((overrides, p))
    out = {}
    for acq, items in by_acq.items():
        names = sorted({k for _, p in items for k in p})
        keys = []
        for k in names:
            spellings = {f"acquisition.params.{k}", "acquisition.params"}  # the overrides that can set k
            if spellings & ignored:
                continue
            unnamed = [p for o, p in items if not spellings & named & o.keys()]
            if len({p.get(k) for p in unnamed}) > 1:
                keys.append(k)
        if keys:
            out[acq] = keys
    return out


def _show(value: str | None) -> str:
    """A recorded parameter (JSON string) as an override would spell it: ``null``, ``True``, ``3.5``."""
    if value is None:
        return "unset"
    v = json.loads(value)
    return "null" if v is None else str(v)


def _keep_one(group: Group, warnings: list[str] | None) -> None:
    """Keep one run per seed: the most complete, then the most recently written, then the later path."""
    by_seed: dict[int, list[Run]] = {}
    for run in group.runs:
        by_seed.setdefault(run.seed, []).append(run)
    kept = []
    for seed, runs in by_seed.items():
        best = max(runs, key=lambda r: (len(r.records), r.path.stat().st_mtime, str(r.path)))
        kept.append(best)
        if len(runs) > 1:
            others = ", ".join(str(r.path.parent) for r in runs if r is not best)
            _warn(warnings, f"setting {group.name!r}: seed {seed} appears more than once ({best.path.parent} and {others});"
                  f" keeping {best.path.parent} (most rounds, then newest) and counting the seed once")
    group.runs = sorted(kept, key=lambda r: r.seed)


def _as_dirs(sweep_dir: str | Path | Sequence[str | Path]) -> list[Path]:
    """One directory or several, as a list of paths."""
    return [Path(sweep_dir)] if isinstance(sweep_dir, (str, Path)) else [Path(d) for d in sweep_dir]


def _label(dirs: list[Path]) -> Path:
    """How messages and the report's title name the runs' directories (``a + b`` for several)."""
    return dirs[0] if len(dirs) == 1 else Path(" + ".join(str(d) for d in dirs))


def collect(
    sweep_dir: Path | Sequence[Path], warnings: list[str] | None = None, ignore_keys: Sequence[str] = ()
) -> dict[str, Group]:
    """Read every ``results.json`` under ``sweep_dir`` (one directory or several), grouped by setting.

    A setting is the acquisition plus every override whose value differs between the runs found
    (seed excluded), so a sweep over ``acquisition x beta x seed`` gives one group per
    ``(acquisition, beta)``; and every acquisition parameter whose recorded value differs between runs
    of one strategy with no override saying so (a preset's defaults changed between them), so that
    different computations are never merged under one name. ``ignore_keys``: overrides left out of the setting (e.g. ``sweep`` when runs
    of one setting were launched by different sweep presets). Unusable files are skipped and a seed
    found twice in a setting is kept once, each with a warning on stderr, also appended to
    ``warnings`` when given.

    Raises:
        FileNotFoundError: a directory is missing, or none holds usable results.
    """
    dirs = _as_dirs(sweep_dir)
    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: no such directory")
    sweep_dir = _label(dirs)  # for the messages
    found = []
    skipped = 0
    for path in sorted(p for d in dirs for p in d.rglob(RESULTS_FILE)):
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            _warn(warnings, f"skipping {path}: not valid JSON ({err})")
            skipped += 1
            continue
        except (OSError, UnicodeDecodeError) as err:
            _warn(warnings, f"skipping {path}: cannot read it ({type(err).__name__}: {err})")
            skipped += 1
            continue
        problem = _problem(data)
        if problem:
            _warn(warnings, f"skipping {path}: {problem}")
            skipped += 1
            continue
        if data.get("finished") is False:  # older files have no such field: no warning
            _warn(warnings, f"{path}: unfinished run ({len(data['records'])} rounds so far: still running, or stopped "
                  "before its last round; rerun it into the same folder to resume)")
        found.append((path, data, _overrides(path, warnings)))
    if not found:
        detail = f" ({skipped} skipped, see the warnings above)" if skipped else ""
        raise FileNotFoundError(f"{sweep_dir}: no usable {RESULTS_FILE} with records found below it{detail}")
    references = [(p, d) for p, d, _ in found if d.get("full_pool")]
    found = [item for item in found if not item[1].get("full_pool")]
    if not found:
        raise FileNotFoundError(f"{sweep_dir}: only full-pool runs (loop.initial=all) below it; no learning curve to report")
    ignored = set(IGNORED_KEYS) | set(ignore_keys)
    keys = {k for _, _, o in found for k in o if not (k in ignored or k.startswith(("hydra.", "paths.")))}
    varying = sorted(k for k in keys if len({o.get(k) for _, _, o in found}) > 1)
    params = [_recorded_params(data) for _, data, _ in found]
    differ = _differing_params(found, params, set(varying), ignored)
    groups: dict[str, Group] = {}
    for (path, data, overrides), p in zip(found, params):
        extra = [f"{k}={overrides[k]}" for k in varying if k in overrides]
        extra += [f"acquisition.params.{k}={_show(p.get(k))}" for k in differ.get(str(data.get("acquisition", "?")), [])]
        name = str(data.get("acquisition", "?")) + (f" [{', '.join(extra)}]" if extra else "")
        groups.setdefault(name, Group(name)).runs.append(Run(path, name, int(data.get("seed", 0)), data))
    for path, data in references:
        groups.setdefault(FULL_POOL, Group(FULL_POOL)).runs.append(Run(path, FULL_POOL, int(data.get("seed", 0)), data))
    for group in groups.values():
        _keep_one(group, warnings)
        if group.incomplete:
            lengths = sorted({len(r.records) for r in group.runs})
            dirs = ", ".join(f"{r.path.parent} ({len(r.records)})" for r in group.incomplete)
            _warn(warnings, f"setting {group.name!r}: runs differ in length ({lengths} rounds of {group.length}); incomplete: {dirs}."
                  f" Each budget uses the seeds that reached it; AULC only the {len(group.complete)} complete run(s)")
    return dict(sorted(groups.items(), key=lambda kv: (kv[0] != HIGHLIGHT, kv[0])))


# --- numbers ------------------------------------------------------------------------------------


def _mean(values: Any) -> float:
    """Mean of the finite values; NaN when there are none (without numpy's empty-slice warning)."""
    x = np.asarray(values, dtype=float).ravel()
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def _sd(values: Any) -> float | None:
    """Sample SD (``ddof=1``) of the finite values; ``None`` with fewer than two."""
    x = np.asarray(values, dtype=float).ravel()
    x = x[np.isfinite(x)]
    return float(x.std(ddof=1)) if x.size >= 2 else None


def _budget_value(b: float) -> int | float:
    return int(b) if float(b).is_integer() else float(b)


def _budget_key(b: float) -> str:
    return f"{b:g}"


def _resolve_reference(groups: dict[str, Group], requested: str) -> tuple[str | None, str | None]:
    """The group to pair against and a note when it is not the one asked for.

    A name matches a group's name exactly or, failing that, the acquisition of exactly one group.
    """
    def find(name: str) -> str | None:
        if name in groups and name != FULL_POOL:
            return name
        hits = [n for n, g in groups.items() if n != FULL_POOL and g.runs[0].data.get("acquisition") == name]
        return hits[0] if len(hits) == 1 else None

    found = find(requested)
    if found:
        return found, None
    if requested != FALLBACK_REFERENCE:
        fallback = find(FALLBACK_REFERENCE)
        if fallback:
            return fallback, f"reference {requested!r} is not among the settings; pairing against {fallback!r} instead"
    return None, f"reference {requested!r} is not among the settings (nor {FALLBACK_REFERENCE!r}); no paired comparison"


def _compare(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
    """Paired difference of ``a - b`` over the seeds both have (plus ``seeds`` and ``seeds_needed``)."""
    seeds = sorted(set(a) & set(b))
    seeds = [s for s in seeds if math.isfinite(a[s]) and math.isfinite(b[s])]
    out = paired_difference([a[s] for s in seeds], [b[s] for s in seeds], rng=BOOT_SEED, n_boot=N_BOOT, ci=CI)
    out["seeds"] = seeds
    out["seeds_needed"] = seeds_needed(out["sd_diff"], effect=EFFECT)
    return out


def summarise(
    groups: dict[str, Group], reference: str = DEFAULT_REFERENCE, warnings: list[str] | None = None
) -> dict[str, Any]:
    """Numbers behind the report: per group curves and AULCs, waste, correlation, paired comparisons."""
    out: dict[str, Any] = {"groups": {}}
    full = groups.get(FULL_POOL)
    if full is not None:
        scores = [r.records[-1]["score"] for r in full.runs]
        out["full_pool"] = {"score_mean": _mean(scores), "score_std": _sd(scores), "seeds": sorted(r.seed for r in full.runs)}
    for name, g in groups.items():
        if name == FULL_POOL:
            continue
        budgets = g.budgets()
        per_budget = [g.at_budget("score", b) for b in budgets]
        aulc_log, aulc_lin = g.aulc(log=True), g.aulc(log=False)
        ci_log = mean_ci(list(aulc_log.values()), CI)
        first = g.runs[0].data
        complete = g.complete
        q_first = np.array([_num(r.records[0].get("n_queried")) for r in complete])
        q_last = np.array([_num(r.records[-1].get("n_queried")) for r in complete])
        s_first = np.array([_num(r.records[0].get("n_skipped")) for r in complete])
        s_last = np.array([_num(r.records[-1].get("n_skipped")) for r in complete])
        info: dict[str, Any] = {
            "acquisition": first.get("acquisition"),
            "task": first.get("task"),
            "metric": first.get("metric"),
            "seeds": sorted(r.seed for r in g.runs),
            "complete_seeds": sorted(r.seed for r in complete),
            "incomplete_runs": [str(r.path.parent) for r in g.incomplete],
            "n_queried": [_budget_value(b) for b in budgets],
            "score_mean": [_mean(list(v.values())) for v in per_budget],
            "score_std": [_sd(list(v.values())) for v in per_budget],
            "score_n": [len(v) for v in per_budget],
            "aulc_log2_mean": _mean(list(aulc_log.values())),
            "aulc_log2_std": _sd(list(aulc_log.values())),
            "aulc_log2_ci95": list(ci_log) if ci_log else None,
            "aulc_log2_per_seed": {str(s): v for s, v in aulc_log.items()},
            "aulc_mean": _mean(list(aulc_lin.values())),
            "aulc_std": _sd(list(aulc_lin.values())),
            "aulc_per_seed": {str(s): v for s, v in aulc_lin.items()},
            "artifact_waste": _mean(s_last / np.maximum(q_last, 1)),
            # The same share over the queries the acquisition chose (after the shared random round 0).
            "acquired_artifact_share": _mean((s_last - s_first) / np.maximum(q_last - q_first, 1)),
            "stream_correlation_mean": _mean(g.values("stream_correlation")),
            "selection_seconds_mean": _mean(g.values("selection_seconds")),
            "seconds_per_round_mean": _mean(g.values("seconds")),
        }
        # Task-specific record keys (detect: precision, recall, f1, centroid distance) at the last budget.
        extra_keys = [k for k in g.runs[0].records[0] if k not in STANDARD_KEYS]
        last = {k: list(g.at_budget(k, budgets[-1]).values()) for k in extra_keys}
        info["final_metrics"] = {k: {"mean": _mean(v), "std": _sd(v), "n": len(v)} for k, v in last.items()}
        if "full_pool" in out and math.isfinite(out["full_pool"]["score_mean"]):
            target = TARGET_SHARE * out["full_pool"]["score_mean"]
            reached = [b for b, m in zip(info["n_queried"], info["score_mean"]) if m >= target]
            info["budget_to_95pct_full"] = reached[0] if reached else None
            info["last_share_of_full"] = info["score_mean"][-1] / out["full_pool"]["score_mean"]
        out["groups"][name] = info

    ref, note = _resolve_reference(groups, reference)
    out["reference"] = {"requested": reference, "used": ref, "note": note}
    paired: dict[str, Any] = {}
    if ref is not None:
        rg = groups[ref]
        for name, g in groups.items():
            if name in (ref, FULL_POOL):
                continue
            blocks = {
                "reference": ref,
                "seeds": sorted({r.seed for r in g.runs} & {r.seed for r in rg.runs}),
                "aulc_log2": _compare(g.aulc(log=True), rg.aulc(log=True)),
                "aulc": _compare(g.aulc(log=False), rg.aulc(log=False)),
                "per_budget": {},
            }
            shared = sorted(set(g.budgets()) & set(rg.budgets()))
            for b in shared:
                blocks["per_budget"][_budget_key(b)] = _compare(g.at_budget("score", b), rg.at_budget("score", b))
            paired[name] = blocks
    _adjust_holm(paired)
    out["paired"] = paired
    proposals = _proposal_counts(groups)
    if proposals:
        out["proposals"] = proposals
    out["statistics"] = {
        "spread": "sample standard deviation over seeds (ddof=1); null with one seed",
        "group_ci": f"Student-t {CI:.0%} interval of the mean log2 AULC",
        "paired_difference": "setting minus reference, per seed both ran",
        "ci": CI,
        "bootstrap": f"percentile, {N_BOOT} resamples of the seeds, generator seed {BOOT_SEED}",
        "test": "two-sided Wilcoxon signed-rank (scipy.stats.wilcoxon)",
        "alpha": ALPHA,
        "multiple_comparisons": "significant: uncorrected; p_holm / significant_holm: Holm-Bonferroni over the settings"
                                " compared with the reference (per AULC, and per budget over the settings at that budget)",
        "seeds_needed": f"normal approximation, paired two-sided alpha {ALPHA}, power 0.8, effect {EFFECT}",
        "effect": EFFECT,
    }
    out["warnings"] = list(warnings or [])
    return out


def _proposal_counts(groups: dict[str, Group]) -> dict[str, Any] | None:
    """Detect runs: the detector's pool proposals per seed and their spread (issue 10's stability target).

    The detector depends on the seed only, so every strategy of a seed should see the same count; a
    seed with different counts (other detector settings mixed into the report) is listed in ``mixed``.
    ``None`` when no run records ``n_proposals_pool``.
    """
    per_seed: dict[int, set[int]] = {}
    for name, g in groups.items():
        if name == FULL_POOL:
            continue
        for r in g.runs:
            if _is_number(r.data.get("n_proposals_pool")):
                per_seed.setdefault(r.seed, set()).add(int(r.data["n_proposals_pool"]))
    if not per_seed:
        return None
    counts = {seed: min(v) for seed, v in sorted(per_seed.items())}
    mean = float(np.mean(list(counts.values())))
    return {
        "per_seed": {str(s): c for s, c in counts.items()},
        "mean": mean,
        "largest_deviation": float(max(abs(c - mean) for c in counts.values()) / mean) if mean else None,
        "mixed": sorted(s for s, v in per_seed.items() if len(v) > 1),
    }


def _adjust_holm(paired: dict[str, Any]) -> None:
    """Add ``p_holm`` and ``significant_holm`` to every comparison: one family per AULC kind (all settings
    against the reference) and one per budget (the settings that reached it)."""
    families: list[list[dict[str, Any]]] = [[p[key] for p in paired.values()] for key in ("aulc_log2", "aulc")]
    by_budget: dict[str, list[dict[str, Any]]] = {}
    for p in paired.values():
        for b, d in p["per_budget"].items():
            by_budget.setdefault(b, []).append(d)
    for family in families + list(by_budget.values()):
        for d, adjusted in zip(family, holm([d.get("p_value") for d in family])):
            d["p_holm"] = adjusted
            d["significant_holm"] = adjusted is not None and adjusted < ALPHA


def _strict(value: Any) -> Any:
    """``value`` with NaN and infinities turned into ``None`` and numpy scalars into Python ones."""
    if isinstance(value, dict):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(summary: dict[str, Any]) -> str:
    """Strict JSON text of a summary: ``null`` where a number is undefined, never ``NaN``/``Infinity``."""
    return json.dumps(_strict(summary), indent=2, allow_nan=False, ensure_ascii=False)


# --- markdown -----------------------------------------------------------------------------------


def _budget(value: float | None, last_share: float | None) -> str:
    """The budget to 95% of the full-pool score, or how far the last budget got (share of that score)."""
    if value is not None:
        return f"{value:g}"
    return "not reached" + (f" ({last_share:.0%} at the last budget)" if last_share is not None else "")


def _fmt(mean: float | None, std: float | None, digits: int = 3) -> str:
    if mean is None or math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± " + ("n/a" if std is None else f"{std:.{digits}f}")


def _signed(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:+.{digits}f}"


def _diff_ci(p: dict[str, Any], digits: int = 4) -> str:
    if p["n"] == 0:
        return "no common seed"
    ci = f" [{_signed(p['ci_low'], digits)}, {_signed(p['ci_high'], digits)}]" if p["ci_low"] is not None else " [n/a]"
    return _signed(p["mean_diff"], digits) + ci


def _p(p: dict[str, Any], key: str = "p_value") -> str:
    return "n/a" if p.get(key) is None else f"{p[key]:.3g}"


def _mark(p: dict[str, Any]) -> str:
    if p["p_value"] is None:
        return UNTESTED
    return SIGNIFICANT if p["significant"] else NOT_SIGNIFICANT


def _opt(value: Any, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def render_markdown(summary: dict[str, Any], sweep_dir: Path, paired_figure: bool = False) -> str:
    """``report.md``; ``paired_figure``: link ``paired.png`` under the paired tables (when it was drawn)."""
    groups = summary["groups"]
    first = next(iter(groups.values()))
    budgets = sorted({b for g in groups.values() for b in g["n_queried"]})
    full = summary.get("full_pool")
    lines = [f"# dualstream report: {sweep_dir}", ""]
    for message in summary.get("warnings", []):
        lines.append(f"> **warning:** {message}")
    if summary.get("warnings"):
        lines.append("")
    lines += [
        f"Task `{first['task']}`, metric `{first['metric']}` (test set), mean ± SD over seeds (sample SD, n − 1;"
        " n/a with one seed). Columns are the budget spent (queries, skips included), '(n=k)' where only k seeds"
        " reached it; AULC log2 weighs each doubling of the budget equally (the headline), AULC linear each query."
        " 'Budget on artifacts' is the share of queries the annotator skipped, over all queries / over those the"
        " acquisition chose (after the random initial set).",
        "",
    ]
    if full:
        lines += [
            f"Training on every pool item scores {_fmt(full['score_mean'], full['score_std'])} "
            f"({len(full['seeds'])} seeds); the '95% budget' column is the first budget whose mean reaches"
            f" {TARGET_SHARE:.0%} of it (when none does: the last budget's mean as a share of it).",
            "",
        ]
    to95 = " 95% budget |" if full else ""
    lines += [
        "| setting | seeds | " + " | ".join(f"{b:g}" for b in budgets)
        + f" | AULC log2 | AULC linear |{to95} budget on artifacts: all / acquired | stream corr. | selection s/round |",
        "|---|---|" + "---|" * len(budgets) + "---|" * (6 if full else 5),
    ]
    for name, g in groups.items():
        n_seeds = len(g["seeds"])
        col = {b: (m, s, n) for b, m, s, n in zip(g["n_queried"], g["score_mean"], g["score_std"], g["score_n"])}
        cells = []
        for b in budgets:
            if b not in col:
                cells.append("")
                continue
            m, s, n = col[b]
            cells.append(_fmt(m, s) + (f" (n={n})" if n < n_seeds else ""))
        n_aulc = len(g["complete_seeds"])
        aulc_n = f" (n={n_aulc})" if n_aulc < n_seeds else ""
        lines.append(
            f"| {name} | {n_seeds} | " + " | ".join(cells)
            + f" | {_fmt(g['aulc_log2_mean'], g['aulc_log2_std'])}{aulc_n} | {_fmt(g['aulc_mean'], g['aulc_std'])}{aulc_n} |"
            + (f" {_budget(g.get('budget_to_95pct_full'), g.get('last_share_of_full'))} |" if full else "")
            + f" {_opt(_pct(g['artifact_waste']), '.1f')}% / {_opt(_pct(g['acquired_artifact_share']), '.1f')}% |"
            f" {_opt(g['stream_correlation_mean'], '+.2f')} | {_opt(g['selection_seconds_mean'], '.3f')} |"
        )
    metric_keys = list(first.get("final_metrics", {}))
    if metric_keys:
        lines += [
            "",
            f"Task metrics at the last budget ({budgets[-1]:g}):",
            "",
            "| setting | " + " | ".join(metric_keys) + " |",
            "|---|" + "---|" * len(metric_keys),
        ]
        for name, g in groups.items():
            fm = g.get("final_metrics", {})
            lines.append(f"| {name} | " + " | ".join(_fmt(fm[k]["mean"], fm[k]["std"], 2 if k.endswith("_nm") else 3) if k in fm else "" for k in metric_keys) + " |")
    props = summary.get("proposals")
    if props:
        seeds = ", ".join(f"{s}: {c}" for s, c in props["per_seed"].items())
        m = props["mixed"]
        mixed = (f" {'Seeds' if len(m) > 1 else 'Seed'} {', '.join(map(str, m))} {'have' if len(m) > 1 else 'has'} different"
                 " counts in different settings (other detector settings mixed in); the smallest is shown.") if m else ""
        lines += [
            "",
            f"Detector proposals in the pool per seed ({seeds}): mean {props['mean']:.0f}, largest deviation from the"
            f" mean {_opt(_pct(props['largest_deviation']), '.0f')}%.{mixed}",
        ]
    lines += _render_paired(summary)
    if paired_figure:
        lines += ["", "![paired differences](paired.png)"]
    lines += ["", "![learning curves](learning_curves.png)", ""]
    return "\n".join(lines)


def _pct(value: float | None) -> float | None:
    return None if value is None else 100 * value


def _render_paired(summary: dict[str, Any]) -> list[str]:
    ref = summary.get("reference", {})
    paired = summary.get("paired") or {}
    note = [f"Note: {ref['note']}.", ""] if ref.get("note") else []
    if not paired:
        return ["", *note] if note else []
    used = ref["used"]
    k = len(paired)
    bonferroni = (f" ({k} comparisons here: Bonferroni would ask p < {ALPHA / k:.2g}; 'p Holm' is the"
                  " Holm-Bonferroni adjusted p over them, the one to read before claiming a winner)") if k > 1 else ""
    lines = [
        "",
        f"## Paired by seed against `{used}`",
        "",
        *note,
        f"Δ = value(setting) − value({used}) on each seed both ran; positive means the setting is better."
        f" 95% CI: percentile bootstrap of the mean Δ ({N_BOOT} resamples; too narrow below about 10 seeds)."
        f" p: two-sided Wilcoxon signed-rank test; '{SIGNIFICANT}' means p < {ALPHA} for that one comparison,"
        f" uncorrected for multiple comparisons{bonferroni}."
        " With 5 or fewer seeds the test cannot reach p < 0.05. 'Seeds for 0.02' is how many seeds a paired test"
        f" needs to resolve a {EFFECT} AULC difference at the measured SD of Δ (normal approximation, 80% power).",
        "",
        "| setting | seeds | Δ AULC log2 [95% CI] | p | log2 | p Holm | Δ AULC linear [95% CI] | p | linear | p Holm"
        " | wins / ties / losses (log2) | seeds for 0.02 (log2 / linear) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, p in paired.items():
        lg, ln = p["aulc_log2"], p["aulc"]
        lines.append(
            f"| {name} | {lg['n']} | {_diff_ci(lg)} | {_p(lg)} | {_mark(lg)} | {_p(lg, 'p_holm')} | {_diff_ci(ln)} | {_p(ln)}"
            f" | {_mark(ln)} | {_p(ln, 'p_holm')}"
            f" | {lg['wins']} / {lg['ties']} / {lg['losses']} | {_opt(lg['seeds_needed'], 'd')} / {_opt(ln['seeds_needed'], 'd')} |"
        )
    budgets = sorted({float(b) for p in paired.values() for b in p["per_budget"]})
    if budgets:
        lines += [
            "",
            f"Score at each budget, Δ [95% CI] (n, p) against `{used}`, budgets matched by queries spent; ✱: p < {ALPHA},"
            f" ✱✱: also after Holm over the settings at that budget:",
            "",
            "| setting | " + " | ".join(f"{b:g}" for b in budgets) + " |",
            "|---|" + "---|" * len(budgets),
        ]
        for name, p in paired.items():
            cells = []
            for b in budgets:
                d = p["per_budget"].get(_budget_key(b))
                if d is None:
                    cells.append("")
                    continue
                star = " ✱✱" if d.get("significant_holm") else " ✱" if d["significant"] else ""
                cells.append(f"{_diff_ci(d, 3)} (n={d['n']}, p={_p(d)}){star}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def write_report(
    sweep_dir: str | Path | Sequence[str | Path],
    out_dir: str | Path | None = None,
    reference: str = DEFAULT_REFERENCE,
    ignore_keys: Sequence[str] = (),
) -> Path:
    """Aggregate ``sweep_dir`` (one directory or several: e.g. a benchmark's runs and a new strategy's) and write
    ``report.md``, ``learning_curves.png``, ``paired.png`` (when there is a paired comparison), ``summary.json``
    into ``out_dir`` (default: the sweep directory; required with several); return the report's path."""
    dirs = _as_dirs(sweep_dir)
    if out_dir is None and len(dirs) > 1:
        raise ValueError("several run directories: say where the report goes (--out DIR)")
    out = Path(out_dir) if out_dir else dirs[0]
    warnings: list[str] = []
    groups = collect(dirs, warnings, ignore_keys)  # first: a mistyped path must not be created
    summary = summarise(groups, reference, warnings)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(to_json(summary))
    plot_curves(summary, out / "learning_curves.png")
    drew_paired = plot_paired(summary, out / "paired.png")
    report = out / "report.md"
    report.write_text(render_markdown(_strict(summary), _label(dirs), paired_figure=drew_paired))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dualstream-report", description="Aggregate a sweep's results.json files.")
    parser.add_argument(
        "sweep_dir", type=Path, nargs="+",
        help="directory holding runs (searched recursively); several are read as one (then --out is required)",
    )
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the sweep directory)")
    parser.add_argument(
        "--reference", default=DEFAULT_REFERENCE,
        help=f"setting every other one is paired against (default: {DEFAULT_REFERENCE}; when absent: {FALLBACK_REFERENCE})",
    )
    parser.add_argument(
        "--ignore-key", action="append", default=[], metavar="KEY",
        help="an override left out of the setting names (repeatable), e.g. sweep when one setting's runs came from different sweep presets",
    )
    args = parser.parse_args(argv)
    try:
        path = write_report(args.sweep_dir, args.out, args.reference, args.ignore_key)
    except (FileNotFoundError, ValueError) as err:
        print(f"dualstream-report: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(path)


if __name__ == "__main__":
    main()
