"""experiments/scripts/paired_seeds.py: runs gathered from several folders, paired by seed, filtered by config."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments" / "scripts"))
import paired_seeds  # noqa: E402


def _run(folder: Path, name: str, acq: str, seed: int, log2: float, reduction: str = "mean", finished=True, scores=(0.1, 0.2)):
    d = folder / name
    d.mkdir(parents=True)
    res = {"acquisition": acq, "seed": seed, "aulc_log2": log2, "finished": finished,
           "config": {"model": {"uncertainty": {"reduction": reduction}}}, "records": [{"score": s} for s in scores]}
    (d / "results.json").write_text(json.dumps(res))


def test_pairs_by_seed_across_folders_with_filters(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for s in range(6):
        _run(a, f"h{s}", "dualstream", s, 0.6 + 0.01 * s, "topk_then_mean", scores=(0.5, 0.6))
        _run(a, f"e{s}", "dualstream", s, 0.0, "mean")               # filtered out by @reduction
        _run(b if s >= 3 else a, f"u{s}", "uncertainty", s, 0.5 + 0.01 * s, scores=(0.5, 0.5))
    _run(b, "u_unfinished", "uncertainty", 9, 0.9, finished=False)   # not a finished run: ignored
    out = tmp_path / "out.json"
    assert paired_seeds.main(["--a", f"dualstream={a},{b}@model.uncertainty.reduction=topk_then_mean",
                              "--b", f"uncertainty={a},{b}", "--budget-rounds", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert rows[0]["seeds"] == list(range(6))
    assert rows[0]["log2_aulc"]["mean_diff"] == pytest.approx(0.1)
    assert rows[0]["log2_aulc"]["wins"] == 6
    assert rows[0]["rounds"]["1"]["mean_diff"] == pytest.approx(0.1)
    assert "+0.100" in capsys.readouterr().out


def test_duplicate_seed_and_missing_seed_are_errors(tmp_path):
    a = tmp_path / "a"
    _run(a, "x0", "dualstream", 0, 0.5, "mean")
    _run(a, "y0", "dualstream", 0, 0.6, "topk_then_mean")
    _run(a, "u0", "uncertainty", 0, 0.4)
    with pytest.raises(SystemExit, match="seed 0 twice"):
        paired_seeds.main(["--a", f"dualstream={a}", "--b", f"uncertainty={a}"])
    with pytest.raises(SystemExit, match=r"seeds \[1\] lack"):
        paired_seeds.main(["--a", f"dualstream={a}@model.uncertainty.reduction=mean", "--b", f"uncertainty={a}", "--seeds", "0-1"])
    with pytest.raises(SystemExit, match="not a folder"):
        paired_seeds.main(["--a", f"dualstream={tmp_path / 'nope'}", "--b", f"uncertainty={a}"])
