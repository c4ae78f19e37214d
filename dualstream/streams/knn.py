"""k nearest neighbours of every item of a pool, exact for small pools and FAISS-approximate for big ones.

Used by the typicality pass (:mod:`.typicality`), TypiClust and ProbCover. One entry point,
:func:`knn`, returns Euclidean distances and indices of the ``k`` nearest *other* items:

- ``exact`` (default below ``exact_below`` items): FAISS ``IndexFlatL2`` (BLAS, ``O(N^2 D)``), or,
  when ``faiss`` is not installed, a blockwise ``torch.cdist`` (memory ``O(block x N)``); a log
  line says which.
- ``ivf`` (default from ``exact_below`` items on): a blocked inverted file. FAISS k-means splits
  the pool into ``nlist ~ sqrt(N)`` lists; the items of each list are compared, in one GEMM, with
  every item of the ``nprobe`` lists whose centroids are nearest to their list's centroid, and
  ``torch.topk`` keeps the ``k`` nearest. Time ``O(N (nlist + nprobe N / nlist) D)`` =
  ``O(N^1.5 D)``, memory ``O(N k + block)``. Probing per list rather than per query (as FAISS'
  ``IndexIVFFlat`` does) turns ``N`` scans into ``nlist`` BLAS calls: ~10x faster on our 2-core
  machine (FAISS' per-query IVF: ~35 CPU s for 200k x 128 at recall 0.98; this: ~7-11 s at 0.84-0.99).
- ``hnsw``: FAISS ``IndexHNSWFlat`` (``M`` links per node); no training, slower build on CPUs.

Approximate results come with a recall estimate (:func:`sample_recall`: exact neighbours of
``recall_sample`` random queries), logged and kept in :data:`LAST_RUN` for benchmarks.

Threads: FAISS (OpenMP) and torch run on ``threads`` threads (default ``torch.get_num_threads()``,
so a run with ``trainer.cpu_threads=1`` stays on one core); previous settings are restored.

The IVF partition is memoised in-process (:func:`partition`, a one-entry LRU keyed by
:func:`fingerprint` of the array and the parameters) so that the typicality pass, TypiClust and
ProbCover on the same frozen embedding run k-means once. :func:`clear_cache` drops it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np
import torch

from dualstream.errors import ConfigError

log = logging.getLogger(__name__)

METHODS = ("auto", "exact", "ivf", "hnsw")
EXACT_BELOW = 50_000

#: Diagnostics of the last :func:`knn` call: method used, index parameters, seconds, recall estimate.
LAST_RUN: dict[str, Any] = {}

# FAISS's loader logs which CPU build it picked at INFO on every import: not the run's business.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)
try:  # optional: without faiss every method falls back to the exact torch path
    import faiss  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - exercised by monkeypatching in tests
    faiss = None


def have_faiss() -> bool:
    """Whether the ``faiss`` module is importable (``faiss-cpu``)."""
    return faiss is not None


# --- fingerprints and a small LRU -------------------------------------------------------------------


def fingerprint(x: np.ndarray) -> str:
    """Cheap content key of an ``(N, D)`` array: shape, dtype, column sums and up to 4096 evenly spaced rows.

    Full hashing of a 1M x 128 embedding costs about a second; this reads the array once (the
    column sums, in float64) and hashes a few MB. Two arrays that differ only outside the sampled
    rows and with equal column sums would collide; frozen embeddings are never edited in place.
    """
    x = np.asarray(x)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((x.shape, x.dtype.str)).encode())
    if x.size:
        h.update(np.ascontiguousarray(x.sum(axis=0, dtype=np.float64)).tobytes())
        step = max(1, x.shape[0] // 4096)
        h.update(np.ascontiguousarray(x[::step]).tobytes())
    return h.hexdigest()


class LRU:
    """Tiny in-process least-recently-used memo: ``get_or_make(key, make)``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict[Any, Any] = OrderedDict()

    def get_or_make(self, key: Any, make: Callable[[], Any]) -> Any:
        if key in self.data:
            self.data.move_to_end(key)
            return self.data[key]
        value = make()
        self.data[key] = value
        while len(self.data) > self.size:
            self.data.popitem(last=False)
        return value

    def clear(self) -> None:
        self.data.clear()


_PARTITIONS = LRU(1)


def clear_cache() -> None:
    """Drop memoised partitions and :func:`knn_cached` results."""
    _PARTITIONS.clear()
    _RESULTS.clear()


# --- threads ----------------------------------------------------------------------------------------


