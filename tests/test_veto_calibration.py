"""experiments/scripts/veto_calibration.py: threshold and choice of k on hand-made scores (no pools built)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "scripts"))
import veto_calibration as vc  # noqa: E402


def test_threshold_flags_at_most_the_rate_on_every_pool():
    a = np.arange(100, dtype=float)  # 1% of 100 = 1 item may exceed: z* = 98 (only 99 > 98)
    b = np.concatenate([np.arange(50, dtype=float), [np.nan]])  # 1% of 50 -> 0 items: z* = 49
    assert vc.threshold_for([a], 0.01) == 98.0
    assert vc.threshold_for([b], 0.01) == 49.0
    assert vc.threshold_for([a, b], 0.01) == 98.0  # the strictest pool wins
    assert vc.flag_rates(a, np.zeros(100, dtype=bool), 98.0)["clean"] == 0.01


def test_calibrate_picks_the_k_that_catches_the_worst_setting():
    rng = np.random.default_rng(0)
    clean = rng.normal(size=200)
    art = np.zeros(200, dtype=bool)
    art[:20] = True

    def pool(shift_k20, shift_k150):
        s20, s150 = clean.copy(), clean.copy()
        s20[art] += shift_k20
        s150[art] += shift_k150
        return {"LOF outlier z, k=20": s20, "LOF outlier z, k=150": s150}, art

    pools = {
        "clean": ({"LOF outlier z, k=20": clean.copy(), "LOF outlier z, k=150": clean.copy()}, np.zeros(200, dtype=bool)),
        "scattered": pool(10.0, 10.0),  # both k see it
        "sections": pool(0.0, 10.0),  # only the large k sees a cluster of defects
    }
    cal = vc.calibrate(pools, [20, 150], 0.01)
    assert cal["k"] == 150
    assert cal["per_k"][150]["worst_artifact_share"] == 1.0
    assert cal["per_k"][20]["worst_artifact_share"] < 0.2
    # at most 1% of clean items flagged on every pool, the clean pool included
    assert all(r["clean"] <= 0.01 for r in cal["per_k"][150]["rates"].values())
    assert np.isnan(cal["per_k"][150]["rates"]["clean"]["artifacts"])


def test_same_pools_for_tuning_and_checking_is_refused(capsys):
    with pytest.raises(SystemExit):
        vc.main(["--tune-extra", "data.artifact_seed=0", "--eval-extra", "data.artifact_seed=0"])
    assert "calibrate and check on different ones" in capsys.readouterr().err
