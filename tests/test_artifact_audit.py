"""experiments/scripts/artifact_audit.py: its AUROC and ROC on hand-made scores, and one audit of the bundled sample."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "scripts"))
import artifact_audit  # noqa: E402

from conftest import TINY  # noqa: E402


def test_auroc_and_roc_by_hand():
    pos = np.array([False, False, True, True])
    assert artifact_audit.auroc(np.array([1.0, 2.0, 3.0, 4.0]), pos) == 1.0
    assert artifact_audit.auroc(np.array([4.0, 3.0, 2.0, 1.0]), pos) == 0.0
    assert artifact_audit.auroc(np.ones(4), pos) == 0.5  # ties count half
    assert artifact_audit.auroc(np.array([1.0, 3.0, 2.0, 4.0]), pos) == 0.75  # 3 of the 4 (pos, neg) pairs ordered
    assert np.isnan(artifact_audit.auroc(np.ones(3), np.zeros(3, dtype=bool)))
    fpr, tpr = artifact_audit.roc(np.array([1.0, 3.0, 2.0, 4.0]), pos)
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1] and tpr.tolist() == [0, 0.5, 0.5, 1, 1]


@pytest.mark.slow
def test_audit_of_the_bundled_sample_with_strong_defects(tmp_path):
    extra = [o for o in TINY if not o.startswith("experiment=")] + ["data.inject_artifacts=0.2", "data.artifact_seed=0"]
    result, (scores, artifacts) = artifact_audit.audit("demo", str(tmp_path / "cache"), [5], 0.0, extra)
    assert result["artifacts"] == int(artifacts.sum()) > 0
    # Strong defects (blank, saturated, noisy, ...) are what pixel statistics catch; the
    # tiny 3-step encoder is not expected to see anything.
    assert result["detectors"]["pixel_veto"]["auroc"] > 0.9
    assert set(result["detectors"]) == {"typicality (v1)", "veto k=5", "pixel_veto"}
    assert all(len(s) == result["pool"] for s in scores.values())
    artifact_audit.plot([result], [(scores, artifacts)], str(tmp_path / "roc.png"))
    assert (tmp_path / "roc.png").stat().st_size > 1000
