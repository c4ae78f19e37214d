#!/usr/bin/env python
"""Time the typicality pass and one selection round on a synthetic pool of any size.

    python experiments/scripts/bench_selection.py --n 1000000 --dim 128 --acquisition typiclust --batch 100 --json
    python experiments/scripts/bench_selection.py --n 10000000 --acquisition dualstream --typicality given \
        --embedding-file /tmp/emb10m.npy --json   # selection only, embedding memory-mapped

The pool: a Gaussian mixture embedding ``(N, dim)`` float32 (64 clusters, each a random 16-dim
linear subspace around its centre plus small isotropic noise, so the intrinsic dimension is low as
in real learned embeddings), uncertainty ``U(0, 1)``, the extras ``margin``, ``least_confidence``,
``bald`` (random), ``pixel_stats`` (log-normal), and ``--queried-share`` of the items already queried. Typicality is the real
data-stream pass, :func:`dualstream.streams.typicality.knn_typicality` (``k=20``), timed on its
own; then ``--repeats`` selections of ``--batch`` items with :func:`dualstream.acquisition.acquire`
(in-process memos, e.g. ProbCover's ball graph, are kept between repeats, as between the rounds of
a run: the first repeat pays the one-off work, the later ones show the per-round cost).

Reported per phase: wall seconds, CPU seconds of this process, and peak memory. Peak memory is the
process's peak resident set size (Linux ``VmHWM`` from ``/proc/self/status``, reset to the current
RSS through ``/proc/self/clear_refs`` before each phase) minus the RSS at the phase start: it counts
numpy, torch and FAISS allocations, unlike tracemalloc. Where ``clear_refs`` is not writable the
``ru_maxrss`` high-water mark is reported instead (not reset between phases; ``memory_source`` says
which). The last stdout line is one JSON object with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time

import numpy as np
from peak_memory import peak_kib, reset_peak, rss_kib  # beside this script


class Phase:
    """Wall/CPU seconds and peak extra resident memory (MiB) of a ``with`` block."""

    def __enter__(self) -> "Phase":
        self.exact = reset_peak()
        self.source = "VmHWM" if self.exact else "ru_maxrss"
        self.base = rss_kib(self.exact)
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.cpu_seconds = time.process_time() - self.c0
        peak = peak_kib(self.exact)
        self.peak_mib = max(0, (peak or 0) - (self.base or 0)) / 1024
        self.peak_total_mib = (peak or 0) / 1024  # the whole process: the pool's arrays included


def make_embedding(n: int, dim: int, seed: int, clusters: int = 64, latent: int = 16, noise: float = 0.05) -> np.ndarray:
    """``(n, dim)`` float32 Gaussian mixture: ``clusters`` centres ``N(0, I)``, each cluster a
    ``latent``-dim Gaussian in a random subspace (scale ~0.5 per direction) plus ``noise`` isotropic."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    assign = rng.integers(clusters, size=n)
    emb = np.empty((n, dim), dtype=np.float32)
    for c in range(clusters):
        rows = np.flatnonzero(assign == c)
        basis = rng.standard_normal((latent, dim), dtype=np.float32) * np.float32(0.5 / np.sqrt(latent))
        z = rng.standard_normal((len(rows), latent), dtype=np.float32)
        emb[rows] = centres[c] + z @ basis
    emb += noise * rng.standard_normal((n, dim), dtype=np.float32)
    return emb


