"""``dualstream_v2``: the dual-stream acquisition with the candidate fixes of issue 10 behind switches.

``dualstream`` (== ``dualstream_v1``) multiplies rank percentiles of uncertainty and global
typicality. On clean pools that loses (issue 10) because (1) the rank product flattens the long
tail of uncertainty, (2) global kNN density pushes down coherent but sparse groups (mitochondria-rich
patches), (3) one weighting serves every budget, and (4) the diversity step was never ablated. Each
fix is one parameter here, so that a benchmark (``sweeps/ablation_dualstream.yaml``) decides.
The defaults are **provisional**, pending that ablation.
"""

from __future__ import annotations

import numpy as np

from dualstream.acquisition.base import PoolView, Selection, masked_utilities, register, top_indices
from dualstream.acquisition.budget_mix import check_mix, effective_beta
from dualstream.acquisition.core import rank_percentile
from dualstream.acquisition.diversity import diverse_top
from dualstream.errors import ConfigError
from dualstream.streams import structure as st  # module import: structure imports this package in turn

TYPICALITY = ("global", "cluster")
COMBINE = ("rank_product", "minmax_product", "weighted")


def minmax(values: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """``(N,)`` float64 ``values`` min-max scaled to ``[0, 1]`` over ``candidates``, NaN elsewhere (all 1 when constant)."""
    out = np.full(values.shape[0], np.nan)
    v = np.asarray(values, dtype=np.float64)[candidates]
    lo, hi = (float(v.min()), float(v.max())) if len(v) else (0.0, 0.0)
    out[candidates] = (v - lo) / (hi - lo) if hi > lo else 1.0
    return out


def combine_streams(u: np.ndarray, t: np.ndarray, candidates: np.ndarray, beta: float, how: str) -> np.ndarray:
    """``(N,)`` utility from uncertainty ``u`` and typicality ``t`` (both ``(N,)``, higher = more), NaN off candidates.

    ``rank_product``: ``pct(u) * pct(t) ** beta`` (dualstream v1). ``minmax_product``:
    ``mm(u) * mm(t) ** beta`` with ``mm`` min-max scaling, as in information-density sampling
    (Settles & Craven 2008): the gaps between raw uncertainties survive, so a few far more uncertain
    items stay on top. ``weighted``: ``(mm(u) + beta * mm(t)) / (1 + beta)``, an additive (OR-like)
    blend where an extreme value of one stream can make up for the other.
    """
    if how == "rank_product":
        return rank_percentile(u, candidates) * rank_percentile(t, candidates) ** beta
    mu, mt = minmax(u, candidates), minmax(t, candidates)
    if how == "minmax_product":
        return mu * mt**beta
    return (mu + beta * mt) / (1.0 + beta)


def _check(typicality: str, combine: str, beta: float, veto_z: float, veto_ratio: float, veto_cluster_share: float,
           veto_tight: float, mix_start: float, mix_end: float, factor: int) -> None:
    if typicality not in TYPICALITY:
        raise ConfigError(f"acquisition.params.typicality={typicality!r}; choose one of {', '.join(TYPICALITY)}")
    if combine not in COMBINE:
        raise ConfigError(f"acquisition.params.combine={combine!r}; choose one of {', '.join(COMBINE)}")
    if not beta >= 0:
        raise ConfigError(f"acquisition.params.beta must be >= 0 (weight of the data stream), got {beta}")
    if not veto_z > 0 or not veto_ratio >= 1:
        raise ConfigError(f"acquisition.params.veto_z must be > 0 and veto_ratio >= 1, got {veto_z} and {veto_ratio}")
    if not 0 <= veto_cluster_share < 1 or not veto_tight > 0:
        raise ConfigError(
            f"acquisition.params.veto_cluster_share must be in [0, 1) and veto_tight > 0, got {veto_cluster_share} and {veto_tight}"
        )
    check_mix(mix_start, mix_end)
    if factor < 1:
        raise ConfigError(f"acquisition.params.factor must be >= 1 (shortlist = factor x batch), got {factor}")


def veto_mask(s: st.EmbeddingStructure, veto_z: float = 3.5, veto_ratio: float = 2.0,
              cluster_share: float = 0.0, tight: float = 0.1) -> np.ndarray:
    """``(N,)`` bool items the data stream rules out as artifacts (see :func:`dualstream_v2_acquisition`)."""
    out = (s.outlier_z > veto_z) & (s.rel_density > veto_ratio)
    if cluster_share > 0:
        out |= st.tight_clusters(s.spread, s.sizes, tight, cluster_share)[s.assign]
    return out


def dualstream_v2_utility(
    view: PoolView,
    beta: float = 1.0,
    veto: bool = True,
    veto_z: float = 3.5,
    veto_ratio: float = 2.0,
    veto_cluster_share: float = 0.0,
    veto_tight: float = 0.1,
    typicality: str = "cluster",
    combine: str = "minmax_product",
    mix: bool = True,
    mix_start: float = 8,
    mix_end: float = 64,
    k: int = 20,
    n_clusters: int | None = None,
    structure: st.EmbeddingStructure | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(utility (N,) float64, vetoed (N,) bool)``; utility NaN off candidates and 0 on vetoed items.

    ``structure`` (from :func:`dualstream.streams.structure.embedding_structure` of
    ``view.embedding``) may be passed in by a caller that caches it; otherwise it is computed here
    when the veto or cluster typicality needs it. See :func:`dualstream_v2_acquisition` for the rest.
    """
    cand = view.candidates
    need = veto or typicality == "cluster" or veto_cluster_share > 0
    if need and structure is None:
        structure = st.embedding_structure(view.embedding, k=k, n_clusters=n_clusters)
    t = structure.cluster_typicality_pct if typicality == "cluster" else np.asarray(view.typicality, dtype=np.float64)
    b = effective_beta(beta, int(view.queried.sum()), mix, mix_start, mix_end)
    util = combine_streams(np.asarray(view.uncertainty, dtype=np.float64), t, cand, b, combine)
    vetoed = np.zeros(len(view), dtype=bool)
    if structure is not None and (veto or veto_cluster_share > 0):
        vetoed = veto_mask(structure, veto_z if veto else np.inf, veto_ratio, veto_cluster_share, veto_tight)
    vetoed &= ~view.queried
    util[vetoed] = 0.0
    return util, vetoed


@register("dualstream_v2")
def dualstream_v2_acquisition(
    view: PoolView,
    batch_size: int,
    rng: np.random.Generator,
    beta: float = 1.0,
    veto: bool = True,
    veto_z: float = 3.5,
    veto_ratio: float = 2.0,
    veto_cluster_share: float = 0.0,
    veto_tight: float = 0.1,
    typicality: str = "cluster",
    combine: str = "minmax_product",
    mix: bool = True,
    mix_start: float = 8,
    mix_end: float = 64,
    diverse: bool = True,
    factor: int = 10,
    k: int = 20,
    n_clusters: int | None = None,
) -> Selection:
    """Uncertain and typical, with a calibrated outlier veto, a budget-aware mix and batch diversity.

    Reads ``view.embedding`` ``(N, D)``, ``view.typicality`` ``(N,)`` (``typicality="global"``),
    ``view.uncertainty`` ``(N,)`` and ``view.queried`` ``(N,)``. Provisional defaults, pending
    ``sweeps/ablation_dualstream.yaml``: veto on, cluster typicality, min-max product, mix on, diverse.

    Parameters (paper idea each follows):
        veto: outlier veto from the data stream (Local Outlier Factor, Breunig et al. 2000). The
            relative density ``r`` = an item's mean kNN distance / the mean of its neighbours' (``k``
            neighbours; ~1 inside any cluster, dense or sparse; ``>> 1`` when isolated), then a robust
            z-score of ``log r`` over the pool (median, 1.4826 MAD). Vetoed = ``z > veto_z`` **and**
            ``r > veto_ratio``: utility 0 and never picked while unvetoed candidates remain. The
            veto does not decay with the budget (artifact protection must not). Calibration on clean
            5-component Gaussian mixtures of 1000 items (k 20): ``z > 3.5`` alone vetoes ~0.4% at D 8,
            ~0.1% at D 16-128 (0.4% of the clean EPFL SimCLR pool), but also the odd Gaussian-tail
            item in high D, where log r is tightly concentrated and its MAD tiny; the ratio floor 2
            (neighbours twice as close to each other as to the item) removes those: 0% vetoed at
            D >= 8. In 2-D, Gaussian tails alone reach ``r`` ~2-3: raise both for low-D embeddings.
            A coherent group smaller than ``k + 1`` items has neighbours outside itself and can look
            isolated: ``k`` sets the smallest group the veto spares.
        veto_cluster_share: **experimental**, 0 = off. Also veto whole k-means clusters whose members
            are near-identical (mean distance to the centre ``< veto_tight x`` the median cluster's),
            tightest first, up to this share of the pool: how a run of identical defects (blank
            sections) shows in the embedding, where each member has close neighbours and ``r`` ~1.
        typicality: ``"global"`` = ``view.typicality`` (kNN density over the pool, v1). ``"cluster"``
            = TypiClust's typicality (Hacohen et al. 2022) within the item's k-means cluster
            (``n_clusters``, default ``max(10, N // 50)`` capped at 500), as a rank percentile inside
            the cluster: a sparse but coherent minority's central members score like a dense
            cluster's; clusters of fewer than 5 items score 0.
        combine: ``"rank_product"`` (v1), ``"minmax_product"`` (keeps the long tail of uncertainty)
            or ``"weighted"``; see :func:`combine_streams`.
        mix: budget-aware weighting, after the finding that coverage leads at low budgets and
            uncertainty later (Hacohen et al. 2022, "cold start"; TCM, Doucet et al. 2024):
            ``beta_eff = beta * w(n)``, ``n`` = queried items, ``w`` 1 up to ``mix_start``, 0 from
            ``mix_end``, linear in ``log2(n)`` between. Off: ``beta_eff = beta``.
        diverse, factor: k-means over the ``factor x B`` best candidates, best of each cluster
            (:func:`dualstream.acquisition.diversity.diverse_top`); off = plain top-B.

    Returns:
        ``(B,)`` indices; ``(N,)`` utilities (0 on vetoed candidates, NaN on queried items).
    """
    _check(typicality, combine, beta, veto_z, veto_ratio, veto_cluster_share, veto_tight, mix_start, mix_end, factor)
    structure = None
    if veto or typicality == "cluster" or veto_cluster_share > 0:
        structure = st.embedding_structure(view.embedding, k=k, n_clusters=n_clusters)
    util, vetoed = dualstream_v2_utility(
        view, beta, veto, veto_z, veto_ratio, veto_cluster_share, veto_tight, typicality, combine, mix, mix_start, mix_end,
        k, n_clusters, structure,
    )
    cand = view.candidates
    allowed = cand[~vetoed[cand]]
    n_pick = min(batch_size, len(allowed))
    if n_pick == 0:
        idx = np.zeros(0, dtype=np.int64)
    elif diverse:
        idx = diverse_top(util, view.embedding, allowed, n_pick, rng, factor)
    else:
        idx = top_indices(util, allowed, n_pick)
    if len(idx) < batch_size:  # fewer unvetoed candidates than the batch: the least vetoed ones fill it
        rest = cand[vetoed[cand]]  # non-empty only when structure was computed
        rest = rest[np.argsort(structure.outlier_z[rest], kind="stable")] if len(rest) else rest
        idx = np.concatenate([idx, rest[: batch_size - len(idx)]]).astype(np.int64)
    return Selection(idx, masked_utilities(util, cand))
