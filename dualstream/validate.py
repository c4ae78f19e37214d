"""Up-front checks of a composed config: every documented key, before any data is read or model trained.

:func:`validate` raises :class:`~dualstream.errors.ConfigError` (or :class:`~dualstream.errors.DataError`
for a missing file) with one line: the key, what is wrong, how to fix it. It checks types and ranges,
names against their registries (acquisition, encoder, logger, uncertainty measure), acquisition
parameters against the strategy's signature, module keyword arguments against the module's
``__init__``, keys that no config file defines (a ``+key=`` typo), the accelerator, and that the
output and cache directories are writable. Checks that need the data (NaN, constant images, labels
above the threshold) happen when the volumes are opened (:mod:`dualstream.patches`), still before
any training.

:func:`load_plugins` imports the user modules named by ``acquisition.module`` (where user strategies
register themselves); the CLI calls it before :func:`validate` so their names are known.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dualstream.errors import ConfigError, DataError
from dualstream.tuning import check_tune

#: Config groups whose top-level keys must be defined by one of their ``conf/GROUP/*.yaml`` files.
CHECKED_GROUPS = ("data", "task", "encoder", "model", "acquisition", "loop", "trainer", "logger", "paths")
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
PRECISIONS = ("64", "64-true", "32", "32-true", "16", "16-mixed", "bf16", "bf16-mixed", "16-true", "bf16-true", "transformer-engine")
_MISSING = object()


# --- reading values -------------------------------------------------------------------------------


def _get(cfg: DictConfig, key: str, default: Any = _MISSING) -> Any:
    """The resolved value at dotted ``key``; ``default`` when absent (ConfigError when absent without one)."""
    try:
        value = OmegaConf.select(cfg, key, default=_MISSING, throw_on_resolution_failure=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{key}: cannot resolve its value ({str(err).splitlines()[0]}); check the interpolation") from err
    if value is _MISSING:
        if default is _MISSING:
            raise ConfigError(f"{key}: missing; add it to the config (see conf/)")
        return default
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(cfg: DictConfig, key: str, low: int | None = None, *, optional: bool = False, default: Any = _MISSING) -> int | None:
    """``key`` must be an integer ``>= low`` (or null when ``optional``)."""
    value = _get(cfg, key, None if optional else default)
    if value is None and optional:
        return None
    if not _is_int(value):
        raise ConfigError(f"{key}: expected an integer, got {value!r}; e.g. {key}={max(low or 0, 1)}")
    if low is not None and value < low:
        raise ConfigError(f"{key}: must be >= {low}, got {value}")
    return value


def check_number(
    cfg: DictConfig,
    key: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
    default: Any = _MISSING,
) -> float | None:
    """``key`` must be a number in the interval given (``*_open``: bound excluded)."""
    value = _get(cfg, key, None if optional else default)
    if value is None and optional:
        return None
    if not _is_number(value):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise ConfigError(f"{key}: must be in {interval}, got {value}")
    return float(value)


def check_choice(cfg: DictConfig, key: str, choices: Iterable[str], hint: str = "", default: Any = _MISSING) -> str:
    """``key`` must be one of ``choices``."""
    value = _get(cfg, key, default)
    choices = list(choices)
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{key}: unknown value {value!r}{guess}; choose one of {', '.join(map(str, choices))}{hint}")
    return value


def check_bool(cfg: DictConfig, key: str, default: Any = _MISSING) -> bool:
    value = _get(cfg, key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


# --- known keys ------------------------------------------------------------------------------------


def _conf_dir() -> Path:
    from dualstream.cli import CONF_DIR

    return Path(CONF_DIR)


def _flatten(node: Any, prefix: str) -> Iterable[str]:
    if isinstance(node, Mapping):
        for k, v in node.items():
            if k == "defaults":
                continue
            path = f"{prefix}.{k}" if prefix else str(k)
            yield path
            yield from _flatten(v, path)


def _group_file(path: Path, root: Path) -> Any:
    """A group file's content, with the configs it pulls in whole (``defaults: - /encoder/vae@_here_``,
    as ``conf/screen_encoder/vae.yaml`` does) merged in, so their keys count as the group's."""
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    merged: dict[str, Any] = {}
    for entry in (node or {}).get("defaults", []) if isinstance(node, dict) else []:
        if isinstance(entry, str) and entry.startswith("/") and entry.endswith("@_here_"):
            source = root / f"{entry[1:-len('@_here_')]}.yaml"
            if source.is_file():
                merged.update(OmegaConf.to_container(OmegaConf.load(source), resolve=False) or {})
    return {**merged, **node} if isinstance(node, dict) else node


