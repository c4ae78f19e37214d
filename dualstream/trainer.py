"""Lightning Trainers built from the ``trainer`` config group (``trainer=cpu|gpu``)."""

from __future__ import annotations

import copy
import difflib
import logging
import os
import shutil
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import pytorch_lightning as pl
import torch
from torch import nn
from pytorch_lightning.plugins.environments import LightningEnvironment
from pytorch_lightning.strategies import DDPStrategy, StrategyRegistry

from dualstream.errors import ConfigError

# Trainers are built every round; their banner ("GPU available: ...") would bury the loop's own log.
for _name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*Trying to infer the `batch_size`.*")
warnings.filterwarnings("ignore", ".*treespec, LeafSpec.*")

log = logging.getLogger(__name__)

#: Whether long fits that ask for it (the encoder) show their progress; the CLI sets it from ``progress``.
_SHOW_PROGRESS = False


def set_progress(enabled: bool) -> None:
    """Show (or hide) the progress of the fits built with ``build_trainer(..., progress=...)``."""
    global _SHOW_PROGRESS
    _SHOW_PROGRESS = bool(enabled)


class StepProgress(pl.Callback):
    """Steps done / total of one fit: a tqdm bar on a terminal, else a log line every 10% with the ETA.

    Lightning's own bar is per epoch and shows validation bars too; this one counts optimiser steps,
    which is what ``encoder.steps`` sets.
    """

    def __init__(self, desc: str, total: int):
        self.desc, self.total = desc, max(1, int(total))
        self.bar: Any = None
        self.start = 0.0
        self.next_report = 0

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.start = time.perf_counter()
        self.next_report = max(1, self.total // 10)
        if sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc=self.desc, unit="step", leave=False)
        else:
            log.info("%s: training %d steps", self.desc, self.total)

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        done = int(trainer.global_step)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
        elif done >= self.next_report or done == self.total:
            elapsed = time.perf_counter() - self.start
            eta = elapsed / max(done, 1) * (self.total - done)
            log.info("%s: step %d/%d (%d%%), %.0fs elapsed, eta %.0fs", self.desc, done, self.total, 100 * done // self.total, elapsed, eta)
            self.next_report = done + max(1, self.total // 10)

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        log.info("%s: %d steps in %.1fs", self.desc, int(trainer.global_step), time.perf_counter() - self.start)


def apply_cpu_threads(trainer_cfg: Mapping[str, Any]) -> None:
    """``torch.set_num_threads(trainer.cpu_threads)`` when set (null keeps torch's default).

    Float reductions depend on the thread count, so a detector or encoder trained with another count
    is a different model: anything that trains outside :func:`dualstream.runner.run` must call this too
    to rebuild the run's models.
    """
    if trainer_cfg.get("cpu_threads"):
        torch.set_num_threads(int(trainer_cfg["cpu_threads"]))


def known_strategies() -> list[str]:
    """``trainer.strategy`` names Lightning knows (its registry, plus ``auto``)."""
    return ["auto", *sorted(StrategyRegistry.available_strategies())]


def check_strategy(name: str, processes: int) -> None:
    """Raise a one-line :class:`ConfigError` for a ``trainer.strategy`` the encoder cannot train with.

    Unknown names fail; with ``processes > 1`` only the DDP family does (FSDP and DeepSpeed shard a
    model far larger than the encoder, and would re-run the whole program in every process).
    """
    if name not in known_strategies():
        close = difflib.get_close_matches(name, known_strategies(), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"trainer.strategy: Lightning knows no strategy {name!r}{hint}; use auto, ddp (GPUs) or ddp_spawn (CPUs)")
    if processes > 1 and name != "auto" and StrategyRegistry[name]["strategy"] is not DDPStrategy:
        raise ConfigError(
            f"trainer.strategy={name}: the encoder trains on {processes} devices with the DDP strategies only;"
            " use trainer.strategy=ddp (GPU) or ddp_spawn (CPU), or trainer.devices=1"
        )


def available_devices(accelerator: str) -> int:
    """How many devices ``accelerator`` offers here: CUDA GPUs, or usable CPU cores (``cpu``)."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.cuda.device_count()
    if accelerator == "mps":
        return 1
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity mask
        return os.cpu_count() or 1


def requested_processes(cfg: Mapping[str, Any]) -> int:
    """Processes a ``trainer`` config asks for: ``devices`` as an integer, list of ids, ``auto`` or ``-1``.

    Follows Lightning: ``auto`` is one CPU process or every GPU; ``-1`` is every device.
    """
    devices = cfg.get("devices", 1)
    if isinstance(devices, str) and devices.lstrip("-").isdigit():
        devices = int(devices)
    if devices in ("auto", -1):
        accelerator = str(cfg.get("accelerator", "cpu"))
        gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
        return available_devices(accelerator) if (gpu or devices == -1) else 1
    if isinstance(devices, int):
        return devices
    return len(list(devices))  # a list of device ids


def check_devices(cfg: Mapping[str, Any]) -> int:
    """The processes ``cfg`` (a ``trainer`` config) asks for; a :class:`ConfigError` when this machine lacks them."""
    accelerator = str(cfg.get("accelerator", "cpu"))
    wanted, have = requested_processes(cfg), available_devices(accelerator)
    if wanted > have:
        gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
        kind = "CUDA GPUs" if gpu else "CPU cores" if accelerator != "mps" else "Apple GPU"
        raise ConfigError(
            f"trainer.devices={cfg.get('devices')}: {wanted} devices asked, this machine has {have} {kind}"
            f" (trainer.accelerator={accelerator}); lower trainer.devices"
        )
    return wanted


def _single_device(cfg: Mapping[str, Any]) -> Any:
    """``devices`` for a one-process fit: the first listed id, else one device."""
    devices = cfg.get("devices", 1)
    if not isinstance(devices, (int, str)) and len(list(devices)) >= 1:
        return [list(devices)[0]]
    return 1


def _distributed_strategy(name: str) -> DDPStrategy:
    """The DDP strategy of ``trainer.strategy``, its processes started for the fit alone.

    Lightning's ``ddp`` (and ``auto`` on several devices) re-runs the whole script for every extra
    rank, which here would rerun the data set-up, the loop and the sweep; the encoder's fit is one step
    of a longer program, so the ranks are spawned for the fit and end with it (same DDP, NCCL on GPUs,
    gloo on CPUs). ``LightningEnvironment`` keeps a SLURM job of one task (one run per job) from being
    taken for one task per device.
    """
    params = dict(StrategyRegistry[name]["init_params"]) if name != "auto" else {}
    if params.get("start_method", "popen") == "popen":
        params["start_method"] = "spawn"
    return DDPStrategy(cluster_environment=LightningEnvironment(), **params)


def build_trainer(
    cfg: Mapping[str, Any], max_steps: int, progress: str | None = None, distributed: bool = False
) -> pl.Trainer:
    """A quiet Trainer for one fit of ``max_steps`` steps (one epoch of a fixed-steps loader).

    ``cfg`` keys: ``accelerator`` (cpu/gpu/auto), ``devices``, ``strategy``, ``precision``, ``deterministic``.
    ``progress``: a name; when given and progress is on (:func:`set_progress`), the fit reports its steps.
    ``distributed``: honour ``devices`` and ``strategy`` (the encoder's training); otherwise the fit runs
    on one device whatever they say (the task model, small and retrained every round, and every predict).
    On several devices the returned trainer does not replace the loaders' samplers: the data module
    draws each rank's share itself (see ``dualstream.streams.data_stream``).
    """
    callbacks = [StepProgress(progress, max_steps)] if progress and _SHOW_PROGRESS else []
    processes = requested_processes(cfg) if distributed else 1
    if processes > 1:
        name = str(cfg.get("strategy") or "auto")
        check_strategy(name, processes)
        devices, strategy = cfg.get("devices", 1), _distributed_strategy(name)
        devices = list(devices) if not isinstance(devices, (int, str)) else devices
    else:
        devices, strategy = _single_device(cfg), "auto"
    return pl.Trainer(
        accelerator=cfg.get("accelerator", "cpu"),
        devices=devices,
        strategy=strategy,
        use_distributed_sampler=processes <= 1,
        precision=cfg.get("precision", "32-true"),
        deterministic=cfg.get("deterministic", False),
        max_epochs=1,
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )


# --- inference options (issue 13 item 3) -------------------------------------------------------------

#: The ``trainer`` keys that change how pool inference (embedding, pool scoring) runs, with the type
#: each takes and its default. The defaults reproduce the plain predict of earlier versions bit for bit.
INFERENCE_KEYS: dict[str, tuple[type, Any]] = {
    "channels_last": (bool, False),
    "fuse_batchnorm": (bool, False),
    "compile": (bool, False),
    "predict_batch_size": (int, 256),
}


@dataclass(frozen=True)
class InferenceOptions:
    """How the pool's predict passes run (see :data:`INFERENCE_KEYS` and ``conf/trainer/cpu.yaml``).

    Attributes:
        channels_last: convolutions in NHWC memory layout (oneDNN's fast path on CPUs).
        fuse_batchnorm: fold each eval-mode BatchNorm into the preceding convolution
            (:func:`dualstream.models.networks.fold_batchnorm`; changes outputs by float rounding only)
            and apply a block's ReLU after its max-pool (:func:`~dualstream.models.networks.pool_before_relu`, exact).
        compile: ``torch.compile`` the networks (inductor, weights frozen); each prepared copy compiles
            once (~45 s for the encoder on a loaded 2-core CPU; the task stream's model is new every
            round), so it only pays on large pools; needs a C++ compiler.
        predict_batch_size: patches per predict batch.
    """

    channels_last: bool = False
    fuse_batchnorm: bool = False
    compile: bool = False
    predict_batch_size: int = 256

    @property
    def changes_model(self) -> bool:
        """Whether the networks are swapped for prepared copies during predict."""
        return self.channels_last or self.fuse_batchnorm or self.compile


def inference_options(cfg: Mapping[str, Any]) -> InferenceOptions:
    """The :class:`InferenceOptions` of a ``trainer`` config; a one-line :class:`ConfigError` for a wrong type or value."""
    values: dict[str, Any] = {}
    for key, (kind, default) in INFERENCE_KEYS.items():
        value = cfg.get(key, default)
        if value is None:
            value = default
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if not ok:
            example = "true" if kind is bool else str(default)
            raise ConfigError(f"trainer.{key}: expected {'true or false' if kind is bool else 'an integer'}, got {value!r}; e.g. trainer.{key}={example}")
        values[key] = value
    if values["predict_batch_size"] < 1:
        raise ConfigError(f"trainer.predict_batch_size: must be >= 1, got {values['predict_batch_size']}; e.g. trainer.predict_batch_size=256")
    if values["compile"] and shutil.which(os.environ.get("CXX", "c++")) is None and shutil.which("g++") is None:
        raise ConfigError("trainer.compile=true: torch.compile needs a C++ compiler on PATH (none found); install g++ or set trainer.compile=false")
    return InferenceOptions(**values)


def prepare_network(net: nn.Module, options: InferenceOptions) -> nn.Module:
    """An inference copy of the plain ``nn.Module`` ``net`` as ``options`` say (``net`` itself is unchanged).

    Returns ``net`` itself when no option changes the model.
    """
    if not options.changes_model:
        return net
    from dualstream.models.networks import fold_batchnorm, pool_before_relu

    # fuse_batchnorm also moves a block's ReLU after its max-pool (exact, a quarter of the work)
    prepared = pool_before_relu(fold_batchnorm(net)) if options.fuse_batchnorm else copy.deepcopy(net).eval()
    if options.channels_last:
        is3d = any(isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)) for m in prepared.modules())
        prepared = prepared.to(memory_format=torch.channels_last_3d if is3d else torch.channels_last)
    if options.compile:
        # Frozen weights let inductor pre-pack them for oneDNN; dynamic=False: one graph per batch shape.
        prepared = torch.compile(prepared, dynamic=False, options={"freezing": True})  # type: ignore[assignment]
    return prepared


def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())


@contextmanager
def inference_view(module: nn.Module, cfg_or_options: Mapping[str, Any] | InferenceOptions) -> Iterator[nn.Module]:
    """Within the block, ``module``'s convolutional children are prepared inference copies (:func:`prepare_network`).

    ``module`` is a Lightning module (an encoder, the U-Net); its children holding convolutions
    (``backbone``, ``net``) are swapped for copies folded / made channels-last / compiled, and put back on
    exit, so training, ``state_dict`` and the cache never see the copies. With the default options
    nothing is swapped. Yields ``module``.
    """
    options = cfg_or_options if isinstance(cfg_or_options, InferenceOptions) else inference_options(cfg_or_options)
    originals: dict[str, nn.Module] = {}
    if options.changes_model:
        was_training = module.training
        module.eval()
        for name, child in list(module.named_children()):
            if _has_conv(child):
                originals[name] = child
        try:
            for name, child in originals.items():
                setattr(module, name, prepare_network(child, options))
        except BaseException:
            for name, child in originals.items():
                setattr(module, name, child)
            raise
    try:
        yield module
    finally:
        for name, child in originals.items():
            setattr(module, name, child)
        if originals and was_training:
            module.train()
