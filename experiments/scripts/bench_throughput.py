#!/usr/bin/env python
"""Encoder and U-Net inference throughput next to the same run's float32 matmul peak (issue 13 item 3).

    python experiments/scripts/bench_throughput.py --json
    python experiments/scripts/bench_throughput.py --variants baseline,fold_cl --rounds 7 --layers
    python experiments/scripts/bench_throughput.py --compile          # adds torch.compile (minutes)

In one process, on the run's thread count (torch's default, or ``--threads``):

* **matmul peak**: float32 ``N x N @ N x N`` (``N`` picked once at start as the best of 1024/2048/3072,
  the size that saturates here), GFLOP/s = ``2 N^3 / s``; measured again in every round.
* **encoder**: the SimCLR encoder as ``dualstream.streams.data_stream.build_encoder`` builds it from
  the default ``conf/encoder`` config, its ``predict_step`` (backbone + L2 normalisation).
* **U-Net**: ``SegmentationModule`` with the default ``conf/model`` module config, its ``predict_step``
  (logits, bottleneck pooled, BADGE gradient embedding).

Both with random weights (throughput does not depend on them) on ``--patch`` x ``--patch`` patches.
FLOPs per patch come from ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, transposed
convolutions and matmuls; BatchNorm, ReLU, pooling are not counted, they are memory-bound work).

Variants (``--variants``, comma-separated; ``baseline`` is what ``embed`` / the task stream do today):

* ``lightning``: today's path end to end, ``Trainer.predict`` over a ``DataLoader`` (256 a batch).
* ``embed`` / ``embed_fast`` (encoder only): ``dualstream.streams.data_stream.embed`` on ``2 * batch``
  patches as wired, with the default ``trainer`` keys / with ``channels_last`` and ``fuse_batchnorm`` on.
* ``baseline``: the same forward under ``torch.no_grad`` (eager, NCHW, batch 256), no Lightning.
* ``inference_mode``, ``channels_last`` (``trainer.channels_last``), ``fold_bn`` (BatchNorm folded into
  the convs and ReLU moved after max-pool: ``trainer.fuse_batchnorm``), ``fold_cl`` (both), ``fold_cl_b64`` / ``fold_cl_b1024`` (other batch sizes), ``fold_cl_bf16`` (bf16 autocast:
  emulated without avx512_bf16/AMX), ``fold_cl_t1`` (one thread: its % is against a 1-thread matmul),
  ``jit`` (``torch.jit.trace`` + ``freeze`` + ``optimize_for_inference``: oneDNN conv+ReLU fusion),
  ``compile`` (``torch.compile``, inductor with frozen weights, channels-last, folded; only with
  ``--compile``; compile seconds reported apart).

Rounds: every round measures the matmul, then every variant in a rotated order (so no variant always
runs first or last); each variant's GFLOP/s is divided by its round's matmul GFLOP/s. Reported:
medians over ``--rounds`` of GFLOP/s, %% of matmul, patches/s, and minutes to embed 1 gigavoxel
(``1e9 / patch^2`` patches, 244,141 at 64x64: one pass, each voxel in one patch, no overlap).
``--layers`` adds where the time goes: profiler self-time by op kind, and every conv layer timed alone
with its FLOPs and %% of matmul. Other processes on the same cores move absolute numbers (that is
why everything is a ratio within one run); the report records the load average.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dualstream.models.segmentation import SegmentationModule  # noqa: E402
from dualstream.streams.data_stream import build_encoder  # noqa: E402
from dualstream.trainer import InferenceOptions, prepare_network  # noqa: E402

ALL_VARIANTS = (
    "lightning", "embed", "embed_fast", "baseline", "inference_mode", "channels_last", "fold_bn", "fold_cl",
    "fold_cl_b64", "fold_cl_b1024", "fold_cl_bf16", "fold_cl_t1", "jit", "compile",
)
DEFAULT_VARIANTS = tuple(v for v in ALL_VARIANTS if v not in ("compile", "embed", "embed_fast"))


def timed(fn: Callable[[], Any], min_seconds: float, max_reps: int = 50, warmup: bool = True, min_reps: int = 3) -> float:
    """Median seconds of one ``fn()`` call over at least ``min_reps`` repeats filling about ``min_seconds``."""
    if warmup:
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < min_seconds and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_gflops(n: int, min_seconds: float) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / timed(lambda: a @ b, min_seconds) / 1e9


def pick_matmul_size(min_seconds: float) -> tuple[int, dict[int, float]]:
    rates = {n: matmul_gflops(n, min_seconds) for n in (1024, 2048, 3072)}
    return max(rates, key=rates.get), rates  # type: ignore[arg-type]


def load_yaml(path: Path) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)  # type: ignore[return-value]


def build_models(patch: int) -> dict[str, nn.Module]:
    """The default encoder and U-Net, eval mode, BatchNorm statistics perturbed so folding is not trivial."""
    enc_cfg = load_yaml(ROOT / "conf/encoder/simclr.yaml")
    enc_cfg.pop("seed", None)
    model_cfg = load_yaml(ROOT / "conf/model/unet.yaml")
    torch.manual_seed(0)
    encoder = build_encoder(np.zeros((1, patch, patch), np.float32), enc_cfg)
    unet = SegmentationModule(**model_cfg["module"])
    for m in (encoder, unet):
        for bn in m.modules():
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                bn.running_mean.uniform_(-0.1, 0.1)
                bn.running_var.uniform_(0.5, 2.0)
        m.eval()
    return {"encoder": encoder, "unet": unet}


def flops_per_patch(module: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module.predict_step((x,), 0)
    return counter.get_total_flops() / len(x)


class JitView(nn.Module):
    """``torch.jit`` frozen + optimised copy of a network child, called like the original."""

    def __init__(self, net: nn.Module, example: torch.Tensor, attr: str):
        super().__init__()
        fn = net.forward_features if attr == "net" else net.forward

        class Wrap(nn.Module):
            def __init__(self, inner: nn.Module):
                super().__init__()
                self.inner = inner

            def forward(self, x: torch.Tensor):
                return fn(x)

        with torch.no_grad():
            traced = torch.jit.trace(Wrap(net).eval(), example, check_trace=False)
        self.scripted = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
        self.dropout = getattr(net, "dropout", None)  # predict_step touches it for MC dropout

    def forward_features(self, x: torch.Tensor):
        return self.scripted(x)

    def forward(self, x: torch.Tensor):
        out = self.scripted(x)
        return out[0] if isinstance(out, tuple) else out


def lightning_runner(module: nn.Module, x: torch.Tensor, n_batches: int) -> Callable[[], Any]:
    """Today's predict path: a fresh quiet Trainer, ``trainer.predict`` over a DataLoader of 256."""
    from torch.utils.data import DataLoader, TensorDataset

    from dualstream.trainer import build_trainer

    data = TensorDataset(x.repeat(n_batches, 1, 1, 1))

    def run() -> Any:
        trainer = build_trainer({"accelerator": "cpu"}, 1)
        return trainer.predict(module, dataloaders=DataLoader(data, batch_size=len(x)), return_predictions=True)

    return run


