"""Pins dualstream.stats against numbers worked out by hand: the Wilcoxon p, the bootstrap CI, seeds needed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dualstream.stats import holm, mean_ci, paired_difference, seeds_needed


def test_all_ten_differences_positive_gives_exact_wilcoxon_p():
    """10 positive distinct differences: r+ = 55 is the most extreme of 2**10 equally likely sign patterns,
    so the exact two-sided p is 2 / 1024."""
    ref = np.full(10, 0.5)
    better = ref + 0.01 * np.arange(1, 11)
    p = paired_difference(better, ref)
    assert p["p_value"] == pytest.approx(2 / 1024, rel=1e-12)
    assert p["significant"] is True
    assert (p["n"], p["wins"], p["ties"], p["losses"]) == (10, 10, 0, 0)
    assert p["mean_diff"] == pytest.approx(0.055)
    assert p["sd_diff"] == pytest.approx(0.01 * np.std(np.arange(1, 11), ddof=1))
    # and the other way round: same p, losses instead of wins
    q = paired_difference(ref, better)
    assert q["p_value"] == pytest.approx(2 / 1024, rel=1e-12) and q["losses"] == 10 and q["mean_diff"] < 0


def test_three_mixed_differences_by_hand():
    """d = (1, -2, 3): signed ranks +1, -2, +3, r+ = 4; of the 8 sign patterns r+ >= 4 in 3 (4, 5, 6),
    so the two-sided p is 2 * 3/8 = 0.75."""
    p = paired_difference([1.0, 0.0, 3.0], [0.0, 2.0, 0.0])
    assert p["p_value"] == pytest.approx(0.75)
    assert p["significant"] is False
    assert p["mean_diff"] == pytest.approx(2 / 3)
    assert p["sd_diff"] == pytest.approx(math.sqrt(((1 - 2 / 3) ** 2 + (-2 - 2 / 3) ** 2 + (3 - 2 / 3) ** 2) / 2))
    assert (p["wins"], p["ties"], p["losses"]) == (2, 0, 1)


def test_five_pairs_can_never_be_significant():
    """The smallest exact two-sided p with 5 pairs is 2/32 = 0.0625 > 0.05."""
    p = paired_difference(np.arange(1, 6) + 1.0, np.zeros(5))
    assert p["p_value"] == pytest.approx(2 / 32)
    assert p["significant"] is False


def test_degenerate_inputs():
    one = paired_difference([0.7], [0.5])
    assert one["n"] == 1 and one["mean_diff"] == pytest.approx(0.2)
    assert one["sd_diff"] is None and one["ci_low"] is None and one["ci_high"] is None
    assert one["p_value"] is None and one["significant"] is False and one["wins"] == 1
    none = paired_difference([], [])
    assert none["n"] == 0 and none["mean_diff"] is None and none["p_value"] is None
    zeros = paired_difference([0.3, 0.4, 0.5], [0.3, 0.4, 0.5])
    assert zeros["p_value"] == 1.0 and zeros["significant"] is False
    assert zeros["ties"] == 3 and zeros["sd_diff"] == 0.0 and zeros["ci_low"] == zeros["ci_high"] == 0.0
    with pytest.raises(ValueError, match="one value per seed"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        paired_difference([1.0, float("nan")], [1.0, 2.0])


def test_bootstrap_is_deterministic_for_a_seed():
    a, b = [0.61, 0.58, 0.66, 0.6, 0.63], [0.57, 0.59, 0.6, 0.55, 0.6]
    first, again = paired_difference(a, b, rng=3), paired_difference(a, b, rng=3)
    assert (first["ci_low"], first["ci_high"]) == (again["ci_low"], again["ci_high"])
    other = paired_difference(a, b, rng=4)
    assert (first["ci_low"], first["ci_high"]) != (other["ci_low"], other["ci_high"])
    # the interval of a mean stays within the observed differences
    d = np.subtract(a, b)
    assert d.min() <= first["ci_low"] < first["mean_diff"] < first["ci_high"] <= d.max()


def test_bootstrap_ci_covers_the_true_mean_and_shrinks_with_n():
    """On normal differences with mean 0.03 and SD 0.05 the 95% interval holds 0.03 in about 95% of data sets
    (the percentile bootstrap runs a little short), and four times the seeds halve its width."""
    gen = np.random.default_rng(0)
    true_mean, sd = 0.03, 0.05
    widths = {}
    for n in (10, 40):
        hits, w = 0, []
        for _ in range(200):
            d = gen.normal(true_mean, sd, n)
            p = paired_difference(d, np.zeros(n), rng=gen, n_boot=2000)
            hits += p["ci_low"] <= true_mean <= p["ci_high"]
            w.append(p["ci_high"] - p["ci_low"])
        assert 0.85 <= hits / 200 <= 1.0, (n, hits)
        widths[n] = float(np.mean(w))
        # close to the normal-theory width 2 * 1.96 * sd / sqrt(n)
        assert widths[n] == pytest.approx(2 * 1.96 * sd / math.sqrt(n), rel=0.15)
    assert widths[40] == pytest.approx(widths[10] / 2, rel=0.15)


def test_seeds_needed_formula():
    z = 1.959963984540054 + 0.8416212335729143  # z[0.975] + z[0.8]
    assert seeds_needed(0.02) == math.ceil(z**2) == 8
    assert seeds_needed(0.04) == math.ceil((2 * z) ** 2) == 32
    assert seeds_needed(0.01, effect=0.01, power=0.9) == math.ceil((1.959963984540054 + 1.2815515655446004) ** 2)
    assert seeds_needed(0.0) == 2  # no spread: the minimum a paired spread needs
    assert seeds_needed(None) is None and seeds_needed(float("nan")) is None
    with pytest.raises(ValueError):
        seeds_needed(0.02, effect=0.0)
    with pytest.raises(ValueError):
        seeds_needed(-0.1)


def test_mean_ci_student_t_by_hand():
    lo, hi = mean_ci([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t[0.975, 2] * sd 1 / sqrt(3)
    assert (lo, hi) == pytest.approx((2 - half, 2 + half))
    assert mean_ci([1.0]) is None
    assert mean_ci([1.0, float("nan")]) is None


def test_holm_by_hand():
    # m = 3 tested: sorted 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> monotone 0.06).
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # Untested comparisons neither count towards m nor get a value; the cap is 1.
    out = holm([None, 0.5, float("nan"), 0.02])
    assert out[0] is None and out[2] is None and out[1:4:2] == pytest.approx([0.5, 0.04])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0]) and holm([]) == []
