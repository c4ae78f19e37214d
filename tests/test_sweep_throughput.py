"""experiments/scripts/sweep_throughput.py: runs per hour from hand-made records and logs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "scripts"))
import sweep_throughput  # noqa: E402


def _run(root: Path, name: str, acquisition: str, seconds: list[float], log: tuple[str, str] | None = None,
         encoder: float | None = None) -> None:
    d = root / name
    d.mkdir(parents=True)
    data = {"acquisition": acquisition, "records": [{"round": i, "seconds": s} for i, s in enumerate(seconds)],
            "encoder_cached": encoder is None, "encoder_seconds": encoder or 0.0}
    (d / "results.json").write_text(json.dumps(data))
    if log:
        (d / "cli.log").write_text(f"[{log[0]}][dualstream][INFO] - start\nno stamp here\n[{log[1]}][dualstream][INFO] - results\n")


def test_rates_by_hand(tmp_path, capsys):
    # random: 100 + 200 s; dualstream: 300 s of rounds + 60 s training its encoder = 360 s.
    _run(tmp_path, "0_random_s0", "random", [0.0, 40.0, 60.0], ("2026-12-02 10:00:00,000", "2026-12-02 10:01:40,000"))
    _run(tmp_path, "1_random_s1", "random", [0.0, 100.0, 100.0], ("2026-12-02 10:00:00,000", "2026-12-02 10:03:20,000"))
    _run(tmp_path, "2_dualstream_s0", "dualstream", [0.0, 150.0, 150.0], ("2026-12-02 10:01:40,000", "2026-12-02 10:07:40,000"),
         encoder=60.0)
    _run(tmp_path, "3_random_s2", "random", [0.0, 30.0])  # killed after 2 of 3 rounds: not counted as finished
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{not json")
    m = sweep_throughput.measure(tmp_path, jobs=2, total=10)
    assert m["runs"] == 3 and m["rounds_per_run"] == [3] and m["in_progress"] == ["3_random_s2 (2/3 rounds)"]
    assert m["seconds_per_run_mean"] == pytest.approx((100 + 200 + 360) / 3)
    assert m["runs_per_hour"] == pytest.approx(3600 * 2 / 220)
    assert m["by_acquisition"]["random"]["seconds_per_run_mean"] == pytest.approx(150)
    assert m["by_acquisition"]["dualstream"]["runs_per_hour"] == pytest.approx(20.0)
    # 3 runs with logs from 10:00:00 to 10:07:40 = 460 s
    assert m["wall"]["runs_per_hour"] == pytest.approx(3 * 3600 / 460)
    assert m["hours_left"] == pytest.approx(7 / (3 * 3600 / 460))  # 7 runs left at the wall-clock rate
    assert "skipping" in capsys.readouterr().err


def test_cli_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit, match="no results.json with records"):
        sweep_throughput.main([str(tmp_path)])
    with pytest.raises(SystemExit, match="is not a folder"):
        sweep_throughput.main([str(tmp_path / "nope")])
    _run(tmp_path, "r", "random", [10.0])
    sweep_throughput.main([str(tmp_path), "--jobs", "1"])
    assert "1 finished runs (1 rounds each): 10 s per run" in capsys.readouterr().out