def write_embedding(path: str, n: int, dim: int, seed: int, clusters: int = 64, latent: int = 16, noise: float = 0.05, chunk: int = 1 << 20) -> np.ndarray:
    """The same mixture as :func:`make_embedding` (other random draws), written chunk by chunk into a
    float32 ``.npy`` at ``path`` and returned as a read-only memory map: a 10M x 128 pool (5 GB) never
    sits in memory, as a real pool's embedding stored beside its patches would not."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    bases = rng.standard_normal((clusters, latent, dim), dtype=np.float32) * np.float32(0.5 / np.sqrt(latent))
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    for r0 in range(0, n, chunk):
        m = min(chunk, n - r0)
        assign = rng.integers(clusters, size=m)
        z = rng.standard_normal((m, latent), dtype=np.float32)
        block = centres[assign] + np.einsum("ml,mld->md", z, bases[assign], optimize=True)
        block += noise * rng.standard_normal((m, dim), dtype=np.float32)
        out[r0 : r0 + m] = block
    out.flush()
    del out
    return np.load(path, mmap_mode="r")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="pool size")
    ap.add_argument("--dim", type=int, default=128, help="embedding dimension")
    ap.add_argument("--acquisition", default="typiclust", help="registered strategy name, or 'none' to time only the typicality pass")
    ap.add_argument("--batch", type=int, default=100, help="batch size")
    ap.add_argument("--queried-share", type=float, default=0.01, help="share of the pool already queried")
    ap.add_argument("--repeats", type=int, default=1, help="selection rounds (in-process memos kept between them)")
    ap.add_argument("--typicality-k", type=int, default=20)
    ap.add_argument("--knn-method", default="auto", help="knn method of the typicality pass: auto | exact | ivf | hnsw")
    ap.add_argument(
        "--typicality", default="knn", choices=("knn", "stream", "given"),
        help="knn: run and time the typicality pass (k neighbours); stream: the data stream's pass as a run"
        " does it (50 neighbours from 50,000 items on, handed to the acquisition in PoolView.extras); given: draw"
        " typicality U(0, 1) (the pass is a one-off per embedding; use for selection-only timings at 10M)",
    )
    ap.add_argument(
        "--embedding-file", default=None,
        help="write the synthetic embedding to this .npy and memory-map it (pools too big for RAM); deleted at the end",
    )
    ap.add_argument(
        "--check-typicality", type=int, default=0, metavar="Q",
        help="after the timed pass: exact typicality of Q sampled items, Spearman against the pass's (not timed)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE",
        help="a parameter of the strategy (YAML value), as in conf/acquisition/*.yaml; repeatable. Without it the"
        " function's own defaults run (for dualstream: the first formula, dualstream_v1)",
    )
    ap.add_argument("--json", action="store_true", help="print the result as one JSON line at the end")
    ap.add_argument("--verbose", action="store_true", help="INFO logs (index builds, recall)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")

    import torch

    from dualstream.acquisition import PoolView, acquire
    from dualstream.streams import knn as knn_mod
    from dualstream.streams.typicality import knn_typicality

    import yaml

    params = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            ap.error(f"--param {item!r}: expected KEY=VALUE, e.g. --param screen_embedding=true")
        params[key] = yaml.safe_load(value)
    rng = np.random.default_rng(args.seed)
    if args.embedding_file:
        emb = write_embedding(args.embedding_file, args.n, args.dim, args.seed)
    else:
        emb = make_embedding(args.n, args.dim, args.seed)
    n = args.n
    queried = np.zeros(n, dtype=bool)
    queried[rng.choice(n, size=int(args.queried_share * n), replace=False)] = True
    extras = {"margin": rng.random(n), "least_confidence": rng.random(n), "bald": rng.random(n)}
    from dualstream.streams.pixel_stats import STAT_NAMES

    # Positive, log-normal pixel statistics: the pixel screen (screen_z, pixel_veto) has something to read.
    extras["pixel_stats"] = rng.lognormal(0.0, 0.3, (n, len(STAT_NAMES))).astype(np.float32)

    with Phase() as typ_phase:
        lists = None
        if args.typicality == "knn":
            typicality = knn_typicality(emb, args.typicality_k, method=args.knn_method)
        elif args.typicality == "stream":
            from dualstream.streams.data_stream import typicality_and_neighbours

            typicality, lists = typicality_and_neighbours(emb, args.typicality_k)
        else:
            typicality = rng.random(n)
    knn_info = dict(knn_mod.LAST_RUN) if args.typicality != "given" else {"method": "given (not timed)"}
    if lists is not None:
        extras.update(zip(knn_mod.NEIGHBOUR_KEYS, lists))
    view = PoolView(emb, typicality, rng.random(n), queried, extras)

    result = {
        "n": n,
        "dim": args.dim,
        "batch": args.batch,
        "queried": int(queried.sum()),
        "acquisition": args.acquisition,
        "params": params,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "faiss": knn_mod.have_faiss(),
        "typicality": {
            "seconds": round(typ_phase.seconds, 3),
            "cpu_seconds": round(typ_phase.cpu_seconds, 3),
            "peak_extra_mib": round(typ_phase.peak_mib, 1),
            "knn": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in knn_info.items()},
        },
        "memory_source": typ_phase.source,
        "selection": [],
    }
    if args.acquisition != "none":
        for r in range(args.repeats):
            with Phase() as sel_phase:
                sel = acquire(args.acquisition, view, args.batch, np.random.default_rng(args.seed + r), **params)
            assert len(sel.indices) == args.batch
            result["selection"].append(
                {
                    "seconds": round(sel_phase.seconds, 3),
                    "cpu_seconds": round(sel_phase.cpu_seconds, 3),
                    "peak_extra_mib": round(sel_phase.peak_mib, 1),
                    "peak_process_mib": round(sel_phase.peak_total_mib, 1),
                }
            )
    if args.check_typicality and args.typicality != "given":
        import scipy.stats

        rows = np.sort(np.random.default_rng(args.seed + 1).choice(n, size=min(args.check_typicality, n), replace=False))
        exact_dist, _ = knn_mod._exact_rows(np.ascontiguousarray(emb, dtype=np.float32), rows, args.typicality_k)
        exact_typ = 1.0 / (exact_dist.astype(np.float64).mean(axis=1) + 1e-8)
        result["typicality"]["spearman_vs_exact"] = round(float(scipy.stats.spearmanr(typicality[rows], exact_typ).statistic), 4)
        result["typicality"]["spearman_sample"] = len(rows)
    result["embedding"] = "memory-mapped .npy" if args.embedding_file else "in memory"
    if args.embedding_file:
        del view, emb
        os.remove(args.embedding_file)
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