def make_variant(name: str, module: nn.Module, kind: str, patch: int, batch: int) -> tuple[Callable[[], Any], int, dict[str, Any]]:
    """``(run, patches per call, info)`` for one variant; ``run`` is one timed call."""
    info: dict[str, Any] = {}
    b = {"fold_cl_b64": 64, "fold_cl_b1024": 1024}.get(name, batch)
    x = torch.randn(b, 1, patch, patch)
    if name == "lightning":
        return lightning_runner(module, x, 1), b, info
    if name in ("embed", "embed_fast"):
        if kind != "encoder":
            raise SystemExit(f"variant {name} is the encoder's data_stream.embed; run it with --models encoder")
        from dualstream.streams.data_stream import embed

        images = np.random.default_rng(0).random((2 * b, patch, patch), dtype=np.float32)
        cfg = {"accelerator": "cpu", "predict_batch_size": b}
        if name == "embed_fast":
            cfg.update(channels_last=True, fuse_batchnorm=True)
        return (lambda: embed(module, images, cfg)), 2 * b, info
    attr = "backbone" if kind == "encoder" else "net"
    ctx = torch.inference_mode if name != "baseline" else torch.no_grad
    target = module
    if name == "jit":
        target = copy.copy(module)  # a shallow copy holds the swapped child; the original keeps its own
        target._modules = dict(module._modules)
        net = getattr(module, attr)
        with torch.no_grad():
            target._modules[attr] = JitView(net, x, attr)
    elif name == "compile":
        options = InferenceOptions(channels_last=True, fuse_batchnorm=True, compile=True)
        target = copy.copy(module)
        target._modules = dict(module._modules)

        target._modules[attr] = prepare_network(getattr(module, attr), options)
        t0 = time.perf_counter()
        with torch.inference_mode():
            target.predict_step((x,), 0)
        info["compile_seconds"] = round(time.perf_counter() - t0, 1)
    elif name != "baseline" and name != "inference_mode":
        options = InferenceOptions(channels_last=name != "fold_bn", fuse_batchnorm=name != "channels_last")
        target = copy.copy(module)
        target._modules = dict(module._modules)

        target._modules[attr] = prepare_network(getattr(module, attr), options)

    def run() -> Any:
        with ctx():
            if name == "fold_cl_bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return target.predict_step((x,), 0)
            return target.predict_step((x,), 0)

    return run, b, info


