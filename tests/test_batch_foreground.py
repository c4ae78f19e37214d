"""experiments/scripts/batch_foreground.py: each batch's foreground share read back from a saved loop state."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from dualstream.state import LoopState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments" / "scripts"))
import batch_foreground  # noqa: E402


def _state(answers: np.ndarray, answer_index, proposed, skipped=()) -> LoopState:
    n = 10
    queried = np.zeros(n, bool)
    queried[np.concatenate(proposed)] = True
    skip = np.zeros(n, bool)
    skip[list(skipped)] = True
    return LoopState(
        config_hash="h", pool="p", n_rounds=2, round=len(proposed) - 1, queried=queried, labeled=queried & ~skip,
        skipped=skip, answer_index=np.asarray(answer_index, np.int64), answers=answers,
        proposed=[np.asarray(b, np.int64) for b in proposed], rng_state={}, records=[{}] * len(proposed),
    )


def test_shares_per_batch_skips_left_out(tmp_path, capsys):
    masks = np.zeros((3, 4, 4), np.uint8)
    masks[1, :2] = 1   # item 3: half foreground
    masks[2, 0, 0] = 1  # item 5: 1/16
    # batch 0 = items 0, 3 (labelled); batch 1 = items 5 (labelled) and 7 (skipped: no mask)
    state = _state(masks, [0, 3, 5], [[0, 3], [5, 7]], skipped=[7])
    rows = batch_foreground.batch_foreground(state)
    assert [r["size"] for r in rows] == [2, 2]
    assert [r["labelled"] for r in rows] == [2, 1]
    assert rows[0]["fg_share"] == pytest.approx(0.25) and rows[0]["with_fg"] == 1
    assert rows[1]["fg_share"] == pytest.approx(1 / 16) and rows[1]["with_fg"] == 1
    state.save(tmp_path)
    assert batch_foreground.main([str(tmp_path)]) == 0
    assert "2: 25.0% / 1 of 2" in capsys.readouterr().out


def test_missing_state_and_detect_runs_are_one_line(tmp_path, capsys):
    assert batch_foreground.main([str(tmp_path / "nowhere")]) == 2
    assert "no loop_state.npz" in capsys.readouterr().err
    state = _state(np.array([1, 0], np.uint8), [0, 3], [[0, 3]])
    state.save(tmp_path)
    assert batch_foreground.main([str(tmp_path)]) == 2
    assert "not masks" in capsys.readouterr().err