def resolve_threads(threads: int | None) -> int:
    """``threads`` or, if ``None``, ``torch.get_num_threads()`` (the run's ``trainer.cpu_threads``)."""
    return max(1, int(threads) if threads is not None else torch.get_num_threads())


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run torch on ``threads`` intra-op threads (unchanged if ``None``), then restore."""
    before = torch.get_num_threads()
    n = resolve_threads(threads)
    if n != before:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if n != before:
            torch.set_num_threads(before)


@contextmanager
def faiss_threads(threads: int | None) -> Iterator[int]:
    """Run FAISS (OpenMP) and torch on ``threads`` threads, then restore the previous settings."""
    with torch_threads(threads) as n:
        if faiss is None:
            yield n
            return
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(n)
        try:
            yield n
        finally:
            faiss.omp_set_num_threads(before)


# --- exact paths ------------------------------------------------------------------------------------


def _drop_self(d2: np.ndarray, idx: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """From ``k + 1`` results per query remove the query itself (or, if absent, e.g. among many
    duplicates at distance 0, the last result): ``(k,)`` per row, order kept."""
    drop = idx == rows[:, None]
    first = drop & (np.cumsum(drop, axis=1) == 1)  # only the first match, should a row repeat it
    none = ~first.any(axis=1)
    first[none, -1] = True
    keep = ~first
    n = len(rows)
    return d2[keep].reshape(n, k), idx[keep].reshape(n, k)


def _torch_exact(x: np.ndarray, k: int, block: int = 1024, queries: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Blockwise ``torch.cdist`` + ``topk`` (the pre-FAISS path): ``(N, k)`` distances and indices.

    ``queries`` (row indices) restricts the queries to those rows; memory ``O(block x N)``.
    """
    xt = torch.from_numpy(x)
    rows = np.arange(len(x)) if queries is None else np.asarray(queries, dtype=np.int64)
    dist = torch.empty(len(rows), k)
    ind = torch.empty(len(rows), k, dtype=torch.int64)
    for start in range(0, len(rows), block):
        sel = torch.from_numpy(rows[start : start + block])
        d = torch.cdist(xt[sel], xt)
        d[torch.arange(len(sel)), sel] = float("inf")  # exclude self
        top = torch.topk(d, k, dim=1, largest=False)
        dist[start : start + len(sel)] = top.values
        ind[start : start + len(sel)] = top.indices
    return dist.numpy(), ind.numpy()