@lru_cache(maxsize=4)
def known_keys(conf_dir: str | None = None) -> frozenset[str]:
    """Every dotted key some file of ``conf/`` defines (``model.module.mc_samples``, ``seed``, ...).

    Group files count under their group (``conf/model/unet.yaml: steps`` -> ``model.steps``).
    """
    root = Path(conf_dir) if conf_dir else _conf_dir()
    keys: set[str] = set()
    main = OmegaConf.to_container(OmegaConf.load(root / "config.yaml"), resolve=False)
    keys.update(k for k in _flatten(main, "") if not k.startswith("hydra"))
    for group in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "hydra"):
        keys.add(group.name)
        for path in group.glob("*.yaml"):
            try:
                node = _group_file(path, root)
            except Exception:  # noqa: BLE001  a broken preset is Hydra's error to report, not this helper's
                continue
            keys.update(_flatten(node, group.name))
    return frozenset(keys)


def options_with_key(key: str, conf_dir: str | None = None) -> list[str]:
    """Names of the presets of ``key``'s group that define it (``acquisition.params.mix`` ->
    ``["dualstream_screen", "dualstream_v2"]``); ``[]`` when the key's head is not a group."""
    root = Path(conf_dir) if conf_dir else _conf_dir()
    group, _, rest = key.partition(".")
    if not rest or not (root / group).is_dir() or group == "hydra":
        return []
    found = []
    for path in sorted((root / group).glob("*.yaml")):
        try:
            node = _group_file(path, root)
        except Exception:  # noqa: BLE001  a broken preset is Hydra's error to report, not this helper's
            continue
        if f"{group}.{rest}" in _flatten(node, group):
            found.append(path.stem)
    return found


def suggest_key(key: str, conf_dir: str | None = None) -> str:
    """`` (did you mean model.module.mc_samples?)`` for a key no config defines, or ``""``."""
    known = known_keys(conf_dir)
    leaf = key.rsplit(".", 1)[-1]
    group = key.split(".", 1)[0]
    same_leaf = sorted((k for k in known if k.rsplit(".", 1)[-1] == leaf and k != key), key=lambda k: (not k.startswith(group + "."), len(k)))
    if same_leaf:
        return f" (did you mean {same_leaf[0]}?)"
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def _check_known_keys(cfg: DictConfig) -> None:
    known = known_keys()
    for key in cfg.keys():
        if str(key) not in known:
            raise ConfigError(f"{key}: not a config key{suggest_key(str(key))}; remove it")
    for group in CHECKED_GROUPS:
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            continue
        for key in node.keys():
            dotted = f"{group}.{key}"
            if dotted not in known:
                raise ConfigError(f"{dotted}: not a key of the {group} config{suggest_key(dotted)}; remove it or fix the name")


def _check_kwargs(cfg: DictConfig, key: str, target: Callable[..., Any], what: str) -> None:
    """The keys of the mapping at ``key`` must be keyword arguments of ``target``."""
    kwargs = _get(cfg, key, None) or {}
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{key}: expected a mapping of {what} arguments, got {kwargs!r}")
    params = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"]
    for name in kwargs:
        if name not in accepted:
            raise ConfigError(
                f"{key}.{name}: not an argument of {what}{suggest_key(f'{key}.{name}')}; it takes {', '.join(accepted)}"
            )


# --- the groups ------------------------------------------------------------------------------------


def _check_spec(cfg: DictConfig, key: str, required: bool) -> None:
    from dualstream.volume import spec_path

    value = _get(cfg, key, None)
    if value is None or value == "":
        if required:
            raise ConfigError(f"{key}: not set; give a volume (file.h5:dataset, a .tif, or a directory of PNG/TIFF sections)")
        return
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"{key}: expected a path, got {value!r}")
    path = spec_path(value)
    if not path.exists():
        raise DataError(f"{key}: no such file or directory '{path}'; check the path")


def _check_sections(cfg: DictConfig) -> None:
    value = _get(cfg, "data.sections", None)
    if value is None:
        return
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) not in (2, 3) or not all(p.strip().lstrip("-").isdigit() for p in parts if p.strip()):
            raise ConfigError(f"data.sections: {value!r} is not a slice; write START:STOP (e.g. data.sections=0:8), a list [0,2,5], or null")
        return
    if _is_int(value):
        value = [value]
    if not isinstance(value, list) or not value or not all(_is_int(v) and v >= 0 for v in value):
        raise ConfigError(f"data.sections: expected a non-empty list of section indices >= 0, a slice 'START:STOP', or null; got {value!r}")


