"""Peak memory of one round's pool scoring: reduced batch by batch vs all probabilities at once (issue 13).

    python experiments/scripts/bench_pool_memory.py --n 20000 --mode batched --json
    python experiments/scripts/bench_pool_memory.py --n 20000 --mode whole --json

``batched`` is what the task stream does (:class:`dualstream.streams.task_stream.PerBatchReduction`);
``whole`` concatenates the pool's ``(N, T, P, P)`` probabilities first and reduces them after (the
code before it). A synthetic pool of ``N`` random 64 x 64 patches, a U-Net of width 8 trained for one
step; prints seconds and the peak extra resident memory of the scoring pass (JSON, last line).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_memory import peak_kib, reset_peak, rss_kib  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--mc-samples", type=int, default=1)
    parser.add_argument("--mode", choices=("batched", "whole"), default="batched")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from dualstream.streams.task_stream import TaskStream
    from dualstream.streams.uncertainty import patch_uncertainty

    rng = np.random.default_rng(0)
    pool = rng.random((args.n, args.patch, args.patch), dtype=np.float32)
    masks = (pool[:16] > 0.7).astype(np.uint8)
    model = {"steps": 1, "batch_size": 8, "module": {"width": 8, "depth": 3, "mc_samples": args.mc_samples},
             "uncertainty": {"measure": "entropy", "reduction": "mean"}}
    stream = TaskStream(model, {"accelerator": "cpu", "devices": 1, "precision": "32-true"}, pool, pool[:8], masks[:8])
    stream.fit(pool[:16], masks, seed=0)
    exact = reset_peak()
    before = rss_kib(exact)
    t0 = time.perf_counter()
    if args.mode == "batched":
        u = stream.pool_uncertainty()
    else:
        u = patch_uncertainty(stream.pool_probabilities(), "entropy", "mean")
    seconds = time.perf_counter() - t0
    extra_mib = (peak_kib(exact) - before) / 1024
    out = {"mode": args.mode, "n": args.n, "patch": args.patch, "mc_samples": args.mc_samples, "seconds": round(seconds, 2),
           "peak_extra_mib": round(extra_mib, 1), "kib_per_patch": round(extra_mib * 1024 / args.n, 1),
           "pool_mib": round(pool.nbytes / 2**20, 1), "finite": bool(np.isfinite(u).all())}
    print(json.dumps(out) if args.json else out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