def _faiss_flat(x: np.ndarray, k: int, queries: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact FAISS ``IndexFlatL2``: squared distances and indices ``(Q, k)``, self excluded."""
    rows = np.arange(len(x)) if queries is None else np.asarray(queries, dtype=np.int64)
    xq = x if queries is None else np.ascontiguousarray(x[rows])
    if hasattr(faiss, "knn"):  # brute force without copying the pool into an index
        d2, idx = faiss.knn(xq, x, k + 1)
    else:
        index = faiss.IndexFlatL2(x.shape[1])
        index.add(x)
        d2, idx = index.search(xq, k + 1)
    return _drop_self(d2, idx, rows, k)


# --- approximate paths ------------------------------------------------------------------------------


def default_nlist(n: int) -> int:
    """Inverted lists for ``n`` items: ``sqrt(n)`` (balances the coarse assignment, ``O(N nlist D)``,
    against the list scans, ``O(N nprobe N / nlist D)``), at most ``n / 32``."""
    return int(max(1, min(round(np.sqrt(n)), n // 32)))


class Partition:
    """Coarse k-means partition of a pool for the blocked inverted-file search.

    Attributes:
        centroids: ``(nlist, D)`` float32.
        order: ``(N,)`` int64 item indices grouped by list; ``bounds`` ``(nlist + 1,)`` offsets into it.
        assign: ``(N,)`` int64 list of each item.
    """

    def __init__(self, centroids: np.ndarray, assign: np.ndarray) -> None:
        self.centroids = centroids
        self.assign = assign
        nlist = len(centroids)
        self.order = np.argsort(assign, kind="stable")
        self.bounds = np.concatenate([[0], np.cumsum(np.bincount(assign, minlength=nlist))]).astype(np.int64)

    def probes(self, nprobe: int) -> np.ndarray:
        """``(nlist, min(nprobe, nlist))`` int64: the lists whose centroids are nearest to each list's
        centroid, itself first."""
        c = torch.from_numpy(self.centroids)
        d2 = torch.cdist(c, c)
        d2.fill_diagonal_(-1.0)
        return torch.topk(d2, min(int(nprobe), len(c)), dim=1, largest=False).indices.numpy()

    def members(self, lists: np.ndarray) -> np.ndarray:
        return np.concatenate([self.order[self.bounds[j] : self.bounds[j + 1]] for j in lists])


def _nearest_centroid(x: np.ndarray, centroids: np.ndarray, rows_per_block: int = 16384) -> np.ndarray:
    """``(N,)`` int64 index of the nearest centroid, blockwise GEMM (torch threads)."""
    c = torch.from_numpy(centroids)
    cn = (c * c).sum(1)
    out = np.empty(len(x), dtype=np.int64)
    for r0 in range(0, len(x), rows_per_block):
        xb = torch.from_numpy(x[r0 : r0 + rows_per_block])
        out[r0 : r0 + len(xb)] = torch.addmm(cn, xb, c.T, alpha=-2.0).argmin(1).numpy()
    return out


def partition(
    x: np.ndarray, nlist: int | None = None, seed: int = 0, train_per_list: int = 32, niter: int = 10, threads: int | None = None
) -> Partition:
    """k-means partition of ``x`` ``(N, D)`` float32 into ``nlist`` lists, memoised (one-entry LRU).

    FAISS k-means, ``niter`` iterations on ``min(N, train_per_list * nlist)`` random items (seeded),
    then every item goes to its nearest centroid. Time ``O((niter * train + N) nlist D)``.
    ``threads``: FAISS threads of the k-means (default ``torch.get_num_threads()``, i.e. the run's
    ``trainer.cpu_threads``; sweeps that share the cores set 1, where OpenMP's spin-waiting would
    otherwise cost more than a second thread gains). The centroids do not depend on it (checked: identical
    with 1 and 2 threads).
    """
    n, dim = x.shape
    nlist = default_nlist(n) if nlist is None else max(1, min(int(nlist), n))
    key = ("partition", fingerprint(x), nlist, seed, train_per_list, niter)

    def make() -> Partition:
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed)
        m = min(n, max(nlist, train_per_list * nlist))
        sample = x if m >= n else np.ascontiguousarray(x[np.sort(rng.choice(n, size=m, replace=False))])
        km = faiss.Kmeans(dim, nlist, niter=niter, seed=seed, min_points_per_centroid=1, max_points_per_centroid=train_per_list + 1)
        with faiss_threads(threads):  # 2 threads: 4.7 -> 2.8 s at 1M x 128 on an idle 2-core machine
            km.train(sample)
        centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
        part = Partition(centroids, _nearest_centroid(x, centroids))
        log.info("knn: %d lists over %d x %d (k-means on %d items), %.1fs", nlist, n, dim, m, time.perf_counter() - t0)
        return part

    return _PARTITIONS.get_or_make(key, make)


def blocked_pairs(
    x: np.ndarray, part: Partition, nprobe: int, fn: Callable[[np.ndarray, np.ndarray, torch.Tensor], Any], threads: int | None = None,
    block_elems: int = 1 << 22,
) -> list[Any]:
    """Call ``fn(rows (m,), cand (C,), d2 (m, C) float32 tensor)`` for every list: squared distances
    from the list's items (in row chunks of at most ``block_elems / C``) to every item of the lists
    it probes; returns the results in list order.

    One GEMM per chunk instead of one scan per query; memory ``O(threads x block_elems)``. Lists are
    spread over ``threads`` Python threads, each running torch single-threaded: on a busy machine
    torch's own intra-op pool on these small GEMMs was ~6x slower than one thread (2.5 s vs 16 s for
    100k x 128), as noted in TypiClust's ``_single_thread``.
    """
    from concurrent.futures import ThreadPoolExecutor

    xt = torch.from_numpy(x)
    norms = (xt * xt).sum(1)
    probes = part.probes(nprobe)

    def one(c: int) -> list[Any]:
        rows = part.order[part.bounds[c] : part.bounds[c + 1]]
        if len(rows) == 0:
            return []
        cand = part.members(probes[c])
        ct = torch.from_numpy(cand)
        xc, cn = xt[ct], norms[ct]
        step = max(1, block_elems // max(1, len(cand)))
        out = []
        for r0 in range(0, len(rows), step):
            r = rows[r0 : r0 + step]
            rt = torch.from_numpy(r)
            d2 = torch.addmm(cn, xt[rt], xc.T, alpha=-2.0)
            d2 += norms[rt][:, None]
            out.append(fn(r, cand, d2))
        return out

    n_threads = resolve_threads(threads)
    with torch_threads(1):
        if n_threads == 1:
            chunks = [one(c) for c in range(len(part.centroids))]
        else:
            with ThreadPoolExecutor(n_threads) as pool:
                chunks = list(pool.map(one, range(len(part.centroids))))
    return [r for chunk in chunks for r in chunk]


def smallest(d: torch.Tensor, k: int, groups: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` smallest entries of every row of ``d`` ``(m, C)``, ascending, and their columns:
    exactly ``torch.topk(d, k, largest=False)`` (up to the order of ties), ~30% cheaper for wide rows.

    The columns are cut into ``groups`` contiguous slices; the element-wise minimum over the slices
    (vectorised, unlike a reduction over short rows) gives ``C / groups`` column-group minima. The
    ``k`` groups with the smallest minima hold ``k`` entries no larger than the largest of those
    minima, and every entry below it lies in one of them, so the top-k of their ``k x groups``
    entries (plus the ``C mod groups`` columns left over) is the exact answer.
    """
    m, c = d.shape
    w = c // groups
    if groups < 2 or w < k:
        t = torch.topk(d, k, dim=1, largest=False)
        return t.values, t.indices
    group_min = torch.minimum(d[:, :w], d[:, w : 2 * w])
    for g in range(2, groups):
        torch.minimum(group_min, d[:, g * w : (g + 1) * w], out=group_min)
    best = torch.topk(group_min, k, dim=1, largest=False, sorted=False).indices
    cols = (best[:, None, :] + (torch.arange(groups) * w)[None, :, None]).reshape(m, groups * k)
    if c > groups * w:  # the last c mod groups columns are always kept
        cols = torch.cat([cols, torch.arange(groups * w, c).expand(m, -1)], dim=1)
    t = torch.topk(torch.gather(d, 1, cols), k, dim=1, largest=False)
    return t.values, torch.gather(cols, 1, t.indices)