def _check_depth(cfg: DictConfig) -> None:
    """``data.patch_depth`` / ``data.stride_z`` (3D blocks), and what 3D blocks cannot be combined with."""
    depth = check_int(cfg, "data.patch_depth", 1, default=1)
    check_int(cfg, "data.stride_z", 1, optional=True)
    for group in ("encoder", "model"):
        if _get(cfg, f"{group}.module.ndim", None) is not None:
            raise ConfigError(f"{group}.module.ndim: set from data.patch_depth (1: 2D, > 1: 3D); remove it")
    if depth == 1:
        return
    if (_get(cfg, "data.inject_artifacts", None) or 0) > 0:
        raise ConfigError(f"data.inject_artifacts: simulated artifacts are 2D only and data.patch_depth={depth}; set data.inject_artifacts=0 or data.patch_depth=1")
    if _get(cfg, "task.name", "segment") != "segment":
        raise ConfigError(f"data.patch_depth={depth}: 3D blocks are for task=segment only; set data.patch_depth=1")
    if (_get(cfg, "encoder.name", None) or "simclr") == "vae":
        if _get(cfg, "screen_encoder", None):  # acquisition=dualstream's default pair: both encoders are 2D
            raise ConfigError(
                f"encoder=vae and screen_encoder are 2D only and data.patch_depth={depth} (acquisition=dualstream takes "
                "the VAE as its weight and SimCLR as its veto by default); for 3D blocks pass encoder=simclr "
                "'~screen_encoder' (the 3D SimCLR alone, as experiment=demo3d does), or use data.patch_depth=1"
            )
        raise ConfigError(f"encoder=vae is 2D only and data.patch_depth={depth}; use encoder=simclr or data.patch_depth=1")
    if _get(cfg, "annotator.name", "simulated") != "simulated":
        raise ConfigError(f"data.patch_depth={depth}: annotating your own volume (annotator=files) is 2D only; set data.patch_depth=1")


def check_data(cfg: DictConfig, check_files: bool = True) -> None:
    if check_files:
        _check_spec(cfg, "data.image", True)
        # A lab's own volume (annotator=files) has no labels: the annotator paints them.
        _check_spec(cfg, "data.labels", _get(cfg, "annotator.name", "simulated") == "simulated")
        for key in ("data.ignore", "data.test_image", "data.test_labels"):
            _check_spec(cfg, key, False)
    if bool(_get(cfg, "data.test_image", None)) != bool(_get(cfg, "data.test_labels", None)):
        raise ConfigError("data.test_image: data.test_image and data.test_labels go together; give both or neither")
    check_int(cfg, "data.patch_size", 8)
    check_int(cfg, "data.downsample", 1, default=1)
    check_int(cfg, "data.stride", 1, optional=True)
    check_number(cfg, "data.label_threshold")
    check_number(cfg, "data.test_fraction", 0.0, 1.0, low_open=True, high_open=True, default=0.25)
    check_number(cfg, "data.inject_artifacts", 0.0, 1.0, high_open=True, optional=True)
    from dualstream.pool_store import pool_store_mode  # memory | disk, and disk's refusals

    pool_store_mode(cfg.data)
    _check_depth(cfg)
    kinds = _get(cfg, "data.artifact_kinds", None)
    if kinds is not None and (not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds)):
        raise ConfigError(f"data.artifact_kinds: expected a list of defect names, got {kinds!r}")
    vs = _get(cfg, "data.voxel_size", None)
    if vs is not None and (not isinstance(vs, list) or len(vs) != 3 or not all(_is_number(v) and v > 0 for v in vs)):
        raise ConfigError(f"data.voxel_size: expected [z, y, x] in nm (three positive numbers) or null, got {vs!r}")
    rng = _get(cfg, "data.intensity_range", None)
    if rng is not None:
        if not isinstance(rng, list) or len(rng) != 2 or not all(_is_number(v) for v in rng) or not rng[0] < rng[1]:
            raise ConfigError(f"data.intensity_range: expected [lo, hi] with lo < hi (raw values of black and white) or null, got {rng!r}")
    _check_sections(cfg)


