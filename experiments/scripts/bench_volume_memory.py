"""Peak resident memory of a disk pool (``data.pool_store=disk``) against volume size.

Writes synthetic HDF5 volumes (uint8 image, lzf-compressed 0/1 labels, square sections of
``--side`` px) of the given sizes in gigavoxels, then measures, each in a fresh Python process
(peak = ``VmHWM`` of ``/proc/self/status`` when the step ends, so every figure includes the
interpreter, numpy, torch and Lightning, reported separately as ``import``):

- ``build``: :func:`dualstream.patches.build_pools` with a store folder: the pool (75 % of the
  sections) and the test set (25 %) cut section by section into ``pool.h5`` / ``test.h5``;
- ``passes``: on the stores just built, ``--batches`` predict batches of 256 patches through an
  untrained SimCLR encoder (the embedding path, ``PoolPatchData``) and through an untrained U-Net
  with the per-batch uncertainty reduction (the pool-scoring path, ``LabeledPatchData`` +
  ``PerBatchReduction``), both reading the store lazily; a bounded number of batches, so it measures
  the per-batch working set, not a whole pass;
- ``memory_build`` (sizes <= ``--memory-max``): the same pools built in memory (float32), for comparison;
- ``run`` (sizes <= ``--run-max``): a whole tiny run (``dualstream.runner.run``: encoder training and
  embedding of the whole pool, kNN typicality, pixel statistics, ``--rounds`` rounds of task-model
  training, test scoring and whole-pool scoring, dualstream acquisition), with ``data.pool_store=disk``
  and, when ``--memory-max`` allows, ``memory``.

Prints one JSON object; the volumes and stores are deleted afterwards (``--keep`` keeps them).

    nice -n 5 .venv/bin/python experiments/scripts/bench_volume_memory.py --sizes 0.1 1 10 --work /work/bench_out/pool_store
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def vm_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return -1


def peak_mb() -> float:
    return vm_kib("VmHWM") / 1024.0


# -- synthetic volumes --------------------------------------------------------------------------------


def write_volume(path: Path, gvx: float, side: int) -> dict:
    """``(Z, side, side)`` uint8 image (a random texture tiled and shifted per section) and 0/1 labels (blocks)."""
    import h5py
    import numpy as np

    z = max(4, int(round(gvx * 1e9 / side**2)))
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (512, 512), dtype=np.uint8)
    tiled = np.tile(base, (side // 512 + 1, side // 512 + 1))
    yy, xx = np.mgrid[0:side, 0:side]
    blocks = (((yy // 48) * 7 + (xx // 48) * 3) % 9).astype(np.uint8)  # 0/1 label blocks, one in nine
    del yy, xx
    start = time.perf_counter()
    with h5py.File(path, "w") as f:
        img = f.create_dataset("image", (z, side, side), dtype=np.uint8, chunks=(1, side, side))
        lab = f.create_dataset("labels", (z, side, side), dtype=np.uint8, chunks=(1, min(side, 1024), min(side, 1024)), compression="lzf")
        for ds in (img, lab):
            ds.attrs["voxel_size"] = [40.0, 10.0, 10.0]
        for k in range(z):
            img[k] = tiled[(k * 37) % 512 : (k * 37) % 512 + side, (k * 53) % 512 : (k * 53) % 512 + side]
            lab[k] = (blocks == (9 - k % 9) % 9).astype(np.uint8)
    return {"sections": z, "side": side, "voxels": z * side * side, "seconds": round(time.perf_counter() - start, 1)}


def data_config(volume: Path, patch: int) -> dict:
    return {
        "image": f"{volume}:image", "labels": f"{volume}:labels", "label_threshold": 0, "test_image": None,
        "test_labels": None, "test_fraction": 0.25, "ignore": None, "inject_artifacts": 0.0, "voxel_size": None,
        "intensity_range": None, "downsample": 1, "patch_size": patch, "stride": None, "patch_depth": 1,
        "stride_z": None, "sections": None,
    }


# -- children (one measurement each, fresh process) -----------------------------------------------------


def child_build(args: argparse.Namespace) -> dict:
    from omegaconf import OmegaConf

    import torch  # noqa: F401  (the baseline a run has anyway)
    import pytorch_lightning  # noqa: F401
    from dualstream.patches import build_pools

    base = peak_mb()
    start = time.perf_counter()
    store = Path(args.store) if args.store else None
    pool, test = build_pools(OmegaConf.create(data_config(Path(args.volume), args.patch)), store)
    out = {"import_mb": round(base, 1), "peak_mb": round(peak_mb(), 1), "seconds": round(time.perf_counter() - start, 1),
           "pool_items": len(pool), "test_items": len(test)}
    if store is not None:
        out["store_bytes"] = sum(p.stat().st_size for p in store.glob("*.h5"))
    return out


def child_passes(args: argparse.Namespace) -> dict:
    import numpy as np
    import pytorch_lightning as pl
    import torch
    from omegaconf import OmegaConf

    from dualstream.datamodules import LabeledPatchData, PoolPatchData
    from dualstream.models.segmentation import SegmentationModule
    from dualstream.patches import open_store_pool
    from dualstream.streams.data_stream import build_encoder
    from dualstream.streams.task_stream import PerBatchReduction

    torch.set_num_threads(1)
    base = peak_mb()
    pool = open_store_pool(Path(args.store) / "pool.h5")
    test = open_store_pool(Path(args.store) / "test.h5")

    def trainer() -> pl.Trainer:
        return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                          enable_checkpointing=False, limit_predict_batches=args.batches)

    cfg = compose_config(["experiment=demo"])
    encoder = build_encoder(pool.images, OmegaConf.to_container(cfg.encoder, resolve=True)).eval()
    start = time.perf_counter()
    with torch.no_grad():
        emb = trainer().predict(encoder, datamodule=PoolPatchData(pool.images, steps=1, batch_size=1))
    n_emb = sum(len(e) for e in emb)
    embed_s, embed_peak = time.perf_counter() - start, peak_mb()
    module = SegmentationModule(**OmegaConf.to_container(cfg.model.module, resolve=True)).eval()
    data = LabeledPatchData(
        np.zeros((0, *pool.images.shape[1:]), np.float32), np.zeros((0, *pool.images.shape[1:]), np.uint8),
        test.images, test.labels, pool.images, steps=1, batch_size=1,
    )
    reduce = PerBatchReduction("entropy", "mean", 0.1)
    t = trainer()
    t.callbacks.append(reduce)
    start = time.perf_counter()
    t.predict(module, datamodule=data, return_predictions=False)
    scored = len(reduce.result()["entropy"])
    return {"import_mb": round(base, 1), "embed_items": n_emb, "embed_seconds": round(embed_s, 1), "embed_peak_mb": round(embed_peak, 1),
            "score_items": scored, "score_seconds": round(time.perf_counter() - start, 1), "peak_mb": round(peak_mb(), 1)}


def compose_config(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from dualstream.cli import CONF_DIR, _register_resolvers

    _register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def child_run(args: argparse.Namespace) -> dict:
    from dualstream.runner import run

    base = peak_mb()
    volume = Path(args.volume)
    overrides = [
        "experiment=demo", f"data.image={volume}:image", f"data.labels={volume}:labels", "data.label_threshold=0",
        f"data.patch_size={args.patch}", f"data.pool_store={args.mode}", "encoder.steps=20", "encoder.batch_size=64",
        "model.steps=20", "model.batch_size=8", "loop.initial=16", "loop.batch=16", f"loop.rounds={args.rounds}",
        "acquisition=dualstream", "logger=none", "progress=false", "trainer.cpu_threads=1", f"paths.cache_dir={args.cache}",
    ]
    cfg = compose_config(overrides)
    start = time.perf_counter()
    results = run(cfg, Path(args.cache) / f"run_{args.mode}")
    return {"import_mb": round(base, 1), "peak_mb": round(peak_mb(), 1), "seconds": round(time.perf_counter() - start, 1),
            "pool_items": results.extra.get("pool_size"), "rounds": len(results.records),
            "encoder_seconds": round(float(results.extra.get("encoder_seconds") or math.nan), 1)}


CHILDREN = {"build": child_build, "passes": child_passes, "run": child_run}


def spawn(child: str, **kwargs) -> dict:
    cmd = [sys.executable, __file__, "--child", child] + [f"--{k.replace('_', '-')}={v}" for k, v in kwargs.items() if v is not None]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}", "rc": proc.returncode,
                "wall_seconds": round(time.perf_counter() - start, 1)}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_seconds"] = round(time.perf_counter() - start, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[0.1, 1.0, 10.0], help="volume sizes in gigavoxels")
    ap.add_argument("--side", type=int, default=4096, help="section side in px")
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=40, help="predict batches of 256 in the passes step")
    ap.add_argument("--memory-max", type=float, default=0.1, help="largest size also measured in memory (GVx)")
    ap.add_argument("--run-max", type=float, default=0.1, help="largest size with a whole tiny run (GVx)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--work", default=str(ROOT.parent / "bench_out" / "pool_store"))
    ap.add_argument("--keep", action="store_true")
    # child-only
    ap.add_argument("--child", choices=sorted(CHILDREN))
    ap.add_argument("--volume")
    ap.add_argument("--store")
    ap.add_argument("--cache")
    ap.add_argument("--mode", default="disk")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    report = {"command": " ".join(sys.argv), "side": args.side, "patch": args.patch, "batches": args.batches, "sizes": {}}
    for gvx in args.sizes:
        entry: dict = {}
        report["sizes"][str(gvx)] = entry
        volume = work / f"volume_{gvx:g}.h5"
        store = work / f"store_{gvx:g}"
        try:
            entry["volume"] = write_volume(volume, gvx, args.side)
            entry["volume"]["file_bytes"] = volume.stat().st_size
            entry["build_disk"] = spawn("build", volume=volume, store=store, patch=args.patch)
            entry["passes_disk"] = spawn("passes", store=store, batches=args.batches)
            if gvx <= args.memory_max:
                entry["build_memory"] = spawn("build", volume=volume, patch=args.patch)
            if gvx <= args.run_max:
                for mode in ("disk", "memory") if gvx <= args.memory_max else ("disk",):
                    cache = work / f"cache_{gvx:g}_{mode}"
                    entry[f"run_{mode}"] = spawn("run", volume=volume, cache=cache, mode=mode, patch=args.patch, rounds=args.rounds)
        finally:
            if not args.keep:
                volume.unlink(missing_ok=True)
                shutil.rmtree(store, ignore_errors=True)
                for cache in work.glob(f"cache_{gvx:g}_*"):
                    shutil.rmtree(cache, ignore_errors=True)
        print(json.dumps({str(gvx): entry}), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "offline")
    main()