def _ivf_knn(x: np.ndarray, k: int, nlist: int | None, nprobe: int, seed: int, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Approximate kNN (self excluded): each item's neighbours among the items of the ``nprobe`` lists
    nearest to its own list. Rows with fewer than ``k + 1`` candidates are searched exactly."""
    part = partition(x, nlist, seed, threads=threads)
    n = len(x)
    d2_all = np.empty((n, k + 1), dtype=np.float32)
    idx_all = np.empty((n, k + 1), dtype=np.int64)

    def top(rows: np.ndarray, cand: np.ndarray, d2: torch.Tensor) -> np.ndarray | None:
        if len(cand) < k + 1:
            return rows
        values, cols = smallest(d2, k + 1)
        d2_all[rows] = values.numpy()  # rows of different lists are disjoint: safe across threads
        idx_all[rows] = cand[cols.numpy()]
        return None

    short = [r for r in blocked_pairs(x, part, nprobe, top, threads) if r is not None]
    d2_all, idx_all = _drop_self(d2_all, idx_all, np.arange(n), k)
    if short:
        rows = np.concatenate(short)
        d_s, i_s = _exact_rows(x, rows, k)
        d2_all[rows], idx_all[rows] = d_s**2, i_s
    return d2_all, idx_all


def _exact_rows(x: np.ndarray, rows: np.ndarray, k: int, block_elems: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``(Q, k)`` distances and indices of the queries ``rows`` (self excluded), blockwise GEMM
    over column blocks with a running top-k merge: memory ``O(block_elems + Q k)``, time ``O(Q N D)``."""
    xt = torch.from_numpy(x)
    norms = (xt * xt).sum(1)
    q = torch.from_numpy(np.asarray(rows, dtype=np.int64))
    xq, qn = xt[q], norms[q]
    n = len(x)
    best_d = torch.full((len(q), k + 1), float("inf"))
    best_i = torch.full((len(q), k + 1), -1, dtype=torch.int64)
    cols = max(k + 1, block_elems // max(1, len(q)))
    for c0 in range(0, n, cols):
        c1 = min(c0 + cols, n)
        d2 = torch.addmm(norms[c0:c1], xq, xt[c0:c1].T, alpha=-2.0)
        d2 += qn[:, None]
        both_d = torch.cat([best_d, d2], 1)
        both_i = torch.cat([best_i, torch.arange(c0, c1).expand(len(q), -1)], 1)
        top = torch.topk(both_d, min(k + 1, both_d.shape[1]), dim=1, largest=False)
        best_d, best_i = top.values, torch.gather(both_i, 1, top.indices)
    d2, idx = _drop_self(best_d.numpy(), best_i.numpy(), q.numpy(), k)
    return np.sqrt(np.maximum(d2, 0.0)), idx


def _hnsw_search(x: np.ndarray, k: int, m: int, ef_search: int, ef_construction: int) -> tuple[np.ndarray, np.ndarray]:
    index = faiss.IndexHNSWFlat(x.shape[1], m, faiss.METRIC_L2)
    index.hnsw.efConstruction = ef_construction
    index.add(x)
    index.hnsw.efSearch = max(ef_search, k + 1)
    d2, idx = index.search(x, k + 1)
    return _drop_self(d2, idx, np.arange(len(x)), k)


# --- public API -------------------------------------------------------------------------------------


def knn(
    embedding: np.ndarray,
    k: int,
    *,
    exact_below: int = EXACT_BELOW,
    method: str = "auto",
    nprobe: int = 6,
    nlist: int | None = None,
    hnsw_m: int = 32,
    ef_search: int = 64,
    seed: int = 0,
    threads: int | None = None,
    recall_sample: int = 500,
    block: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest other items of every item, by Euclidean distance.

    Args:
        embedding: ``(N, D)`` float (converted to C-contiguous float32).
        k: neighbours per item; clipped to ``N - 1``.
        exact_below: with ``method="auto"``, pools smaller than this are searched exactly, larger
            ones with IVF.
        method: ``auto`` | ``exact`` | ``ivf`` | ``hnsw``. Without ``faiss`` every method runs the
            exact torch path (logged).
        nprobe: IVF lists searched per query (recall ~0.9+ at ``4 sqrt(N)`` lists, see tests).
        nlist: IVF lists; default :func:`default_nlist`.
        hnsw_m, ef_search: HNSW links per node and search beam (``efConstruction = 2 ef_search``).
        seed: seeds the IVF training sample and k-means, and the recall sample.
        threads: FAISS OpenMP threads; ``None`` = ``torch.get_num_threads()``.
        recall_sample: for approximate methods, queries whose exact neighbours are computed to
            estimate recall@k (logged, in :data:`LAST_RUN`); 0 skips it.
        block: query block of the torch fallback (memory ``block x N`` floats).

    Returns:
        ``(distances (N, k) float32 ascending per row, indices (N, k) int64)``; ``(N, 0)`` arrays
        when ``N < 2``. Duplicates of an item count as neighbours at distance 0.
    """
    if method not in METHODS:
        raise ConfigError(f"knn method '{method}' is unknown; choose one of {list(METHODS)}")
    x = np.ascontiguousarray(embedding, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"knn needs an (N, D) embedding, got shape {x.shape}")
    n = x.shape[0]
    k = min(int(k), n - 1)
    if k < 1:
        return np.zeros((n, 0), dtype=np.float32), np.zeros((n, 0), dtype=np.int64)
    chosen = method if method != "auto" else ("exact" if n < exact_below else "ivf")
    t0 = time.perf_counter()
    info: dict[str, Any] = {"n": n, "dim": x.shape[1], "k": k, "requested": method}
    if faiss is None:
        if chosen != "exact" or n >= 20_000:
            log.warning("knn: faiss is not installed (pip install faiss-cpu); exact torch kNN over %d items (O(N^2 D))", n)
        else:
            log.info("knn: faiss is not installed; exact torch kNN over %d items", n)
        with torch_threads(threads):
            # cap the block so one distance block stays <= 2^24 floats (64 MiB) on big pools
            dist, idx = _torch_exact(x, k, max(1, min(block, (1 << 24) // n)))
        info.update(method="exact-torch")
    else:
        with faiss_threads(threads) as nthreads:
            info["threads"] = nthreads
            if chosen == "exact":
                d2, idx = _faiss_flat(x, k)
                info.update(method="exact-faiss")
            elif chosen == "ivf":
                part = partition(x, nlist, seed, threads=nthreads)
                d2, idx = _ivf_knn(x, k, nlist, nprobe, seed, nthreads)
                info.update(method="ivf", nlist=len(part.centroids), nprobe=min(int(nprobe), len(part.centroids)))
            else:
                d2, idx = _hnsw_search(x, k, int(hnsw_m), int(ef_search), 2 * int(ef_search))
                info.update(method="hnsw", m=int(hnsw_m), ef_search=int(ef_search))
        dist = np.sqrt(np.maximum(d2, 0.0, out=d2), out=d2)
    info["seconds"] = time.perf_counter() - t0
    info["recall"] = None
    if info["method"] in ("ivf", "hnsw") and recall_sample > 0:
        info["recall"] = sample_recall(x, idx, recall_sample, seed=seed, threads=threads)
        log.info(
            "knn: %s over %d x %d, k=%d, %.1fs; recall@%d %.3f on %d sampled queries",
            info["method"], n, x.shape[1], k, info["seconds"], k, info["recall"], min(recall_sample, n),
        )
    LAST_RUN.clear()
    LAST_RUN.update(info)
    return dist.astype(np.float32, copy=False), idx.astype(np.int64, copy=False)


_RESULTS = LRU(1)


def knn_cached(embedding: np.ndarray, k: int, **knn_kwargs) -> tuple[np.ndarray, np.ndarray]:
    """:func:`knn`, memoised in-process (one-entry LRU keyed by :func:`fingerprint`, ``k`` and the
    keyword arguments): for results that depend only on a frozen embedding and are needed every round.
    Holds ``N k`` distances and indices (12 bytes each). The arrays are shared: do not modify them."""
    x = np.ascontiguousarray(embedding, dtype=np.float32)
    key = ("knn", fingerprint(x), int(k), tuple(sorted(knn_kwargs.items())))
    return _RESULTS.get_or_make(key, lambda: knn(x, k, **knn_kwargs))


#: ``PoolView.extras`` keys of neighbour lists computed once with the frozen embedding (and cached with it).
NEIGHBOUR_KEYS = ("knn_distances", "knn_indices")


def neighbours(embedding: np.ndarray, k: int, extras: Any = None, **knn_kwargs) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest other items of every item: the first ``k`` columns of precomputed lists in
    ``extras`` (:data:`NEIGHBOUR_KEYS`, ``(N, K >= k)``) when there are enough, else :func:`knn_cached`.

    The data stream computes the lists once per frozen embedding and keeps them on disk beside it, so
    a new process (a lab's next ``dualstream-suggest`` round, a resumed run) does not search again.
    Columns are ascending per row, so the first ``k`` of ``K`` are the ``k`` nearest among the same
    candidates: identical to a ``k``-search for the exact method and for IVF.
    """
    if extras is not None and all(key in extras for key in NEIGHBOUR_KEYS):
        dist, idx = extras[NEIGHBOUR_KEYS[0]], extras[NEIGHBOUR_KEYS[1]]
        if dist.shape[0] == len(embedding) and dist.shape[1] >= k:
            return dist[:, :k], idx[:, :k]
    return knn_cached(embedding, k, **knn_kwargs)


def recall_at_k(approx_idx: np.ndarray, exact_idx: np.ndarray) -> float:
    """Mean share of each row's exact neighbours found by the approximate search.

    Args:
        approx_idx, exact_idx: ``(Q, k)`` int neighbour indices of the same queries.

    Returns:
        recall@k in ``[0, 1]`` (1.0 for ``k = 0``).
    """
    approx_idx, exact_idx = np.asarray(approx_idx), np.asarray(exact_idx)
    if approx_idx.shape != exact_idx.shape:
        raise ValueError(f"recall_at_k needs equal shapes, got {approx_idx.shape} and {exact_idx.shape}")
    q, k = exact_idx.shape
    if k == 0 or q == 0:
        return 1.0
    # Row-wise set intersection: sort both, then count matches via searchsorted per row offset.
    offs = (np.arange(q, dtype=np.int64) * (int(max(approx_idx.max(), exact_idx.max())) + 2))[:, None]
    a = np.sort((approx_idx + offs).ravel())
    e = (exact_idx + offs).ravel()
    pos = np.clip(np.searchsorted(a, e), 0, len(a) - 1)
    return float((a[pos] == e).sum() / (q * k))


def sample_recall(
    embedding: np.ndarray, approx_idx: np.ndarray, n_queries: int = 1000, *, seed: int = 0, threads: int | None = None
) -> float:
    """recall@k of ``approx_idx`` ``(N, k)`` against exact neighbours of ``min(n_queries, N)`` random items.

    Cost ``O(n_queries N D)`` (exact FAISS flat search, or torch without faiss).
    """
    x = np.ascontiguousarray(embedding, dtype=np.float32)
    n, k = approx_idx.shape
    if k == 0:
        return 1.0
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(n_queries, n), replace=False))
    with torch_threads(threads):
        _, exact = _exact_rows(x, rows, k)
    return recall_at_k(approx_idx[rows], exact)