def check_task(cfg: DictConfig) -> None:
    """``task.name`` names a task plug-in (:mod:`dualstream.tasks`); its own keys are checked by it."""
    from dualstream.tasks import BUILTIN, task_module

    if _get(cfg, "task.module", None) is None:
        check_choice(cfg, "task.name", tuple(BUILTIN), " (task=segment or task=detect, or task.module=your task)")
    task_module(cfg).check_config(cfg)


def check_annotator(cfg: DictConfig) -> None:
    """``annotator.name`` and ``loop.cold_start`` (a strategy that needs no task model, or random)."""
    from dualstream.acquisition import REGISTRY

    name = _get(cfg, "annotator.name", "simulated")
    if name not in ("simulated", "files"):
        raise ConfigError(f"annotator.name={name!r} is unknown; use annotator=simulated (ground truth) or annotator=files (a lab's labels)")
    cold = _get(cfg, "loop.cold_start", "random")
    label_free = ("random", "typiclust", "probcover", "coreset", "density")
    if cold not in label_free and cold not in REGISTRY:
        raise ConfigError(f"loop.cold_start={cold!r} is not a strategy; use one of {', '.join(label_free)}")
    if cold not in label_free:
        raise ConfigError(
            f"loop.cold_start={cold!r} needs a task model, which the first batch does not have yet;"
            f" use one of {', '.join(label_free)}"
        )


def check_encoder(cfg: DictConfig, group: str = "encoder") -> None:
    """The ``encoder`` config, or with ``group="screen_encoder"`` the screen's second encoder."""
    from dualstream.streams.data_stream import ENCODERS

    name = _get(cfg, f"{group}.name", None) or "simclr"
    if name not in ENCODERS:
        raise ConfigError(f"{group}.name: unknown encoder {name!r}; choose one of {', '.join(sorted(ENCODERS))} (e.g. {group}=vae)")
    check_int(cfg, f"{group}.steps", 1)
    check_int(cfg, f"{group}.batch_size", 1)
    check_int(cfg, f"{group}.seed", 0, default=0)
    check_int(cfg, f"{group}.typicality_k", 1, default=20)
    check_bool(cfg, f"{group}.finetune", default=False)
    check_int(cfg, f"{group}.finetune_steps", 0, default=50)
    check_int(cfg, f"{group}.finetune_batch_size", 1, default=32)
    check_number(cfg, f"{group}.finetune_lr", 0.0, low_open=True, default=3e-4)
    _check_kwargs(cfg, f"{group}.module", ENCODERS[name], f"the {name} encoder")


def check_screen_encoder(cfg: DictConfig) -> None:
    """``screen_encoder`` (optional): a valid, frozen, 2D encoder that the acquisition's embedding screen reads."""
    if not _get(cfg, "screen_encoder", None):
        return
    check_encoder(cfg, "screen_encoder")
    if check_bool(cfg, "screen_encoder.finetune", default=False):
        from dualstream.streams.data_stream import FROZEN_SCREEN

        raise ConfigError(FROZEN_SCREEN)
    if int(_get(cfg, "data.patch_depth", 1) or 1) > 1:
        raise ConfigError("screen_encoder is 2D only and data.patch_depth > 1; drop it ('~screen_encoder' on the command line) or use data.patch_depth=1")
    params = _get(cfg, "acquisition.params", None) or {}
    if not params.get("screen_embedding"):
        raise ConfigError(
            f"screen_encoder is set, but acquisition={_get(cfg, 'acquisition.name')} does not screen the embedding, so the second"
            " encoder would train for nothing; add acquisition.params.screen_embedding=true (dualstream_screen, dualstream_herding)"
            " or drop screen_encoder"
        )


def check_model(cfg: DictConfig) -> None:
    from dualstream.models.segmentation import SegmentationModule
    from dualstream.streams.uncertainty import MEASURES, REDUCTIONS

    check_int(cfg, "model.steps", 1)
    check_int(cfg, "model.batch_size", 1)
    _check_kwargs(cfg, "model.module", SegmentationModule, "the task model (U-Net)")
    mc = check_int(cfg, "model.module.mc_samples", 1, default=1)
    check_int(cfg, "model.module.width", 1, default=16)
    check_int(cfg, "model.module.depth", 1, default=3)
    check_number(cfg, "model.module.dropout", 0.0, 1.0, high_open=True, default=0.1)
    check_number(cfg, "model.module.lr", 0.0, low_open=True, default=1e-2)
    measure = check_choice(cfg, "model.uncertainty.measure", MEASURES, default="entropy")
    check_choice(cfg, "model.uncertainty.reduction", REDUCTIONS, default="mean")
    check_number(cfg, "model.uncertainty.topk", 0.0, 1.0, low_open=True, default=0.1)
    check_number(cfg, "model.uncertainty.cold_ratio", 0.0, 1.0, default=0.25)
    check_int(cfg, "model.uncertainty.topk_until", 1, default=16)
    acq_mc = _get(cfg, "acquisition.mc_samples", None) or 1
    if measure == "bald" and (mc or 1) <= 1 and (not _is_int(acq_mc) or acq_mc <= 1):
        raise ConfigError("model.uncertainty.measure: 'bald' needs MC-dropout samples; set model.module.mc_samples=8 (or another value > 1)")


