"""Pins dualstream-report: per-budget mean/std, normalised AULC, paired wins vs dualstream, report files and CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dualstream.report import collect, main, write_report
from dualstream.results import area_under_curve

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


def test_collect_groups_and_order(sweep: Path, capsys):
    groups = collect(sweep)
    assert list(groups) == ["dualstream", "random"]  # reference first
    assert sorted(r.seed for r in groups["random"].runs) == [0, 1]  # the empty seed-9 run is dropped
    assert "not valid JSON" in capsys.readouterr().err


def test_summary_numbers(sweep: Path, tmp_path: Path):
    out = tmp_path / "out"
    report = write_report(sweep, out)
    assert report == out / "report.md"
    s = json.loads((out / "summary.json").read_text())
    ds, rnd = s["groups"]["dualstream"], s["groups"]["random"]
    assert list(s["groups"]) == ["dualstream", "random"]
    assert ds["seeds"] == [0, 1] and rnd["seeds"] == [0, 1]
    assert ds["acquisition"] == "dualstream" and ds["task"] == "segment" and ds["metric"] == "iou"
    assert ds["n_queried"] == pytest.approx(BUDGETS)
    assert ds["score_mean"] == pytest.approx([0.3, 0.5, 0.7])
    assert ds["score_std"] == pytest.approx([0.1, 0.1, 0.1])  # population std over seeds
    assert rnd["score_mean"] == pytest.approx([0.25, 0.4, 0.55])
    assert rnd["score_std"] == pytest.approx([0.05, 0.1, 0.15])
    assert ds["aulc_per_seed"] == pytest.approx({"0": 0.4, "1": 0.6})
    assert rnd["aulc_per_seed"] == pytest.approx({"0": 0.5, "1": 0.3})
    assert ds["aulc_mean"] == pytest.approx(0.5) and ds["aulc_std"] == pytest.approx(0.1)
    assert rnd["aulc_mean"] == pytest.approx(0.4) and rnd["aulc_std"] == pytest.approx(0.1)
    assert ds["artifact_waste"] == pytest.approx(0.15)
    assert rnd["artifact_waste"] == 0.0
    assert ds["acquired_artifact_share"] == pytest.approx(0.175)
    assert rnd["acquired_artifact_share"] == 0.0
    assert ds["stream_correlation_mean"] == pytest.approx(0.3)  # None (NaN) ignored
    assert rnd["stream_correlation_mean"] == pytest.approx(-0.1)
    assert ds["selection_seconds_mean"] == pytest.approx(0.5)
    assert ds["seconds_per_round_mean"] == pytest.approx(2.0)
    # paired by seed: dualstream - random = 0.4 - 0.5 = -0.1 (seed 0), 0.6 - 0.3 = +0.3 (seed 1)
    paired = s["paired_vs_dualstream"]
    assert list(paired) == ["random"]
    assert paired["random"]["seeds"] == ["0", "1"]
    assert paired["random"]["aulc_diff_mean"] == pytest.approx(0.1)
    assert paired["random"]["aulc_diff_std"] == pytest.approx(0.2)
    assert paired["random"]["wins"] == 1


def test_report_markdown_and_plot(sweep: Path):
    report = write_report(sweep)
    assert report == sweep / "report.md"
    md = report.read_text()
    lines = md.splitlines()
    assert lines[0] == f"# dualstream report: {sweep}"
    assert "Task `segment`, metric `iou`" in md
    assert "| setting | seeds | 10 | 20 | 30 | AULC | budget on artifacts: all / acquired | stream corr. | selection s/round |" in lines
    assert (
        "| dualstream | 2 | 0.300 ± 0.100 | 0.500 ± 0.100 | 0.700 ± 0.100 | 0.500 ± 0.100 | 15.0% / 17.5% | +0.30 | 0.500 |"
        in lines
    )
    assert (
        "| random | 2 | 0.250 ± 0.050 | 0.400 ± 0.100 | 0.550 ± 0.150 | 0.400 ± 0.100 | 0.0% / 0.0% | -0.10 | 0.010 |"
        in lines
    )
    assert lines.index("## dualstream against each setting (paired by seed)") > lines.index(
        next(line for line in lines if line.startswith("| random | 2 |"))
    )
    assert "| random | +0.1000 ± 0.2000 | 1/2 |" in lines
    assert "![learning curves](learning_curves.png)" in lines
    png = sweep / "learning_curves.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (sweep / "summary.json").exists()


def test_no_paired_section_without_reference(tmp_path: Path):
    root = tmp_path / "sweep"
    for seed in (0, 1):
        (root / f"r{seed}").mkdir(parents=True)
        (root / f"r{seed}" / "results.json").write_text(json.dumps(_results("random", seed)))
    write_report(root)
    s = json.loads((root / "summary.json").read_text())
    assert "paired_vs_dualstream" not in s
    assert "paired by seed" not in (root / "report.md").read_text()


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
