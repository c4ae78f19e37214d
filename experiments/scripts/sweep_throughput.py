"""How fast does a sweep run here? Runs per hour, from the runs' own records (and their logs when present).

    python experiments/scripts/sweep_throughput.py outputs/bench/foreign --jobs 2

For every ``results.json`` below the directory: the seconds its rounds took (the ``seconds`` of each
record: task-model fit, scoring and selection; round 0 is near zero when its fit came from the cache)
plus the encoder's training time when this run trained it. From these, the runs per hour that ``--jobs``
parallel jobs sustain (``3600 * jobs / mean seconds per run``), per acquisition and overall. Where a
run's ``cli.log`` is still beside it (a live sweep folder, not a snapshot), the measured wall-clock rate
too: finished runs over the span from the first log line to the last, which also counts start-up,
Hydra, the time the jobs waited for each other and any pause of a resumed sweep.

Use it to size a sweep before starting it (``runs / rate`` hours) or, with ``--total N`` (the runs the
sweep launches), to see how far a running one is and when it should end at the rate measured so far.
A run counts as finished when it reached the largest number of rounds any run in the folder reached;
the others are listed as in progress (or killed: a sweep resumes them where they stopped). The figures
hold for the machine and the load they were measured under; say both when quoting them.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def run_seconds(data: dict) -> float:
    """Seconds one run computed: its rounds' ``seconds`` plus the encoder's when it was not cached."""
    rounds = sum(float(r.get("seconds") or 0.0) for r in data.get("records", []))
    encoder = 0.0 if data.get("encoder_cached", True) else float(data.get("encoder_seconds") or 0.0)
    return rounds + encoder


def log_span(log: Path) -> tuple[datetime, datetime] | None:
    """First and last timestamp of a ``cli.log`` (``[YYYY-mm-dd HH:MM:SS,mmm]`` lines), or None."""
    stamps = [m.group(1) for line in log.read_text(errors="replace").splitlines() if (m := STAMP.match(line))]
    if not stamps:
        return None
    parse = lambda s: datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f")  # noqa: E731
    return parse(stamps[0]), parse(stamps[-1])


def measure(sweep: Path, jobs: int, total: int | None = None) -> dict:
    """Per acquisition and overall: finished runs, mean / median seconds per run, runs per hour."""
    loaded: list[tuple[Path, dict]] = []
    for path in sorted(sweep.rglob("results.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            print(f"sweep_throughput: skipping {path}: {err}", file=sys.stderr)
            continue
        if isinstance(data, dict) and data.get("records"):
            loaded.append((path, data))
    if not loaded:
        raise SystemExit(f"sweep_throughput: no results.json with records below {sweep}")
    full = max(len(d["records"]) for _, d in loaded)
    per: dict[str, list[float]] = {}
    spans: list[tuple[datetime, datetime]] = []
    n_rounds: list[int] = []
    partial: list[str] = []
    for path, data in loaded:
        if len(data["records"]) < full:
            partial.append(f"{path.parent.name} ({len(data['records'])}/{full} rounds)")
            continue
        per.setdefault(str(data.get("acquisition")), []).append(run_seconds(data))
        n_rounds.append(len(data["records"]))
        log = path.parent / "cli.log"
        if log.exists() and (span := log_span(log)):
            spans.append(span)
    every = [s for v in per.values() for s in v]
    out = {
        "runs": len(every),
        "in_progress": partial,
        "jobs": jobs,
        "rounds_per_run": sorted(set(n_rounds)),
        "seconds_per_run_mean": statistics.fmean(every),
        "seconds_per_run_median": statistics.median(every),
        "runs_per_hour": 3600 * jobs / statistics.fmean(every),
        "by_acquisition": {
            name: {"runs": len(v), "seconds_per_run_mean": statistics.fmean(v), "runs_per_hour": 3600 * jobs / statistics.fmean(v)}
            for name, v in sorted(per.items())
        },
    }
    if len(spans) >= 2:
        start, end = min(s for s, _ in spans), max(e for _, e in spans)
        hours = (end - start).total_seconds() / 3600
        out["wall"] = {"runs_with_logs": len(spans), "start": start.isoformat(" "), "end": end.isoformat(" "),
                       "runs_per_hour": len(spans) / hours if hours > 0 else None}
    if total is not None:
        # The wall-clock rate, where there is one, already holds the start-up and contention of this sweep.
        rate = (out.get("wall") or {}).get("runs_per_hour") or out["runs_per_hour"]
        out["total"] = total
        out["hours_left"] = max(0, total - len(every)) / rate
        out["eta_rate"] = rate
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="a sweep folder (or a snapshot of its runs)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel jobs the rate assumes (the sweep's launcher; default 2)")
    parser.add_argument("--total", type=int, default=None, help="runs the sweep launches: prints the share done and the hours left")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args(argv)
    if not args.sweep.is_dir():
        raise SystemExit(f"sweep_throughput: {args.sweep} is not a folder")
    if args.jobs < 1:
        raise SystemExit(f"sweep_throughput: --jobs must be >= 1, got {args.jobs}")
    m = measure(args.sweep, args.jobs, args.total)
    if args.json:
        print(json.dumps(m, indent=2))
        return
    print(f"{m['runs']} finished runs ({'/'.join(map(str, m['rounds_per_run']))} rounds each): "
          f"{m['seconds_per_run_mean']:.0f} s per run (median {m['seconds_per_run_median']:.0f} s) of one job; "
          f"{m['runs_per_hour']:.1f} runs per hour with {m['jobs']} parallel jobs "
          f"({3600 * m['jobs'] / m['seconds_per_run_median']:.1f} at the median)")
    for name, v in m["by_acquisition"].items():
        print(f"  {name}: {v['runs']} runs, {v['seconds_per_run_mean']:.0f} s per run, {v['runs_per_hour']:.1f} runs/h")
    if m["in_progress"]:
        print(f"in progress or killed ({len(m['in_progress'])}): " + ", ".join(m["in_progress"]))
    if "total" in m:
        print(f"{m['runs']} of {m['total']} runs finished; about {m['hours_left']:.1f} h left at {m['eta_rate']:.1f} runs per hour")
    if "wall" in m:
        w = m["wall"]
        rate = "n/a" if w["runs_per_hour"] is None else f"{w['runs_per_hour']:.1f}"
        print(f"wall clock: {w['runs_with_logs']} runs with logs between {w['start'][:19]} and {w['end'][:19]}: {rate} runs per hour")


if __name__ == "__main__":
    main()