def load_plugins(cfg: DictConfig) -> list[str]:
    """Import the modules ``acquisition.module`` names (a dotted name or a list of them); return them.

    A user strategy registers itself on import (``@register("my_strategy")``), so this must run
    before the name is checked or used.

    Raises:
        ConfigError: the value is not a name, or the import fails (the message names the module).
    """
    value = _get(cfg, "acquisition.module", None)
    if value is None:
        return []
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"acquisition.module: expected a module name (my_pkg.strategies) or a list of them, got {value!r}")
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001  whatever the user's module raises while importing
            raise ConfigError(
                f"acquisition.module: cannot import {name!r} ({type(err).__name__}: {err}); put its folder on"
                " PYTHONPATH (or pip install it) and give its dotted name"
            ) from err
    return names


def check_acquisition(cfg: DictConfig) -> None:
    from dualstream.acquisition import REGISTRY
    from dualstream.acquisition.base import strategy_params

    name = _get(cfg, "acquisition.name")
    if name not in REGISTRY:
        close = difflib.get_close_matches(str(name), sorted(REGISTRY), n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"acquisition.name: unknown strategy {name!r}{guess}; choose one of {', '.join(sorted(REGISTRY))},"
            " or register your own and name its module in acquisition.module"
        )
    check_int(cfg, "acquisition.mc_samples", 1, optional=True)
    params = _get(cfg, "acquisition.params", None) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"acquisition.params: expected a mapping of {name}'s parameters, got {params!r}")
    rest = strategy_params(REGISTRY[name])
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in rest.values())
    accepted = [n for n, p in rest.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not takes_any:
        for key in params:
            if key not in accepted:
                close = difflib.get_close_matches(key, accepted, n=1)
                guess = f" (did you mean {close[0]}?)" if close else ""
                raise ConfigError(
                    f"acquisition.params.{key}: not a parameter of {name}{guess}; it takes {', '.join(accepted) or 'none'}"
                    f" (acquisition={name} loads its own params; add new ones with +acquisition.params.NAME=...)"
                )
    missing = [n for n in accepted if rest[n].default is inspect.Parameter.empty and n not in params]
    if missing:
        raise ConfigError(f"acquisition.params.{missing[0]}: {name} needs it (no default); add +acquisition.params.{missing[0]}=...")
    _dry_run(name, dict(params))


def _dry_run(name: str, params: dict[str, Any]) -> None:
    """Run the strategy once on a tiny synthetic pool, so a bad parameter *value* (an unknown mode, a
    share out of range) fails now and not after the encoder and round 0 trained. Only the strategy's
    own :class:`ConfigError` counts: any other exception on synthetic data is left to the real run."""
    import numpy as np

    from dualstream.acquisition import PoolView, acquire

    rng = np.random.default_rng(0)
    n = 64
    u = rng.random(n)
    extras = {
        "margin": u, "least_confidence": u / 2, "bald": u / 4, "foreground": rng.random(n),
        "task_embedding": rng.normal(size=(n, 8)).astype(np.float32),
        "grad_embedding": rng.normal(size=(n, 9)).astype(np.float32),
        "pixel_stats": rng.random((n, 6)),
    }
    queried = np.zeros(n, dtype=bool)
    queried[:8] = True
    view = PoolView(rng.normal(size=(n, 8)).astype(np.float32), rng.random(n) + 0.5, u, queried, extras)
    try:
        acquire(name, view, 4, rng, **params)
    except ConfigError as err:
        msg = str(err)
        raise ConfigError(msg if msg.startswith("acquisition") else f"acquisition.params: {msg}") from None
    except Exception:  # noqa: BLE001 -- a plugin may not cope with random data; the real run will tell
        pass


def check_loop(cfg: DictConfig) -> None:
    initial = _get(cfg, "loop.initial")
    if initial != "all" and not (_is_int(initial) and initial >= 1):
        raise ConfigError(f"loop.initial: expected an integer >= 1 or 'all' (label every pool item once), got {initial!r}")
    check_int(cfg, "loop.batch", 1)
    check_int(cfg, "loop.rounds", 0, optional=True)  # null: as many rounds as the pool holds (a lab's project)
    check_number(cfg, "loop.artifact_threshold", 0.0, 1.0, low_open=True, default=0.5)
    check_bool(cfg, "loop.cold_screen", default=True)
    schedule = _get(cfg, "loop.schedule", None)
    if schedule is not None:
        ok = isinstance(schedule, list) and schedule and all(_is_int(v) and v >= 1 for v in schedule)
        if not ok or any(b <= a for a, b in zip(schedule, schedule[1:])):
            raise ConfigError(f"loop.schedule: expected a strictly increasing list of integers >= 1 (e.g. [10, 20, 40]) or null, got {schedule!r}")


def check_trainer(cfg: DictConfig) -> None:
    accelerator = check_choice(cfg, "trainer.accelerator", ACCELERATORS, default="cpu")
    devices = _get(cfg, "trainer.devices", 1)
    if not (devices == "auto" or (_is_int(devices) and (devices >= 1 or devices == -1)) or (isinstance(devices, list) and devices)):
        raise ConfigError(f"trainer.devices: expected an integer >= 1, a list of device ids, or 'auto'; got {devices!r}")
    precision = str(_get(cfg, "trainer.precision", "32-true"))
    if precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision: unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    check_bool(cfg, "trainer.deterministic", default=False)
    check_int(cfg, "trainer.cpu_threads", 1, optional=True)
    if accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.accelerator: {accelerator!r} but torch sees no CUDA GPU (torch.cuda.is_available() is False);"
                " use trainer=cpu, or install a CUDA build of torch on a GPU machine"
            )
    if accelerator == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise ConfigError("trainer.accelerator: 'mps' but this machine has no Apple GPU; use trainer=cpu")
    from dualstream.trainer import check_devices, check_strategy, inference_options

    # devices and strategy drive the encoder's fit only (dualstream.trainer.build_trainer)
    check_strategy(str(_get(cfg, "trainer.strategy", "auto") or "auto"), check_devices(cfg.trainer))
    inference_options(_get(cfg, "trainer"))  # channels_last, fuse_batchnorm, compile, predict_batch_size


