"""Pins dualstream-report: per-budget mean/SD, linear and log2 AULC, paired comparisons against a reference,
warnings on damaged sweeps, strict summary JSON, report files and CLI errors."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from dualstream.report import collect, main, summarise, write_report
from dualstream.report_plots import paired_grid
from dualstream.results import area_under_curve, log_area_under_curve

SQRT2 = math.sqrt(2)
LOG15, LOG3 = math.log2(1.5), math.log2(3)  # budgets 10, 20, 30 on a log2 axis: steps 1 and log2(1.5)

BUDGETS = [10, 20, 30]
# AULC = trapezoid area / (30 - 10), all by hand:
SCORES = {
    ("dualstream", 0): [0.2, 0.4, 0.6],  # (3 + 5) / 20 = 0.4
    ("dualstream", 1): [0.4, 0.6, 0.8],  # (5 + 7) / 20 = 0.6
    ("random", 0): [0.3, 0.5, 0.7],  # (4 + 6) / 20 = 0.5
    ("random", 1): [0.2, 0.3, 0.4],  # (2.5 + 3.5) / 20 = 0.3
}
SKIPPED = {("dualstream", 0): [0, 1, 3], ("dualstream", 1): [2, 2, 6]}  # waste 3/30, 6/30 -> 15 %
# acquired after the initial set (round 0): 3/20, 4/20 -> 17.5 %
CORR = {"dualstream": [None, 0.2, 0.4], "random": [-0.1, -0.1, -0.1]}
SELECTION_S = {"dualstream": 0.5, "random": 0.01}


def _results(acq: str, seed: int) -> dict:
    records = []
    for r, (n, score) in enumerate(zip(BUDGETS, SCORES[(acq, seed)])):
        skipped = SKIPPED.get((acq, seed), [0, 0, 0])[r]
        records.append(
            {
                "round": r,
                "n_labeled": n - skipped,
                "n_queried": n,
                "n_skipped": skipped,
                "score": score,
                "stream_correlation": CORR[acq][r],
                "seconds": 2.0,
                "selection_seconds": SELECTION_S[acq],
                "train_loss": None,
            }
        )
    return {
        "acquisition": acq,
        "seed": seed,
        "task": "segment",
        "metric": "iou",
        "config": {"acquisition": {"name": acq}, "seed": seed},
        "records": records,
    }


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    for i, (acq, seed) in enumerate(sorted(SCORES)):
        run = root / str(i)
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps(_results(acq, seed)))
    # noise the report must ignore: a run without records and a half-written file
    (root / "empty").mkdir()
    (root / "empty" / "results.json").write_text(json.dumps({**_results("random", 0), "seed": 9, "records": []}))
    (root / "broken").mkdir()
    (root / "broken" / "results.json").write_text('{"acquisition": "random", "rec')
    return root


def test_area_under_curve_by_hand():
    recs = _results("dualstream", 0)["records"]
    assert area_under_curve(recs) == pytest.approx(0.4)
    assert area_under_curve(recs[:1]) == pytest.approx(0.2)  # one point: its score
    uneven = [{"n_queried": 0, "score": 0.0}, {"n_queried": 10, "score": 1.0}, {"n_queried": 40, "score": 1.0}]
    assert area_under_curve(uneven) == pytest.approx((5 + 30) / 40)


def test_log_area_under_curve_by_hand():
    """Budgets that double get equal weight: segment means 0.2, 0.4, 0.5 each count one third."""
    recs = [{"n_queried": q, "score": y} for q, y in [(4, 0.1), (8, 0.3), (16, 0.5), (32, 0.5)]]
    assert log_area_under_curve(recs) == pytest.approx((0.2 + 0.4 + 0.5) / 3)
    assert area_under_curve(recs) == pytest.approx((4 * 0.2 + 8 * 0.4 + 16 * 0.5) / 28)  # linear: late budgets dominate
    assert log_area_under_curve([{"n_queried": 0, "score": 0.0}, *recs]) == pytest.approx(1.1 / 3)  # 0 has no log
    assert log_area_under_curve(recs[:1]) == pytest.approx(0.1)
    assert log_area_under_curve(_results("dualstream", 0)["records"]) == pytest.approx((0.3 + 0.5 * LOG15) / LOG3)


def test_collect_groups_and_order(sweep: Path, capsys):
    groups = collect(sweep)
    assert list(groups) == ["dualstream", "random"]  # reference first
    assert sorted(r.seed for r in groups["random"].runs) == [0, 1]  # the empty seed-9 run is dropped
    assert "not valid JSON" in capsys.readouterr().err


def _log_aulc(scores) -> float:
    """Log2 AULC of scores at budgets 10, 20, 30, by hand."""
    a, b, c = scores
    return ((a + b) / 2 + (b + c) / 2 * LOG15) / LOG3


def test_summary_numbers(sweep: Path, tmp_path: Path):
    out = tmp_path / "out"
    report = write_report(sweep, out)
    assert report == out / "report.md"
    s = json.loads((out / "summary.json").read_text())
    ds, rnd = s["groups"]["dualstream"], s["groups"]["random"]
    assert list(s["groups"]) == ["dualstream", "random"]
    assert ds["seeds"] == [0, 1] and rnd["seeds"] == [0, 1]
    assert ds["complete_seeds"] == [0, 1] and ds["incomplete_runs"] == []
    assert ds["acquisition"] == "dualstream" and ds["task"] == "segment" and ds["metric"] == "iou"
    assert ds["n_queried"] == BUDGETS and ds["score_n"] == [2, 2, 2]
    assert ds["score_mean"] == pytest.approx([0.3, 0.5, 0.7])
    assert ds["score_std"] == pytest.approx([0.2 / SQRT2] * 3)  # sample SD (n - 1) of two values: |a - b| / sqrt(2)
    assert rnd["score_mean"] == pytest.approx([0.25, 0.4, 0.55])
    assert rnd["score_std"] == pytest.approx([0.1 / SQRT2, 0.2 / SQRT2, 0.3 / SQRT2])
    assert ds["aulc_per_seed"] == pytest.approx({"0": 0.4, "1": 0.6})
    assert rnd["aulc_per_seed"] == pytest.approx({"0": 0.5, "1": 0.3})
    assert ds["aulc_mean"] == pytest.approx(0.5) and ds["aulc_std"] == pytest.approx(0.2 / SQRT2)
    assert rnd["aulc_mean"] == pytest.approx(0.4) and rnd["aulc_std"] == pytest.approx(0.2 / SQRT2)
    logs = {k: _log_aulc(SCORES[k]) for k in SCORES}
    assert ds["aulc_log2_per_seed"] == pytest.approx({"0": logs[("dualstream", 0)], "1": logs[("dualstream", 1)]})
    assert ds["aulc_log2_mean"] == pytest.approx((logs[("dualstream", 0)] + logs[("dualstream", 1)]) / 2)
    half = 12.706204736174698 * abs(logs[("dualstream", 0)] - logs[("dualstream", 1)]) / SQRT2 / SQRT2  # t[.975, 1] sd / sqrt(2)
    assert ds["aulc_log2_ci95"] == pytest.approx([ds["aulc_log2_mean"] - half, ds["aulc_log2_mean"] + half])
    assert ds["artifact_waste"] == pytest.approx(0.15)
    assert rnd["artifact_waste"] == 0.0
    assert ds["acquired_artifact_share"] == pytest.approx(0.175)
    assert rnd["acquired_artifact_share"] == 0.0
    assert ds["stream_correlation_mean"] == pytest.approx(0.3)  # None (NaN) ignored
    assert rnd["stream_correlation_mean"] == pytest.approx(-0.1)
    assert ds["selection_seconds_mean"] == pytest.approx(0.5)
    assert ds["seconds_per_round_mean"] == pytest.approx(2.0)
    # paired by seed against random (the default reference): dualstream - random
    assert s["reference"] == {"requested": "random", "used": "random", "note": None}
    paired = s["paired"]
    assert list(paired) == ["dualstream"]
    p = paired["dualstream"]
    assert p["reference"] == "random" and p["seeds"] == [0, 1]
    lin = p["aulc"]  # 0.4 - 0.5 = -0.1 (seed 0), 0.6 - 0.3 = +0.3 (seed 1)
    assert lin["seeds"] == [0, 1] and lin["n"] == 2
    assert lin["mean_diff"] == pytest.approx(0.1) and lin["sd_diff"] == pytest.approx(0.4 / SQRT2)
    assert (lin["wins"], lin["ties"], lin["losses"]) == (1, 0, 1)
    # two seeds: the bootstrap means are -0.1, 0.1 or 0.3, so the 95% interval spans the extremes
    assert (lin["ci_low"], lin["ci_high"]) == pytest.approx((-0.1, 0.3))
    assert lin["p_value"] == pytest.approx(1.0) and lin["significant"] is False  # ranks +2, -1 of n=2: p = 1
    assert lin["seeds_needed"] == math.ceil((2.801585218 * (0.4 / SQRT2) / 0.02) ** 2)
    lg = p["aulc_log2"]
    d1 = logs[("dualstream", 1)] - logs[("random", 1)]
    assert lg["mean_diff"] == pytest.approx((-0.1 + d1) / 2)  # seed 0: -0.1 at every budget, so -0.1 in any AULC
    assert set(p["per_budget"]) == {"10", "20", "30"}
    at30 = p["per_budget"]["30"]
    assert at30["seeds"] == [0, 1] and at30["mean_diff"] == pytest.approx((-0.1 + 0.4) / 2)
    assert at30["p_value"] == pytest.approx(1.0) and at30["significant"] is False
    assert set(s) == {"groups", "reference", "paired", "statistics", "warnings"}
    assert s["statistics"]["multiple_comparisons"].startswith("significant: uncorrected") and s["statistics"]["effect"] == 0.02
    # One comparison: Holm leaves its p as is.
    assert lin["p_holm"] == pytest.approx(lin["p_value"]) and at30["significant_holm"] is False
    assert any("not valid JSON" in w for w in s["warnings"]) and any("no records" in w for w in s["warnings"])


def test_report_markdown_and_plot(sweep: Path):
    report = write_report(sweep)
    assert report == sweep / "report.md"
    md = report.read_text()
    lines = md.splitlines()
    assert lines[0] == f"# dualstream report: {sweep}"
    assert "Task `segment`, metric `iou`" in md
    assert any(line.startswith("> **warning:** skipping") and "broken" in line and "not valid JSON" in line for line in lines)
    assert (
        "| setting | seeds | 10 | 20 | 30 | AULC log2 | AULC linear | budget on artifacts: all / acquired | stream corr."
        " | selection s/round |" in lines
    )
    ds_log = [_log_aulc(SCORES[("dualstream", s)]) for s in (0, 1)]
    ds_log_cell = f"{sum(ds_log) / 2:.3f} ± {abs(ds_log[0] - ds_log[1]) / SQRT2:.3f}"
    assert (
        f"| dualstream | 2 | 0.300 ± 0.141 | 0.500 ± 0.141 | 0.700 ± 0.141 | {ds_log_cell} | 0.500 ± 0.141 | 15.0% / 17.5%"
        " | +0.30 | 0.500 |" in lines
    )
    assert any(line.startswith("| random | 2 | 0.250 ± 0.071 | 0.400 ± 0.141 | 0.550 ± 0.212 |") for line in lines)
    heading = lines.index("## Paired by seed against `random`")
    assert heading > lines.index(next(line for line in lines if line.startswith("| random | 2 |")))
    assert "uncorrected for multiple comparisons" in md
    row = next(line for line in lines[heading:] if line.startswith("| dualstream |"))
    assert "| +0.1000 [-0.1000, +0.3000] | 1 | not significant |" in row and "| 1 / 0 / 1 |" in row
    assert "✱" not in row
    assert "![learning curves](learning_curves.png)" in lines
    assert "![paired differences](paired.png)" in lines
    assert (sweep / "paired.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    png = sweep / "learning_curves.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (sweep / "summary.json").exists()


def test_no_paired_section_with_a_single_setting(tmp_path: Path):
    root = tmp_path / "sweep"
    for seed in (0, 1):
        (root / f"r{seed}").mkdir(parents=True)
        (root / f"r{seed}" / "results.json").write_text(json.dumps(_results("random", seed)))
    write_report(root)
    s = json.loads((root / "summary.json").read_text())
    assert s["paired"] == {} and s["reference"]["used"] == "random"
    assert "Paired by seed" not in (root / "report.md").read_text()
    assert not (root / "paired.png").exists() and "paired.png" not in (root / "report.md").read_text()


def test_holm_families_are_per_aulc_and_per_budget():
    from dualstream.report import _adjust_holm

    def block(p_log, p_lin, budgets):
        return {"aulc_log2": {"p_value": p_log}, "aulc": {"p_value": p_lin},
                "per_budget": {b: {"p_value": q} for b, q in budgets.items()}}

    paired = {"a": block(0.01, 0.2, {"8": 0.01, "16": 0.04}), "b": block(0.04, None, {"8": 0.03}),
              "c": block(0.03, 0.02, {"8": 0.5, "16": 0.01})}
    _adjust_holm(paired)
    assert [paired[n]["aulc_log2"]["p_holm"] for n in "abc"] == pytest.approx([0.03, 0.06, 0.06])
    assert paired["b"]["aulc"]["p_holm"] is None  # untested: not in the family (m = 2)
    assert [paired[n]["aulc"]["p_holm"] for n in "ac"] == pytest.approx([0.2, 0.04])
    assert paired["c"]["aulc"]["significant_holm"] and paired["a"]["aulc_log2"]["significant_holm"]
    assert not paired["b"]["aulc_log2"]["significant_holm"]  # p = 0.04 alone, 0.06 after Holm
    # budget 8: three settings; budget 16: only a and c reached it
    assert [paired[n]["per_budget"]["8"]["p_holm"] for n in "abc"] == pytest.approx([0.03, 0.06, 0.5])
    assert [paired[n]["per_budget"]["16"]["p_holm"] for n in "ac"] == pytest.approx([0.04, 0.02])


def test_paired_grid_rows_follow_the_forest_order():
    """The budget map's row i must be the forest plot's row i: both sorted by mean Δ log2 AULC."""
    def block(diff, per_budget):
        return {"aulc_log2": {"mean_diff": diff, "n": 3},
                "per_budget": {b: {"mean_diff": d, "significant": sig > 0, "significant_holm": sig > 1}
                               for b, (d, sig) in per_budget.items()}}

    paired = {
        "a": block(0.05, {"8": (0.10, 2), "16": (0.02, 0)}),
        "b": block(-0.03, {"8": (-0.04, 0), "32": (-0.01, 1)}),
        "c": block(float("nan"), {"8": (0.0, 0)}),  # no finite Δ: not drawn
    }
    rows, budgets, values, stars = paired_grid(paired)
    assert rows == ["b", "a"] and budgets == [8.0, 16.0, 32.0]
    np.testing.assert_array_equal(values, [[-0.04, np.nan, -0.01], [0.10, 0.02, np.nan]])
    assert stars.tolist() == [[0, 0, 1], [2, 0, 0]]


def test_hydra_overrides_split_groups(tmp_path: Path):
    root = tmp_path / "sweep"
    for i, (beta, seed) in enumerate([("1.0", 0), ("1.0", 1), ("2.0", 0)]):
        run = root / str(i)
        (run / ".hydra").mkdir(parents=True)
        (run / "results.json").write_text(json.dumps(_results("dualstream", seed)))
        (run / ".hydra" / "overrides.yaml").write_text(
            f"- acquisition=dualstream\n- seed={seed}\n- acquisition.beta={beta}\n- hydra.sweep.dir=x\n"
        )
    groups = collect(root)
    assert sorted(groups) == ["dualstream [acquisition.beta=1.0]", "dualstream [acquisition.beta=2.0]"]
    assert len(groups["dualstream [acquisition.beta=1.0]"].runs) == 2


def test_several_directories_read_as_one_and_ignored_keys(tmp_path: Path, capsys):
    # A benchmark's runs (launched by sweep=core10) and a new strategy's runs (launched by another preset).
    bench, new = tmp_path / "bench", tmp_path / "new"
    for root, acq, preset in ((bench, "random", "core10"), (new, "dualstream", "tuning")):
        for seed in (0, 1):
            run = root / f"{acq}_s{seed}"
            (run / ".hydra").mkdir(parents=True)
            (run / "results.json").write_text(json.dumps(_results(acq, seed)))
            (run / ".hydra" / "overrides.yaml").write_text(f"- acquisition={acq}\n- seed={seed}\n- sweep={preset}\n")
    groups = collect([bench, new])
    assert sorted(groups) == ["dualstream [sweep=tuning]", "random [sweep=core10]"]
    groups = collect([bench, new], ignore_keys=["sweep"])
    assert sorted(groups) == ["dualstream", "random"] and len(groups["random"].runs) == 2
    out = tmp_path / "out"
    main([str(bench), str(new), "--out", str(out), "--ignore-key", "sweep", "--reference", "random"])
    s = json.loads((out / "summary.json").read_text())
    assert set(s["groups"]) == {"dualstream", "random"} and "dualstream" in s["paired"]
    assert f"{bench} + {new}" in (out / "report.md").read_text().splitlines()[0]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:  # several directories: where the report goes must be said
        main([str(bench), str(new)])
    assert exc.value.code == 2 and "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([str(bench), str(tmp_path / "missing"), "--out", str(out)])
    assert exc.value.code == 2 and "missing: no such directory" in capsys.readouterr().err


def test_main_prints_path(sweep: Path, capsys):
    main([str(sweep)])
    assert capsys.readouterr().out.strip() == str(sweep / "report.md")


def test_main_empty_dir_exits_2(tmp_path: Path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit) as exc:
        main([str(empty)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n")
    assert err.startswith("dualstream-report: error: ")
    assert str(empty) in err and "results.json" in err
    assert not (empty / "report.md").exists()


def test_main_missing_dir_is_not_created(tmp_path: Path, capsys):
    missing = tmp_path / "typo"
    with pytest.raises(SystemExit) as exc:
        main([str(missing)])
    if exc.value.code != 2:
        raise RuntimeError("precondition: a user error exits with code 2")
    err = capsys.readouterr().err
    assert not missing.exists()
    assert "no such directory" in err


def test_full_pool_reference_gives_budget_to_95_percent(tmp_path: Path):
    """Runs with full_pool=true are the reference line, not a curve; 95% of 0.8 = 0.76 is first reached at 8."""
    import json

    from dualstream.report import write_report

    def write(name, acquisition, seed, points, full=False):
        recs = [
            {"round": i, "n_labeled": q, "n_queried": q, "n_skipped": 0, "score": s, "stream_correlation": 0.0,
             "seconds": 1.0, "selection_seconds": 0.0}
            for i, (q, s) in enumerate(points)
        ]
        d = tmp_path / name
        d.mkdir()
        (d / "results.json").write_text(json.dumps(
            {"acquisition": acquisition, "seed": seed, "task": "segment", "metric": "foreground_iou", "config": {},
             "records": recs, "full_pool": full}))

    write("a", "dualstream", 0, [(4, 0.5), (8, 0.77), (12, 0.8)])
    write("b", "random", 0, [(4, 0.5), (8, 0.6), (12, 0.7)])
    write("full", "random", 0, [(100, 0.8)], full=True)
    write_report(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["groups"]) == {"dualstream", "random"}
    assert summary["full_pool"]["score_mean"] == pytest.approx(0.8)
    assert summary["groups"]["dualstream"]["budget_to_95pct_full"] == 8
    assert summary["groups"]["random"]["budget_to_95pct_full"] is None
    assert summary["groups"]["random"]["last_share_of_full"] == pytest.approx(0.7 / 0.8)
    report = (tmp_path / "report.md").read_text()
    assert "95% budget" in report and "not reached (87% at the last budget)" in report
    assert "| 8 |" in report and "| 8.0 |" not in report  # a budget is a count of queries


# --- paired statistics, damaged sweeps, strict JSON -----------------------------------------------


def _write_run(root: Path, name: str, acq: str, seed: int, points, **extra) -> Path:
    """A run directory as a Hydra multirun leaves it: results.json plus .hydra/overrides.yaml."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    records = [
        {"round": i, "n_labeled": q, "n_queried": q, "n_skipped": 0, "score": y, "stream_correlation": None,
         "seconds": 1.0, "selection_seconds": 0.0}
        for i, (q, y) in enumerate(points)
    ]
    data = {"acquisition": acq, "seed": seed, "task": "segment", "metric": "iou", "config": {}, "records": records, **extra}
    (run / "results.json").write_text(json.dumps(data))
    (run / ".hydra" / "overrides.yaml").write_text(f"- acquisition={acq}\n- seed={seed}\n")
    return run


