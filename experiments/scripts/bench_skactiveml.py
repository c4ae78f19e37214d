#!/usr/bin/env python
"""scikit-activeml's TypiClust and ProbCover on the synthetic pools of ``bench_selection.py``.

    pip install -e ".[bench]"   # scikit-activeml: not a dependency of dualstream, only this comparison needs it
    python experiments/scripts/bench_skactiveml.py --n 100000 --strategy typiclust --json

One selection of ``--batch`` items with the library's defaults (as a user would call it:
``TypiClust(k=20)``, k-means from scikit-learn with one cluster per labelled-or-queried item;
``ProbCover()`` with its default radius search), ``--queried-share`` of the pool labelled, in a
child process with a wall-clock limit (``--timeout``) and an address-space cap (``--max-gib``),
so that an ``N x N`` distance matrix fails fast instead of swapping the machine. Prints seconds
and peak resident memory (``ru_maxrss`` of the child), or why it did not finish, as JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_selection import make_embedding  # noqa: E402  (same pools as dualstream's benchmark)


def _child(args: argparse.Namespace, out: mp.Queue) -> None:
    cap = int(args.max_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    try:
        from skactiveml.pool import ProbCover, TypiClust

        rng = np.random.default_rng(args.seed)
        x = make_embedding(args.n, args.dim, args.seed)
        y = np.full(args.n, np.nan)
        y[rng.choice(args.n, size=int(args.queried_share * args.n), replace=False)] = 0
        qs = TypiClust(k=20, random_state=args.seed) if args.strategy == "typiclust" else ProbCover(random_state=args.seed)
        t0, c0 = time.perf_counter(), time.process_time()
        idx = qs.query(x, y, batch_size=args.batch)
        out.put({"status": "ok", "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0, "picked": len(idx)})
    except MemoryError:
        out.put({"status": f"MemoryError under the {args.max_gib} GiB cap"})
    except Exception as exc:  # report, do not hide: the figure is 'did not run' and why
        out.put({"status": f"{type(exc).__name__}: {str(exc)[:200]}"})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--strategy", choices=("typiclust", "probcover"), default="typiclust")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--queried-share", type=float, default=0.01)
    ap.add_argument("--timeout", type=float, default=600.0, help="wall seconds before the child is stopped")
    ap.add_argument("--max-gib", type=float, default=8.0, help="address-space cap of the child")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    import skactiveml

    queue: mp.Queue = mp.get_context("fork").Queue()
    child = mp.get_context("fork").Process(target=_child, args=(args, queue))
    t0 = time.perf_counter()
    child.start()
    child.join(args.timeout)
    result = {"n": args.n, "dim": args.dim, "strategy": args.strategy, "batch": args.batch, "library": f"scikit-activeml {skactiveml.__version__}"}
    if child.is_alive():
        child.kill()
        child.join()
        result["status"] = f"not finished in {args.timeout:.0f} s (stopped)"
    else:
        result.update(queue.get() if not queue.empty() else {"status": f"child exited with code {child.exitcode}"})
    result["wall_seconds_incl_setup"] = round(time.perf_counter() - t0, 1)
    result["peak_child_mib"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