def check_logger(cfg: DictConfig) -> None:
    from dualstream.tracking import LOGGERS, WANDB_MODES

    name = check_choice(cfg, "logger.name", LOGGERS, " (e.g. logger=csv)", default="none")
    if name == "wandb":
        check_choice(cfg, "logger.mode", WANDB_MODES, default="offline")


def check_writable(directory: str | Path, key: str) -> None:
    """Create ``directory`` if needed and write then remove a probe file there."""
    path = Path(directory)
    probe = path / f".dualstream-probe-{uuid.uuid4().hex[:8]}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"{key}: cannot write to '{path}' ({err.strerror or err}); choose a writable directory") from err


def validate(cfg: DictConfig, run_dir: str | Path | None = None, check_files: bool = True) -> None:
    """Check a composed ``dualstream`` config; raise a one-line :class:`ConfigError` at the first problem.

    Args:
        cfg: the composed config (what Hydra passes to the task).
        run_dir: the run's output directory, probed for writing (``None``: not checked).
        check_files: whether data paths must exist (off for configs composed away from their data).

    Call :func:`load_plugins` first, so user strategies are registered.
    """
    seed = _get(cfg, "seed")
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"seed: expected an integer >= 0, got {seed!r}")
    check_bool(cfg, "progress", default=True)
    check_bool(cfg, "resume", default=True)
    _check_known_keys(cfg)
    check_task(cfg)
    check_annotator(cfg)
    check_data(cfg, check_files)
    check_loop(cfg)
    check_encoder(cfg)
    check_screen_encoder(cfg)
    check_model(cfg)
    check_acquisition(cfg)
    check_trainer(cfg)
    check_logger(cfg)
    check_tune(cfg)
    if run_dir is not None:
        check_writable(run_dir, "hydra.run.dir")
    cache_dir = _get(cfg, "paths.cache_dir", None)
    if cache_dir:
        check_writable(cache_dir, "paths.cache_dir")
