#!/usr/bin/env python
"""Time every registered acquisition strategy on a random pool and report a markdown table.

    python experiments/scripts/bench_acquisition.py --n 100000 --dim 128 --batch 100 --repeat 3

The pool: ``N x dim`` L2-normalised Gaussian embedding (float32), kNN typicality stand-in
(random positive), uncertainty, all extras (``margin``, ``least_confidence``, ``bald`` ``(N,)``;
``task_embedding``, ``grad_embedding`` ``(N, dim)``) and 1% of the items already queried.

Each strategy runs in a forked child process (so one strategy's freed memory cannot hide
another's peak): seconds = median wall time over ``--repeat`` runs; peak extra memory = the
child's peak resident set size during the runs minus its resident size before them (Linux
``/proc/self/clear_refs`` + ``VmHWM``; falls back to the ``ru_maxrss`` delta elsewhere).
Both count numpy and torch allocations, unlike tracemalloc.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time

import numpy as np
from peak_memory import peak_kib, reset_peak, rss_kib  # beside this script


def make_view(n: int, dim: int, queried_share: float, seed: int):
    from dualstream.acquisition import PoolView

    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, dim), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    queried = np.zeros(n, dtype=bool)
    queried[rng.choice(n, size=int(queried_share * n), replace=False)] = True
    extras = {
        "margin": rng.random(n),
        "least_confidence": rng.random(n),
        "bald": rng.random(n),
        "task_embedding": rng.standard_normal((n, dim), dtype=np.float32),
        "grad_embedding": rng.standard_normal((n, dim), dtype=np.float32),
    }
    return PoolView(emb, rng.random(n) + 0.5, rng.random(n), queried, extras)


def _child(name: str, view, batch: int, repeat: int, conn) -> None:
    from dualstream.acquisition import acquire

    try:
        exact = reset_peak()
        base_rss = rss_kib(exact)
        times = []
        for r in range(repeat):
            t0 = time.perf_counter()
            acquire(name, view, batch, np.random.default_rng(r))
            times.append(time.perf_counter() - t0)
        peak = peak_kib(exact)
        conn.send((statistics.median(times), max(0, peak - base_rss) / 1024, None))
    except Exception as exc:  # report, keep benchmarking the others
        conn.send((float("nan"), float("nan"), f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="pool size")
    ap.add_argument("--dim", type=int, default=128, help="embedding / extras dimension")
    ap.add_argument("--batch", type=int, default=100, help="batch size")
    ap.add_argument("--repeat", type=int, default=3, help="runs per strategy (median reported)")
    ap.add_argument("--queried", type=float, default=0.01, help="share of the pool already queried")
    ap.add_argument("--only", nargs="*", default=None, help="strategy names (default: all registered)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from dualstream.acquisition import REGISTRY

    import torch

    view = make_view(args.n, args.dim, args.queried, args.seed)
    names = args.only or sorted(REGISTRY)
    ctx = mp.get_context("fork")
    print(
        f"# acquisition benchmark: N={args.n}, dim={args.dim}, batch={args.batch}, repeat={args.repeat}, "
        f"queried={args.queried:.0%}; {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
        f"python {platform.python_version()}\n"
    )
    print("| strategy | seconds (median) | peak extra memory (MiB) |")
    print("|---|---:|---:|")
    for name in names:
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(name, view, args.batch, args.repeat, send))
        proc.start()
        send.close()
        seconds, mib, err = recv.recv()
        proc.join()
        if err:
            print(f"| {name} | failed: {err} | |")
        else:
            print(f"| {name} | {seconds:.3f} | {mib:.0f} |")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