def op_kind(name: str) -> str:
    if "conv" in name or "_convolution" in name:
        return "convolution"
    for key, kind in (("batch_norm", "batchnorm"), ("clamp", "relu"), ("relu", "relu"), ("pool", "pooling"),
                      ("cat", "concatenate"), ("mm", "matmul"), ("copy", "copy/layout"), ("contiguous", "copy/layout")):
        if key in name:
            return kind
    return "other (elementwise, reductions)"


def layer_picture(module: nn.Module, kind: str, patch: int, batch: int, matmul_size: int, min_seconds: float, prepared: bool) -> dict[str, Any]:
    """Profiler self time by op kind, and every conv layer alone: FLOPs share, GFLOP/s, % of a ``matmul_size`` matmul."""
    from torch.profiler import ProfilerActivity, profile

    attr = "backbone" if kind == "encoder" else "net"
    net = getattr(module, attr)
    if prepared:

        net = prepare_network(net, InferenceOptions(channels_last=True, fuse_batchnorm=True))
    x = torch.randn(batch, 1, patch, patch)
    call = (lambda: net.forward_features(x)) if attr == "net" else (lambda: net(x))
    with torch.inference_mode():
        call()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(2):
                call()
    buckets: dict[str, float] = {}
    for ev in prof.key_averages():
        if ev.key.startswith("aten::") or ev.key.startswith("mkldnn"):
            buckets[op_kind(ev.key)] = buckets.get(op_kind(ev.key), 0.0) + ev.self_cpu_time_total
    total = sum(buckets.values()) or 1.0
    by_kind = {k: round(100 * v / total, 1) for k, v in sorted(buckets.items(), key=lambda kv: -kv[1])}

    inputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, a, o, n=n: inputs.__setitem__(n, a[0].detach().clone()))
             for n, m in net.named_modules() if isinstance(m, nn.modules.conv._ConvNd)]
    with torch.inference_mode():
        call()
    for h in hooks:
        h.remove()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        call()
    net_flops = counter.get_total_flops()
    layers = []
    mods = dict(net.named_modules())
    # the load moves between the rounds and this block: the layers are compared with a matmul measured
    # right before and right after them (the mean of the two), not with the rounds' median
    gemm_before = matmul_gflops(matmul_size, min_seconds)
    for n, inp in inputs.items():
        m = mods[n]
        with torch.no_grad(), FlopCounterMode(display=False) as c:
            m(inp)
        fl = c.get_total_flops()
        with torch.inference_mode():
            dt = timed(lambda: m(inp), min_seconds / 4, max_reps=20)
        layers.append({
            "layer": n, "in": list(inp.shape[1:]), "out_channels": m.out_channels, "kernel": list(m.kernel_size),
            "flops_share_pct": round(100 * fl / net_flops, 1), "gflops": round(fl / dt / 1e9, 2),
            "ms_per_batch": round(1000 * dt, 1),
        })
    ref = (gemm_before + matmul_gflops(matmul_size, min_seconds)) / 2
    for layer in layers:
        layer["pct_of_matmul"] = round(100 * layer["gflops"] / ref, 1)
    return {"self_time_pct_by_op": by_kind, "conv_layers": layers, "layers_prepared": prepared, "matmul_gflops": round(ref, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    ap.add_argument("--batch", type=int, default=256, help="patches per batch (today's predict batch: 256)")
    ap.add_argument("--patch", type=int, default=64, help="patch side in pixels")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=0.6, help="time spent per measurement")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"from {','.join(ALL_VARIANTS)}")
    ap.add_argument("--models", default="encoder,unet")
    ap.add_argument("--compile", action="store_true", help="add the torch.compile variant (compiles for minutes)")
    ap.add_argument("--layers", action="store_true", help="add the per-op and per-conv-layer picture")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    variants = [v for v in args.variants.split(",") if v]
    if args.compile and "compile" not in variants:
        variants.append("compile")
    bad = [v for v in variants if v not in ALL_VARIANTS]
    if bad:
        ap.error(f"unknown variants {bad}; choose from {', '.join(ALL_VARIANTS)}")
    if "compile" in variants and shutil.which("c++") is None and shutil.which("g++") is None:
        print("no C++ compiler on PATH: the compile variant is skipped", file=sys.stderr)
        variants.remove("compile")

    load0 = os.getloadavg()
    size, size_rates = pick_matmul_size(args.min_seconds)
    models = build_models(args.patch)
    kinds = [m for m in args.models.split(",") if m]
    flops = {k: flops_per_patch(models[k], torch.randn(4, 1, args.patch, args.patch)) for k in kinds}
    print(f"matmul size {size} (GFLOP/s by size: { {n: round(r, 1) for n, r in size_rates.items()} }); "
          f"threads {threads}; FLOPs per patch: { {k: round(v / 1e6, 1) for k, v in flops.items()} } M", file=sys.stderr)

    runners: dict[tuple[str, str], tuple[Callable[[], Any], int]] = {}
    info: dict[str, dict[str, Any]] = {}
    for k in kinds:
        for v in variants:
            t0 = time.perf_counter()
            run, n, extra = make_variant(v, models[k], k, args.patch, args.batch)
            with torch.inference_mode():
                run()  # warm-up (oneDNN primitive caches, lazy inits); timed rounds then skip it
            runners[(k, v)] = (run, n)
            if extra:
                info[f"{k}/{v}"] = extra
            print(f"  set up {k}/{v} in {time.perf_counter() - t0:.1f}s {extra or ''}", file=sys.stderr)

    samples: dict[tuple[str, str], list[tuple[float, float]]] = {key: [] for key in runners}
    gemms: list[float] = []
    gemm_t1: list[float] = []
    keys = list(runners)
    for r in range(args.rounds):
        gemm = matmul_gflops(size, args.min_seconds)
        gemms.append(gemm)
        if any(v == "fold_cl_t1" for _, v in keys):
            torch.set_num_threads(1)
            gemm_t1.append(matmul_gflops(size, args.min_seconds))
            torch.set_num_threads(threads)
        order = keys[r % len(keys):] + keys[: r % len(keys)]
        for key in order:
            run, n = runners[key]
            if key[1] == "fold_cl_t1":
                torch.set_num_threads(1)
            try:
                dt = timed(run, args.min_seconds, max_reps=20, warmup=False, min_reps=2)
            finally:
                torch.set_num_threads(threads)
            ref = gemm_t1[-1] if key[1] == "fold_cl_t1" else gemm
            samples[key].append((n / dt, flops[key[0]] * n / dt / 1e9 / ref))
        print(f"round {r + 1}/{args.rounds}: matmul {gemm:.1f} GFLOP/s", file=sys.stderr)

    patches_per_gvox = 1e9 / args.patch**2
    rows = []
    for (k, v), vals in samples.items():
        pps = statistics.median(p for p, _ in vals)
        frac = statistics.median(f for _, f in vals)
        rows.append({
            "model": k, "variant": v, "patches_per_s": round(pps, 1), "gflops": round(pps * flops[k] / 1e9, 2),
            "pct_of_matmul": round(100 * frac, 1), "minutes_per_gigavoxel": round(patches_per_gvox / pps / 60, 1),
            "pct_of_matmul_range": [round(100 * min(f for _, f in vals), 1), round(100 * max(f for _, f in vals), 1)],
        })
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
                   f"capability {torch.backends.cpu.get_cpu_capability()}",
        "threads": threads, "batch": args.batch, "patch": args.patch, "rounds": args.rounds,
        "loadavg_start": [round(x, 2) for x in load0], "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "matmul_size": size, "matmul_gflops_median": round(statistics.median(gemms), 1),
        "matmul_gflops_rounds": [round(g, 1) for g in gemms],
        "matmul_1thread_gflops_median": round(statistics.median(gemm_t1), 1) if gemm_t1 else None,
        "flops_per_patch_m": {k: round(v / 1e6, 2) for k, v in flops.items()},
        "patches_per_gigavoxel": round(patches_per_gvox), "rows": rows, "setup": info,
    }
    if args.layers:
        result["layers"] = {}
        for k in kinds:
            for prepared in (False, True):
                result["layers"][f"{k}/{'fold_cl' if prepared else 'baseline'}"] = layer_picture(
                    models[k], k, args.patch, args.batch, size, args.min_seconds, prepared)

    print(f"\nmatmul {result['matmul_gflops_median']} GFLOP/s (N={size}, {threads} threads), load {load0[0]:.2f}")
    print(f"{'model':8} {'variant':15} {'patch/s':>9} {'GFLOP/s':>8} {'% matmul':>9} {'min/Gvox':>9}  range of %")
    for row in rows:
        print(f"{row['model']:8} {row['variant']:15} {row['patches_per_s']:9.1f} {row['gflops']:8.2f} {row['pct_of_matmul']:9.1f} "
              f"{row['minutes_per_gigavoxel']:9.1f}  {row['pct_of_matmul_range']}")
    for name, pic in result.get("layers", {}).items():
        print(f"\n{name}: self time by op {pic['self_time_pct_by_op']}; layers vs matmul {pic['matmul_gflops']} GFLOP/s")
        for layer in pic["conv_layers"]:
            print(f"  {layer['layer']:22} in {str(layer['in']):16} -> {layer['out_channels']:4} k{layer['kernel']}: "
                  f"{layer['flops_share_pct']:5.1f}% of FLOPs, {layer['gflops']:6.2f} GFLOP/s = {layer['pct_of_matmul']:5.1f}% of matmul")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