def _strict_load(path: Path) -> dict:
    def refuse(token):
        raise ValueError(f"non-strict JSON constant {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


CURVE = [0.3, 0.45, 0.55, 0.6]
DOUBLING = [8, 16, 32, 64]


@pytest.fixture
def ten_seeds(tmp_path: Path) -> Path:
    """random, plus dualstream better on all 10 seeds (by 0.01 * seed + 0.01 at every budget), plus entropy
    better and worse on alternate seeds."""
    root = tmp_path / "sweep"
    for seed in range(10):
        base = [y + 0.005 * seed for y in CURVE]
        up = 0.01 * (seed + 1)
        _write_run(root, f"random_{seed}", "random", seed, zip(DOUBLING, base))
        _write_run(root, f"dualstream_{seed}", "dualstream", seed, zip(DOUBLING, [y + up for y in base]))
        _write_run(root, f"entropy_{seed}", "entropy", seed, zip(DOUBLING, [y + (up if seed % 2 else -up) for y in base]))
    return root


def test_paired_block_and_significance_mark(ten_seeds: Path):
    write_report(ten_seeds)
    s = _strict_load(ten_seeds / "summary.json")
    assert s["reference"]["used"] == "random" and list(s["paired"]) == ["dualstream", "entropy"]
    ds = s["paired"]["dualstream"]
    assert ds["reference"] == "random" and ds["seeds"] == list(range(10))
    for key in ("aulc_log2", "aulc"):
        block = ds[key]
        # a constant shift of the whole curve shifts either AULC by the same amount: d = 0.01 * (seed + 1)
        assert block["mean_diff"] == pytest.approx(0.055)
        assert block["p_value"] == pytest.approx(2 / 1024)  # all 10 positive: exact two-sided Wilcoxon
        assert block["significant"] is True and block["wins"] == 10
        assert 0.01 <= block["ci_low"] < 0.055 < block["ci_high"] <= 0.1
        sd = 0.01 * math.sqrt(sum((k - 5.5) ** 2 for k in range(1, 11)) / 9)
        assert block["sd_diff"] == pytest.approx(sd)
        assert block["seeds_needed"] == math.ceil((2.801585218 * sd / 0.02) ** 2)
    assert set(ds["per_budget"]) == {"8", "16", "32", "64"}
    assert ds["per_budget"]["16"]["p_value"] == pytest.approx(2 / 1024) and ds["per_budget"]["16"]["n"] == 10
    ent = s["paired"]["entropy"]["aulc_log2"]
    assert ent["wins"] == 5 and ent["losses"] == 5 and ent["significant"] is False and ent["p_value"] > 0.5
    md = (ten_seeds / "report.md").read_text()
    ds_row = next(line for line in md.splitlines() if line.startswith("| dualstream | 10 | +0.0550 ["))
    assert ds_row.count("✱ significant at 0.05") == 2 and "not significant" not in ds_row
    ent_row = next(line for line in md.splitlines() if line.startswith("| entropy | 10 |") and "[" in line)
    assert ent_row.count("not significant") == 2 and "✱" not in ent_row
    assert "uncorrected for multiple comparisons (2 comparisons here: Bonferroni would ask p < 0.025;" in md
    # Holm over the two settings: the smaller p doubles, the larger stays (it is already above).
    assert ds["aulc_log2"]["p_holm"] == pytest.approx(4 / 1024) and ds["aulc_log2"]["significant_holm"] is True
    assert ent["p_holm"] == pytest.approx(max(ent["p_value"], 4 / 1024)) and ent["significant_holm"] is False
    per_budget_row = [line for line in md.splitlines() if line.startswith("| dualstream |") and "(n=10, p=0.00195) ✱" in line]
    # Significant at each of the 4 budgets, and still after Holm over the 2 settings there: ✱✱ each.
    assert len(per_budget_row) == 1 and per_budget_row[0].count("✱✱") == per_budget_row[0].count("✱") / 2 == 4


def test_reference_option_and_fallback(ten_seeds: Path, tmp_path: Path):
    main([str(ten_seeds), "--reference", "entropy", "--out", str(tmp_path / "vs_entropy")])
    s = _strict_load(tmp_path / "vs_entropy" / "summary.json")
    assert s["reference"] == {"requested": "entropy", "used": "entropy", "note": None}
    assert list(s["paired"]) == ["dualstream", "random"]
    assert (tmp_path / "vs_entropy" / "report.md").read_text().count("## Paired by seed against `entropy`") == 1
    # without random, the default reference falls back to dualstream, and the report says so
    root = tmp_path / "no_random"
    for seed in range(3):
        _write_run(root, f"d{seed}", "dualstream", seed, zip(DOUBLING, CURVE))
        _write_run(root, f"e{seed}", "entropy", seed, zip(DOUBLING, [y - 0.01 for y in CURVE]))
    write_report(root)
    s = _strict_load(root / "summary.json")
    assert s["reference"]["requested"] == "random" and s["reference"]["used"] == "dualstream"
    assert "'random' is not among the settings" in s["reference"]["note"]
    assert s["paired"]["entropy"]["aulc_log2"]["mean_diff"] == pytest.approx(-0.01)
    assert s["paired"]["entropy"]["aulc_log2"]["ties"] == 0 and s["paired"]["entropy"]["aulc_log2"]["losses"] == 3
    md = (root / "report.md").read_text()
    assert "Note: reference 'random' is not among the settings; pairing against 'dualstream' instead." in md


def test_strict_json_and_single_seed_sd(tmp_path: Path):
    """One seed: SDs, CIs and p-values are undefined (null in JSON, n/a in markdown), never NaN or 0."""
    root = tmp_path / "sweep"
    _write_run(root, "r", "random", 0, zip(DOUBLING, CURVE))
    _write_run(root, "d", "dualstream", 0, zip(DOUBLING, [y + 0.02 for y in CURVE]))
    write_report(root)
    s = _strict_load(root / "summary.json")
    g = s["groups"]["random"]
    assert g["score_std"] == [None] * 4 and g["aulc_std"] is None and g["aulc_log2_std"] is None
    assert g["aulc_log2_ci95"] is None
    assert g["stream_correlation_mean"] is None  # every record had null
    p = s["paired"]["dualstream"]["aulc_log2"]
    assert p["n"] == 1 and p["mean_diff"] == pytest.approx(0.02)
    assert p["sd_diff"] is None and p["p_value"] is None and p["significant"] is False and p["seeds_needed"] is None
    md = (root / "report.md").read_text()
    assert "| random | 1 | 0.300 ± n/a | 0.450 ± n/a |" in md
    assert "untested (n < 2)" in md and "| n/a |" in md


def test_runs_of_different_length_warn_and_use_what_reached_each_budget(tmp_path: Path, capsys):
    root = tmp_path / "sweep"
    for seed in range(3):
        _write_run(root, f"random_{seed}", "random", seed, zip(DOUBLING, [y + 0.01 * seed for y in CURVE]))
    killed = _write_run(root, "random_3", "random", 3, zip(DOUBLING[:2], CURVE[:2]))
    write_report(root)
    err = capsys.readouterr().err
    warning = next(line for line in err.splitlines() if "differ in length" in line)
    assert warning.startswith("dualstream-report: warning: ") and str(killed) in warning
    s = _strict_load(root / "summary.json")
    g = s["groups"]["random"]
    assert g["seeds"] == [0, 1, 2, 3] and g["complete_seeds"] == [0, 1, 2]
    assert g["incomplete_runs"] == [str(killed)]
    assert g["score_n"] == [4, 4, 3, 3]
    assert g["score_mean"] == pytest.approx([0.3 + 0.0075, 0.45 + 0.0075, 0.55 + 0.01, 0.6 + 0.01])
    assert set(g["aulc_per_seed"]) == {"0", "1", "2"} and set(g["aulc_log2_per_seed"]) == {"0", "1", "2"}
    assert any("differ in length" in w for w in s["warnings"])
    md = (root / "report.md").read_text()
    assert any(line.startswith("> **warning:**") and str(killed) in line for line in md.splitlines())
    assert "0.560 ± 0.010 (n=3)" in md  # a budget only three seeds reached says so
    assert "| random | 4 |" in md


def test_an_unfinished_run_is_reported_with_a_warning(tmp_path: Path, capsys):
    """A results.json copied mid-run (finished: false) is used for what it has, and said to be unfinished."""
    root = tmp_path / "sweep"
    for seed in range(2):
        _write_run(root, f"random_{seed}", "random", seed, zip(DOUBLING, CURVE), finished=True)
    running = _write_run(root, "random_2", "random", 2, zip(DOUBLING[:2], CURVE[:2]), finished=False)
    _write_run(root, "old_3", "random", 3, zip(DOUBLING, CURVE))  # written before the field existed: no warning
    write_report(root)
    err = capsys.readouterr().err
    unfinished = [line for line in err.splitlines() if "unfinished run" in line]
    assert len(unfinished) == 1 and str(running) in unfinished[0] and "2 rounds so far" in unfinished[0]
    assert _strict_load(root / "summary.json")["groups"]["random"]["seeds"] == [0, 1, 2, 3]


def test_budgets_are_matched_by_queries_not_by_round(tmp_path: Path):
    """random was measured at 8, 16, 32, 64 and dualstream at 8, 32, 64: the paired score at 32 is dualstream's
    round 1 against random's round 2; 16 has no pair."""
    root = tmp_path / "sweep"
    for seed in range(2):
        _write_run(root, f"r{seed}", "random", seed, zip(DOUBLING, CURVE))
        _write_run(root, f"d{seed}", "dualstream", seed, [(8, 0.3), (32, 0.75), (64, 0.8)])
    write_report(root)
    s = _strict_load(root / "summary.json")
    per = s["paired"]["dualstream"]["per_budget"]
    assert set(per) == {"8", "32", "64"}
    assert per["32"]["mean_diff"] == pytest.approx(0.75 - 0.55) and per["8"]["mean_diff"] == pytest.approx(0.0)
    assert per["8"]["p_value"] == 1.0  # every difference exactly zero
    md = (root / "report.md").read_text()
    assert "| setting | seeds | 8 | 16 | 32 | 64 |" in md
    assert any(line.startswith("| dualstream | 2 | 0.300 ± 0.000 |  | 0.750 ± 0.000 |") for line in md.splitlines())


def test_duplicated_seed_is_kept_once_with_a_warning(tmp_path: Path, capsys):
    root = tmp_path / "sweep"
    _write_run(root, "a", "random", 0, zip(DOUBLING, CURVE))
    _write_run(root, "b", "random", 1, zip(DOUBLING, CURVE))
    partial = _write_run(root, "c_first_try", "random", 1, zip(DOUBLING[:2], [0.9, 0.9]))
    rerun = _write_run(root, "d_rerun", "random", 1, zip(DOUBLING, [0.1, 0.2, 0.3, 0.4]))
    os.utime(root / "b" / "results.json", (1_000_000, 1_000_000))  # b and d are both complete: d is newer
    groups = collect(root)
    assert [r.seed for r in groups["random"].runs] == [0, 1]
    assert groups["random"].runs[1].path.parent == rerun
    err = capsys.readouterr().err
    warning = next(line for line in err.splitlines() if "appears more than once" in line)
    assert "seed 1" in warning and str(rerun) in warning and str(partial) in warning and str(root / "b") in warning
    write_report(root)
    s = _strict_load(root / "summary.json")
    assert s["groups"]["random"]["seeds"] == [0, 1]
    assert s["groups"]["random"]["incomplete_runs"] == []  # the partial duplicate is gone, not a short run
    assert any("appears more than once" in line for line in (root / "report.md").read_text().splitlines())


@pytest.mark.parametrize(
    "content, problem",
    [
        ("[1, 2]", "top level is a JSON list"),
        (json.dumps({"seed": 0, "records": [{"n_queried": 8}]}), "record 0 has no 'score'"),
        (json.dumps({"seed": 0, "records": [{"score": 0.5}]}), "record 0 has no 'n_queried'"),
        (json.dumps({"seed": 0, "records": [{"n_queried": "8", "score": 0.5}]}), "n_queried='8', not a finite number"),
        (json.dumps({"seed": 0, "records": [{"n_queried": 8, "score": 0.5, "seconds": "fast"}]}), "seconds='fast', not a number"),
        (json.dumps({"seed": "zero", "records": [{"n_queried": 8, "score": 0.5}]}), "seed is 'zero'"),
        ('{"seed": 0, "records": [{"n_queried": 8, "score": NaN}]}', "score=nan, not a finite number"),
    ],
)
def test_bad_results_file_is_skipped_with_a_warning(tmp_path: Path, capsys, content: str, problem: str):
    root = tmp_path / "sweep"
    _write_run(root, "good", "random", 0, zip(DOUBLING, CURVE))
    (root / "bad").mkdir()
    (root / "bad" / "results.json").write_text(content)
    main([str(root)])
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("dualstream-report: warning: skipping ")
    assert str(root / "bad" / "results.json") in err[0] and problem in err[0]
    assert _strict_load(root / "summary.json")["groups"]["random"]["seeds"] == [0]
    # and when nothing usable is left: one error line after the warnings, exit 2, no traceback
    (root / "good" / "results.json").write_text(content)
    with pytest.raises(SystemExit) as exc:
        main([str(root)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("dualstream-report: warning: skipping ") for line in err[:2])
    assert err[2].startswith("dualstream-report: error: ") and "no usable results.json" in err[2]


def test_a_lone_unfinished_run_is_incomplete_by_its_own_config(tmp_path):
    """A setting whose only run is still going (or was killed) is flagged from its config's schedule,
    not taken as complete because no longer run exists beside it."""
    root = tmp_path / "sweep"
    schedule = {"loop": {"schedule": [8, 16, 32, 64]}}
    _write_run(root, "0_random_s0", "random", 0, list(zip(DOUBLING, CURVE)), config=schedule)
    _write_run(root, "1_dualstream_s0", "dualstream", 0, list(zip(DOUBLING[:2], CURVE[:2])), config=schedule)
    warnings: list[str] = []
    summary = summarise(collect(root, warnings), warnings=warnings)
    summary["warnings"] = warnings
    g = summary["groups"]["dualstream"]
    assert g["complete_seeds"] == [] and g["incomplete_runs"] == [str(root / "1_dualstream_s0")]
    assert any("dualstream" in w and "rounds of 4" in w for w in summary["warnings"])
    assert summary["groups"]["random"]["complete_seeds"] == [0]


def test_detect_proposal_counts_per_seed_and_their_spread(tmp_path: Path):
    """Detect runs record the detector's pool proposals; the report gives them per seed with the largest
    deviation from the mean (issue 10's stability target), and flags a seed whose count differs by setting."""
    root = tmp_path / "sweep"
    counts = {0: 100, 1: 150, 2: 125}
    for seed, n in counts.items():
        _write_run(root, f"random_{seed}", "random", seed, zip(DOUBLING, CURVE), n_proposals_pool=n)
        _write_run(root, f"dualstream_{seed}", "dualstream", seed, zip(DOUBLING, CURVE), n_proposals_pool=n + (7 if seed == 2 else 0))
    write_report(root)
    s = _strict_load(root / "summary.json")["proposals"]
    assert s["per_seed"] == {"0": 100, "1": 150, "2": 125} and s["mean"] == pytest.approx(125.0)
    assert s["largest_deviation"] == pytest.approx(0.2) and s["mixed"] == [2]
    text = (root / "report.md").read_text()
    assert "(0: 100, 1: 150, 2: 125): mean 125, largest deviation from the mean 20%" in text
    assert "Seed 2 has different counts" in text
    # Segmentation runs have no proposals: no such line, no key.
    plain = tmp_path / "plain"
    _write_run(plain, "random_0", "random", 0, zip(DOUBLING, CURVE))
    write_report(plain)
    assert "proposals" not in _strict_load(plain / "summary.json")
    assert "Detector proposals" not in (plain / "report.md").read_text()


def test_runs_whose_recorded_parameters_differ_are_not_merged(tmp_path: Path):
    """Same strategy name, no override telling them apart, but the recorded acquisition parameters differ (a
    preset's defaults changed between the runs): two settings, named by the parameter. A key the older
    config lacks counts as the strategy's default, so adding a key at its default splits nothing."""
    root = tmp_path / "sweep"
    for seed in range(3):
        old = _write_run(root, f"old_{seed}", "dualstream", seed, zip(DOUBLING, CURVE))
        new = _write_run(root, f"new_{seed}", "dualstream", seed, zip(DOUBLING, [y + 0.01 for y in CURVE]))
        rnd = _write_run(root, f"random_{seed}", "random", seed, zip(DOUBLING, CURVE))
        # old_0 records gate at dualstream's default (0.0), the other old runs do not record it
        old_params = {"beta": 1.0, "gate": 0.0} if seed == 0 else {"beta": 1.0}
        for run, params in ((old, old_params), (new, {"beta": 1.0, "screen_z": 3.5}), (rnd, {})):
            data = json.loads((run / "results.json").read_text())
            data["config"] = {"acquisition": {"name": data["acquisition"], "params": params}}
            (run / "results.json").write_text(json.dumps(data))
    groups = collect(root)
    assert sorted(groups) == ["dualstream [acquisition.params.screen_z=3.5]", "dualstream [acquisition.params.screen_z=null]", "random"]
    assert all(len(g.runs) == 3 for g in groups.values())
    # an override naming the parameter already tells them apart: no second copy of it in the name
    for seed in range(3):
        for name, value in (("new", "3.5"), ("old", "null")):
            (root / f"{name}_{seed}" / ".hydra" / "overrides.yaml").write_text(
                f"- acquisition=dualstream\n- seed={seed}\n- acquisition.params.screen_z={value}\n"
            )
    assert sorted(collect(root)) == ["dualstream [acquisition.params.screen_z=3.5]", "dualstream [acquisition.params.screen_z=null]", "random"]


def test_an_override_on_other_runs_does_not_hide_a_differing_parameter(tmp_path: Path):
    """Runs copied without their .hydra folder (no overrides) beside runs of another strategy whose
    overrides name the same parameter: the override names it for those runs only, so the copied runs
    still split by what they recorded instead of being merged one run per seed."""
    root = tmp_path / "sweep"
    for seed in range(3):
        for name, mix in (("a", True), ("b", False)):
            run = _write_run(root, f"{name}_{seed}", "dualstream", seed, zip(DOUBLING, CURVE))
            data = json.loads((run / "results.json").read_text())
            data["config"] = {"acquisition": {"name": "dualstream", "params": {"mix": mix}}}
            (run / "results.json").write_text(json.dumps(data))
        for value in ("true", "false"):
            other = _write_run(root, f"screen_{value}_{seed}", "dualstream_screen", seed, zip(DOUBLING, CURVE))
            (other / ".hydra").mkdir(parents=True, exist_ok=True)
            (other / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n- acquisition.params.mix={value}\n")
    groups = collect(root)
    assert sorted(groups) == [
        "dualstream [acquisition.params.mix=False]", "dualstream [acquisition.params.mix=True]",
        "dualstream_screen [acquisition.params.mix=false]", "dualstream_screen [acquisition.params.mix=true]",
    ]
    assert all(len(g.runs) == 3 for g in groups.values())
    # --ignore-key on the parameter merges, as asked (one run per seed kept, with a warning)
    merged = collect(root, ignore_keys=["acquisition.params.mix"])
    assert sorted(merged) == ["dualstream", "dualstream_screen"]
