"""The four core strategies of the ablation: random, uncertainty-only, density-only, dual-stream."""

from __future__ import annotations

import logging

import numpy as np

from dualstream.acquisition.base import PoolView, Selection, register
from dualstream.acquisition.budget_mix import check_mix, effective_beta
from dualstream.acquisition.diversity import select_by_utility
from dualstream.acquisition.pixel_veto import pixel_outlying
from dualstream.errors import ConfigError
from dualstream.streams.bimodal import bimodal_upper
from dualstream.streams import structure as st  # module import: structure imports this package in turn
from dualstream.streams.knn import LRU, fingerprint

log = logging.getLogger(__name__)


def rank_percentile(values: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """``(N,)`` float64: each candidate's rank among candidates scaled to ``(0, 1]`` (ties averaged); NaN elsewhere.

    Ranks make the two streams commensurable whatever their units.
    """
    out = np.full(values.shape[0], np.nan)
    v = values[candidates]
    order = np.argsort(v)  # any order within ties will do: tied ranks are averaged below
    sv = v[order]
    sorted_ranks = np.arange(1, len(v) + 1, dtype=np.float64)
    # Average ranks over ties so that equal scores get equal percentiles (NaNs count as equal, as
    # in np.unique). Ties are runs of the sorted values: one sort, not a second one for np.unique.
    new_run = sv[1:] != sv[:-1]
    if sv.dtype.kind == "f":
        new_run &= ~(np.isnan(sv[1:]) & np.isnan(sv[:-1]))
    if len(v) > 1 and not new_run.all():
        run = np.concatenate([[0], np.cumsum(new_run)])
        sorted_ranks = (np.bincount(run, weights=sorted_ranks) / np.bincount(run))[run]
    ranks = np.empty(len(v))
    ranks[order] = sorted_ranks
    out[candidates] = ranks / len(v)
    return out


@register("random")
def random_acquisition(view: PoolView, batch_size: int, rng: np.random.Generator) -> Selection:
    """Uniformly random candidates (utility = a random draw)."""
    utilities = rng.random(len(view))
    return select_by_utility(view, utilities, batch_size, rng, diverse=False, factor=1)


@register("uncertainty")
def uncertainty_acquisition(view: PoolView, batch_size: int, rng: np.random.Generator, diverse: bool = False, factor: int = 10) -> Selection:
    """Task stream only: the most uncertain candidates (classic uncertainty sampling)."""
    return select_by_utility(view, view.uncertainty.astype(np.float64), batch_size, rng, diverse, factor)


@register("density")
def density_acquisition(view: PoolView, batch_size: int, rng: np.random.Generator, diverse: bool = True, factor: int = 10) -> Selection:
    """Data stream only: the most typical candidates, spread over the embedding."""
    return select_by_utility(view, view.typicality.astype(np.float64), batch_size, rng, diverse, factor)


def dualstream_utility(view: PoolView, beta: float = 1.0, gate: float = 0.0) -> np.ndarray:
    """``(N,)`` utility ``pct(uncertainty) * pct(typicality) ** beta`` on candidates, NaN elsewhere.

    High only when an item is both uncertain to the task model and typical of the data; an
    uncertain outlier (low typicality) is pushed down. ``beta`` weighs the data stream. ``gate`` in
    ``[0, 1)`` zeroes the utility of the least typical ``gate`` share of candidates outright: a hard
    outlier filter that, with a small ``beta``, leaves the ranking of typical items to uncertainty
    (for pools where informative structures are themselves somewhat atypical).
    """
    if not 0.0 <= gate < 1.0:
        raise ConfigError(f"acquisition.params.gate must be in [0, 1) (a share of the candidates), got {gate}")
    cand = view.candidates
    u = rank_percentile(view.uncertainty.astype(np.float64), cand)
    t = rank_percentile(view.typicality.astype(np.float64), cand)
    out = u * t**beta
    # t is a percentile in (0, 1]: t <= gate is exactly the least typical `gate` share.
    out[cand[t[cand] <= gate]] = 0.0
    return out


@register("dualstream")
def dualstream_acquisition(
    view: PoolView,
    batch_size: int,
    rng: np.random.Generator,
    beta: float = 1.0,
    gate: float = 0.0,
    diverse: bool = True,
    factor: int = 10,
    screen_z: float | None = None,
    mix: bool = False,
    mix_start: float = 8,
    mix_end: float = 64,
    screen_embedding: bool = False,
    screen_k: int = 200,
    screen_separation: float = 3.0,
    screen_max_share: float = 0.3,
    diverse_end: int | None = None,
) -> Selection:
    """Uncertain **and** typical, diverse within the batch (k-means in the frozen embedding).

    ``screen_z``: a pixel-statistics quality screen before the two streams (``None`` = off). A
    candidate whose statistics (``view.extras["pixel_stats"]``) lie more than ``screen_z`` robust
    SDs from the pool's is taken only when too few others remain; its utility is reported as
    ``-max|z|`` (below every kept candidate's, which lie in ``(0, 1]``). Why pixel statistics and not the
    frozen embedding: a whole corrupted section looks *typical* to its kNN density, and its LOF-style
    outlier score, though it ranks defects well within a pool at large k, has no threshold that holds
    across pools (``experiments/scripts/artifact_audit.py``, ``veto_calibration.py``; BENCHMARKS.md §3).

    ``screen_embedding``: the data stream's own quality screen, alone or beside the pixel one: the
    items of a clearly separate upper mode of the pool's LOF-style outlier score in the frozen
    embedding (``screen_k`` neighbours; :func:`dualstream.streams.bimodal.bimodal_upper` with
    ``screen_separation`` and ``screen_max_share``), treated like pixel-screened ones. The rule is
    relative to the pool, so a clean pool (a skewed tail, no second mode) screens nothing; ``screen_k``
    must exceed the largest group of near-identical defects (a corrupted section: 48 patches in the
    benchmark). Defaults chosen on tuning pools (``experiments/scripts/veto_calibration.py``).

    ``mix``: fade ``beta`` with the labels (:func:`dualstream.acquisition.budget_mix.effective_beta`:
    full up to ``mix_start`` queried items, 0 from ``mix_end``, linear in ``log2 n`` between), so that
    uncertainty alone ranks at large budgets; the screen and the diversity step stay. Off by default.

    ``diverse_end``: from this many queried items on, the batch is the plain top-``B`` by utility (``None``:
    diverse at every budget). Why: at 64 -> 128 labels the shortlist (``factor x B``) is nearly the
    whole pool, so one pick per cluster becomes coverage sampling where uncertainty leads.
    """
    check_mix(mix_start, mix_end)
    n_queried = int(view.queried.sum())
    if diverse_end is not None:
        if not diverse_end >= 1:
            raise ConfigError(f"acquisition.params.diverse_end must be a label count >= 1 or null (always diverse), got {diverse_end}")
        diverse = diverse and n_queried < diverse_end
    utilities = dualstream_utility(view, effective_beta(beta, n_queried, mix, mix_start, mix_end), gate)
    screened, penalty = quality_screen(view, screen_z, screen_embedding, screen_k, screen_separation, screen_max_share)
    if screened is not None:
        hit = view.candidates[screened[view.candidates]]
        utilities[hit] = penalty[hit]
    return select_by_utility(view, utilities, batch_size, rng, diverse, factor, exclude=screened)


def quality_screen(
    view: PoolView,
    screen_z: float | None,
    screen_embedding: bool = False,
    screen_k: int = 200,
    screen_separation: float = 3.0,
    screen_max_share: float = 0.3,
    strategy: str = "dualstream",
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The items a quality screen rules out, and a utility to report for them.

    Pixel screen (``screen_z`` robust SDs of ``view.extras["pixel_stats"]``; ``None`` = off) and/or the
    embedding's pool-relative outlier mode (``screen_embedding``; :func:`embedding_outliers`), in
    ``view.extras["screen_embedding"]`` (a second encoder, config ``screen_encoder``) when present,
    else in ``view.embedding``.

    Returns:
        ``(screened (N,) bool, penalty (N,) float64)``, or ``(None, None)`` when both screens are off.
        ``penalty`` is ``-max|z|`` of the pixel statistics where the pixel screen is on, else ``-1``:
        below every utility in ``[0, 1]``, more negative for worse items.
    """
    if not screen_embedding and screen_z is None:
        return None, None
    screened = np.zeros(len(view), dtype=bool)
    penalty = np.full(len(view), -1.0)
    if screen_embedding:
        # A second encoder's embedding when the run has one (screen_encoder): one stream as veto, one as weight.
        space = view.extras.get("screen_embedding", view.embedding)
        screened |= embedding_outliers(space, screen_k, screen_separation, screen_max_share)
    if screen_z is not None:
        if not screen_z > 0:
            raise ConfigError(f"acquisition.params.screen_z must be > 0 (robust SDs) or null (no screen), got {screen_z}")
        outlying = pixel_outlying(view, strategy)
        pixel = outlying > float(screen_z)
        penalty[pixel] = -outlying[pixel]
        screened |= pixel
    return screened, penalty


EXACT_KNN_MAX = 20_000  # embedding_screen's exact-kNN limit (embedding_structure's default)
SCREEN_CLUSTER_ITEMS = 2_000  # above 1M items the screen's k-means keeps clusters at about this size
_warned_big_pool = False
# The screen depends on the frozen embedding and its parameters only: computed once per run, not per round.
_SCREENS = LRU(2)


def _warn_big_pool(n: int) -> None:
    global _warned_big_pool
    _warned_big_pool = True
    log.warning(
        "screen_embedding on %d items: neighbours are searched within k-means clusters above %d items, so a group of"
        " near-identical defects that fills its own cluster is not screened; use the pixel screen (screen_z) as well", n, EXACT_KNN_MAX
    )


def embedding_outliers(embedding: np.ndarray, k: int = 200, separation: float = 3.0, max_share: float = 0.3) -> np.ndarray:
    """``(N,)`` bool: the upper mode of the pool's LOF-style outlier z in ``embedding`` ``(N, D)``, when
    it is a clearly separate minority (:func:`dualstream.streams.bimodal.bimodal_upper`); else all False.

    ``k`` is clamped to ``N - 1``; pools of fewer than 10 items are never screened (no mode to find).
    Measured on pools of 720 items (BENCHMARKS.md §3). Above ``EXACT_KNN_MAX`` items
    :func:`dualstream.streams.structure.embedding_structure` searches neighbours within k-means
    clusters, where a defect group that fills a cluster of its own looks dense: the screen then misses
    it, and says so once in the log. Above 1M items the k-means gets ``N / 2000`` clusters instead of
    500, so the first call stays linear in ``N`` (BENCHMARKS.md §4). Memoised in-process (two-entry LRU keyed by the embedding's
    :func:`~dualstream.streams.knn.fingerprint` and the parameters): later rounds of a run pay nothing.
    """
    n = len(embedding)
    if not k >= 1 or not separation > 0 or not 0 < max_share < 1:
        raise ConfigError(
            "acquisition.params: need screen_k >= 1, screen_separation > 0 and 0 < screen_max_share < 1;"
            f" got {k}, {separation}, {max_share}"
        )
    if n < 10:
        return np.zeros(n, dtype=bool)
    if n > EXACT_KNN_MAX and not _warned_big_pool:
        _warn_big_pool(n)

    def make() -> np.ndarray:
        # Above 1M items, more clusters (~2,000 items each) keep the within-cluster search linear in N
        # (500 clusters at 10M would be 20,000 items each: hours); up to 1M this is the structure's 500 cap.
        clusters = max(500, n // SCREEN_CLUSTER_ITEMS)
        z = st.outlier_z(embedding, k=min(int(k), n - 1), max_clusters=clusters, exact_max=EXACT_KNN_MAX)
        return bimodal_upper(z, separation, max_share)[0]

    key = (fingerprint(embedding), int(k), float(separation), float(max_share), EXACT_KNN_MAX, SCREEN_CLUSTER_ITEMS)
    return _SCREENS.get_or_make(key, make).copy()  # a copy: callers may edit the mask they get


# Today's formula under a name that will not move when `dualstream` is switched to a newer one.
register("dualstream_v1")(dualstream_acquisition)
# Dual-stream behind a pixel-statistics quality screen (issue 10): the same function, its own name in reports.
register("dualstream_screen")(dualstream_acquisition)
