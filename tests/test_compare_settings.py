"""experiments/scripts/compare_settings.py: ranks, paired cells and the Δ map on hand-made summaries."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "scripts"))
import compare_settings  # noqa: E402


def _group(log2: float, lin: float, waste: float | None = 0.0) -> dict:
    return {"aulc_log2_mean": log2, "aulc_log2_std": 0.01, "aulc_mean": lin, "aulc_std": 0.02,
            "complete_seeds": [0, 1, 2], "acquired_artifact_share": waste}


def _summary(groups: dict, reference: str, paired: dict) -> dict:
    return {"groups": groups, "reference": {"used": reference},
            "paired": {n: {"aulc_log2": d} for n, d in paired.items()}}


def _d(diff: float, p: float) -> dict:
    return {"mean_diff": diff, "p_value": p, "significant": p < 0.05, "wins": 3, "losses": 0}


@pytest.fixture
def settings(tmp_path: Path) -> list[str]:
    clean = _summary({"dualstream": _group(0.57, 0.62), "uncertainty": _group(0.59, 0.65), "random": _group(0.53, 0.58)},
                     "dualstream", {"uncertainty": _d(0.02, 0.13), "random": _d(-0.04, 0.01)})
    # "uncertainty" not run in this setting: its cells must say so, not read as 0.
    dirty = _summary({"dualstream": _group(0.60, 0.65, 0.004), "random": _group(0.54, 0.57, 0.10)},
                     "dualstream", {"random": _d(-0.06, 0.004)})
    specs = []
    for label, s in (("clean", clean), ("dirty", dirty)):
        (tmp_path / label).mkdir()
        (tmp_path / label / "summary.json").write_text(json.dumps(s))
        specs.append(f"{label}={tmp_path / label}")
    return specs


def test_tables_and_paired_cells(settings, capsys, tmp_path):
    compare_settings.main([*settings, "--plot", str(tmp_path / "map.png")])
    out = capsys.readouterr().out
    assert "| dualstream | 0.570 ± 0.010 (2/3, n=3) | 0.600 ± 0.010 (1/2, n=3) |" in out
    assert "| uncertainty | 0.590 ± 0.010 (1/3, n=3) | – |" in out
    assert "| random | 0.400%" not in out and "| random | 0.0% | 10.0% |" in out
    assert "| random | -0.040 (p=0.010, 3/0) ✱ | -0.060 (p=0.004, 3/0) ✱ |" in out
    assert "| uncertainty | +0.020 (p=0.130, 3/0) | – |" in out
    assert "| dualstream | (reference) | (reference) |" in out
    assert (tmp_path / "map.png").read_bytes()[:4] == b"\x89PNG"


def test_paired_grid_marks_reference_missing_and_significant(settings):
    loaded = [compare_settings.load(s) for s in settings]
    rows, values, stars = compare_settings.paired_grid(loaded)
    # Mean rank over the settings that ran it: uncertainty 1st of 1, dualstream (2nd + 1st) / 2, random last.
    assert rows == ["uncertainty", "dualstream", "random"]
    assert values[1] == [0.0, 0.0] and stars[1] == [False, False]
    assert values[0][0] == 0.02 and math.isnan(values[0][1]) and stars[0] == [False, False]
    assert values[2] == [-0.04, -0.06] and stars[2] == [True, True]


def test_missing_summary_is_one_clear_line(tmp_path):
    with pytest.raises(SystemExit, match="summary.json not found; run `dualstream-report"):
        compare_settings.load(f"x={tmp_path}")
    with pytest.raises(SystemExit, match="expected LABEL=REPORT_DIR"):
        compare_settings.load(str(tmp_path))


def test_rename_relabels_groups_paired_cells_and_reference(settings, capsys):
    compare_settings.main([*settings, "--rename", "dualstream", "E", "--rename", "random", "R"])
    out = capsys.readouterr().out
    assert "| E | 0.570 ± 0.010 (2/3, n=3) | 0.600 ± 0.010 (1/2, n=3) |" in out
    assert "| R | -0.040 (p=0.010, 3/0) ✱ | -0.060 (p=0.004, 3/0) ✱ |" in out
    assert "| E | (reference) | (reference) |" in out and "| dualstream |" not in out


def test_rename_of_an_unknown_group_is_one_clear_line(settings):
    with pytest.raises(SystemExit, match="--rename names no group of these summaries: 'dualstrem'"):
        compare_settings.main([*settings, "--rename", "dualstrem", "E"])
    with pytest.raises(SystemExit, match="gives two groups of clean the same label 'random'"):
        compare_settings.main([*settings, "--rename", "uncertainty", "random"])
