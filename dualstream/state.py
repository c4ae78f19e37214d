"""The loop's state on disk, so that an interrupted run resumes where it stopped.

After every round the loop writes ``loop_state.npz`` into the run directory (temp file + ``os.replace``,
the previous state kept as ``loop_state.prev.npz``). Rerunning the same command into the same run
directory (``hydra.run.dir=DIR``, or the same ``hydra.sweep.dir``) restores the masks, the answers,
the acquisition rng and the records, and goes on from the next round; since the task model is
retrained from scratch each round with the seed ``seed * 1000 + round``, the results are those of an
uninterrupted run (``seconds`` apart).

The state says what was *proposed* (the batches, in order) and what was *answered* (``queried``,
``labeled``, ``skipped`` and the answers), so a proposal not yet answered is :attr:`LoopState.pending`:
a human annotator answering between two calls (propose, save, receive answers) can reuse this file.

File layout (``np.savez_compressed``, read with ``allow_pickle=False``): ``queried``, ``labeled``,
``skipped`` ``(N,)`` bool; ``answer_index`` ``(L,)`` int64 labelled items and ``answers`` ``(L, ...)``
their answers (masks for the dense task, 0/1 for proposals); ``proposed`` (all batches concatenated)
and ``proposed_sizes`` ``(B,)`` int64; ``meta``: a JSON string (format version, config hash, pool
fingerprint, round, rounds, acquisition rng state, records).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from dualstream.errors import ConfigError, DataError

log = logging.getLogger(__name__)

STATE_FILE = "loop_state.npz"
PREVIOUS_FILE = "loop_state.prev.npz"
FORMAT_VERSION = 1
#: Top-level config keys that do not change what a run computes (where it writes, how it logs, what it reports to a tuner).
VOLATILE_KEYS = ("hydra", "paths", "progress", "logger", "resume", "tune")
#: ``(section, key) -> default`` of keys added later whose default reproduces the earlier behaviour.
LATER_DEFAULTS: dict[tuple[str, str], Any] = {
    ("data", "pool_store"): "memory",
    # the pool-inference options of dualstream.trainer.INFERENCE_KEYS
    ("trainer", "channels_last"): False,
    ("trainer", "fuse_batchnorm"): False,
    ("trainer", "compile"): False,
    ("trainer", "predict_batch_size"): 256,
}


class CorruptStateError(DataError):
    """A loop state file cannot be read (truncated, not an npz, missing arrays, unknown format version)."""


def config_hash(config: Mapping[str, Any]) -> str:
    """16 hex digits identifying a resolved config, :data:`VOLATILE_KEYS` left out."""
    kept = {k: v for k, v in config.items() if k not in VOLATILE_KEYS}
    # Keys added after runs existed: at their default they change nothing, so they stay out of the
    # hash and a run started before them still resumes.
    for (section, key), default in LATER_DEFAULTS.items():
        part = kept.get(section)
        if isinstance(part, Mapping) and key in part and part[key] == default:
            kept[section] = {k: v for k, v in part.items() if k != key}
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pool_fingerprint(items: np.ndarray) -> str:
    """16 hex digits identifying the pool's pixels (shape, dtype and bytes)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{items.shape}{items.dtype}".encode())
    digest = getattr(items, "digest", None)
    if isinstance(digest, str):  # a pool on disk (dualstream.pool_store): the digest written with it, no full read
        h.update(digest.encode())
        return h.hexdigest()
    h.update(np.ascontiguousarray(items).data)
    return h.hexdigest()


def pending_items(proposed: list[np.ndarray], queried: np.ndarray) -> np.ndarray:
    """``(P,)`` int64 items of the last batch in ``proposed`` not yet answered (``queried`` ``(N,)`` bool)."""
    if not proposed:
        return np.zeros(0, dtype=np.int64)
    last = proposed[-1]
    return last[~queried[last]]


@dataclass
class LoopState:
    """Everything the loop needs to go on after round ``round``.

    Attributes:
        config_hash: :func:`config_hash` of the run's config.
        pool: :func:`pool_fingerprint` of the items the annotator is shown.
        n_rounds: the run's last round (``LoopSettings.n_rounds``).
        round: last round measured (its record is in ``records``); -1 before the first.
        queried, labeled, skipped: ``(N,)`` bool; ``queried = labeled | skipped``.
        answer_index: ``(L,)`` int64 labelled items, ascending; ``answers``: ``(L, ...)`` their answers.
        proposed: the batches put to the annotator, in order: ``proposed[0]`` is the random initial set,
            ``proposed[k]`` was acquired after round ``k - 1``; each ``(B_k,)`` int64.
        rng_state: the acquisition rng's ``bit_generator.state`` after the last acquisition.
        records: ``RoundRecord`` fields (``dataclasses.asdict``) of rounds ``0 .. round``.
        version: file format version (:data:`FORMAT_VERSION`).
    """

    config_hash: str
    pool: str
    n_rounds: int
    round: int
    queried: np.ndarray
    labeled: np.ndarray
    skipped: np.ndarray
    answer_index: np.ndarray
    answers: np.ndarray
    proposed: list[np.ndarray]
    rng_state: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    version: int = FORMAT_VERSION

    @property
    def finished(self) -> bool:
        """The last round is measured: nothing left to do."""
        return self.round >= self.n_rounds

    @property
    def pending(self) -> np.ndarray:
        """``(P,)`` int64 items of the last proposed batch without an answer yet (empty in simulated runs)."""
        return pending_items(self.proposed, self.queried)

    def save(self, run_dir: str | Path) -> Path:
        """Write ``run_dir/loop_state.npz`` atomically; the state it replaces becomes ``loop_state.prev.npz``."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        meta = {
            "version": self.version, "config_hash": self.config_hash, "pool": self.pool, "n_rounds": self.n_rounds,
            "round": self.round, "rng_state": self.rng_state, "records": self.records,
        }
        sizes = np.array([len(b) for b in self.proposed], dtype=np.int64)
        flat = np.concatenate(self.proposed).astype(np.int64) if self.proposed else np.zeros(0, dtype=np.int64)
        path, tmp = run_dir / STATE_FILE, run_dir / f"{STATE_FILE}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:  # a file object: savez would append ".npz" to a name
            np.savez_compressed(
                f, queried=self.queried, labeled=self.labeled, skipped=self.skipped,
                answer_index=self.answer_index.astype(np.int64), answers=self.answers,
                proposed=flat, proposed_sizes=sizes, meta=np.array(json.dumps(meta)),
            )
            f.flush()
            os.fsync(f.fileno())
        # Keep the last good state until the new one is in place: a kill between the two renames leaves
        # the previous state to resume from (one round redone), never no state or half a file.
        if path.exists():
            os.replace(path, run_dir / PREVIOUS_FILE)
        os.replace(tmp, path)
        return path

    @classmethod
    def read(cls, path: str | Path) -> "LoopState":
        """Read one state file; :class:`CorruptStateError` if it is damaged or of another format version."""
        path = Path(path)
        try:
            data = path.read_bytes()
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            meta = json.loads(str(arrays["meta"]))
            if meta.get("version") != FORMAT_VERSION:
                raise CorruptStateError(
                    f"{path}: loop state format version {meta.get('version')!r}, this dualstream reads {FORMAT_VERSION}"
                )
            sizes = arrays["proposed_sizes"].astype(np.int64)
            proposed = np.split(arrays["proposed"].astype(np.int64), np.cumsum(sizes)[:-1]) if len(sizes) else []
            state = cls(
                config_hash=str(meta["config_hash"]), pool=str(meta["pool"]), n_rounds=int(meta["n_rounds"]),
                round=int(meta["round"]), queried=arrays["queried"].astype(bool), labeled=arrays["labeled"].astype(bool),
                skipped=arrays["skipped"].astype(bool), answer_index=arrays["answer_index"].astype(np.int64),
                answers=arrays["answers"], proposed=list(proposed), rng_state=dict(meta["rng_state"]),
                records=list(meta["records"]),
            )
        except CorruptStateError:
            raise
        except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile, json.JSONDecodeError) as err:
            raise CorruptStateError(f"{path}: cannot read the loop state ({type(err).__name__}: {err})") from None
        n = len(state.queried)
        if not (len(state.labeled) == len(state.skipped) == n and len(state.answer_index) == len(state.answers)
                and len(state.records) == state.round + 1 and int(sizes.sum()) == len(arrays["proposed"])):
            raise CorruptStateError(f"{path}: inconsistent loop state (array lengths or record count disagree)")
        return state

    @classmethod
    def load(cls, run_dir: str | Path) -> "LoopState | None":
        """The latest readable state in ``run_dir``, or None when there is none.

        A damaged ``loop_state.npz`` is reported with a warning and the previous state
        (``loop_state.prev.npz``) is tried; temp files of an interrupted write are ignored.
        """
        run_dir = Path(run_dir)
        for name in (STATE_FILE, PREVIOUS_FILE):
            path = run_dir / name
            if not path.exists():
                continue
            try:
                return cls.read(path)
            except CorruptStateError as err:
                log.warning("%s; ignoring it", err)
        return None

    def check(self, config_hash: str, pool: str, run_dir: str | Path) -> None:
        """Refuse (:class:`ConfigError`) a state written by another config or for another pool."""
        what = "config" if self.config_hash != config_hash else "pool (data files)" if self.pool != pool else ""
        if what:
            raise ConfigError(
                f"{run_dir}: the loop state there was written by a run with a different {what}; resume with the"
                f" same command, or use a new hydra.run.dir (hydra.sweep.dir for sweeps), or delete"
                f" its loop_state*.npz files (or pass resume=false) to start over"
            )


def clear_state(run_dir: str | Path) -> bool:
    """Remove the loop state files of ``run_dir`` (``resume=false``: start over); True if there were any."""
    found = False
    for name in (STATE_FILE, PREVIOUS_FILE):
        path = Path(run_dir) / name
        found |= path.exists()
        path.unlink(missing_ok=True)
    return found


def finished_aulc(config: Mapping[str, Any], run_dir: str | Path) -> float | None:
    """The AULC of a run already finished in ``run_dir`` with this config, else None (run it).

    Finished: the state's last round is the run's last round and ``results.json`` holds all its
    records. A state of another config raises :class:`ConfigError` (see :meth:`LoopState.check`).
    The pool fingerprint is checked when the run resumes (it needs the pool built).
    """
    from dualstream.results import RESULTS_FILE

    state = LoopState.load(run_dir)
    if state is None or not state.finished:
        return None
    if state.config_hash != config_hash(config):
        state.check(config_hash(config), state.pool, run_dir)
    try:
        results = json.loads((Path(run_dir) / RESULTS_FILE).read_text())
    except (OSError, ValueError):
        return None
    if len(results.get("records") or []) != state.round + 1:
        return None
    aulc = results.get("aulc")
    return float("nan") if aulc is None else float(aulc)


def already_finished(cfg: Any, run_dir: str | Path) -> float | None:
    """For the CLI: the AULC of a finished run of ``cfg`` (a ``DictConfig``) in ``run_dir``, logged; else None.

    Checked before the pool and the streams are built, so a relaunched sweep skips finished runs at
    once. ``resume=false`` never skips.
    """
    from omegaconf import OmegaConf

    from dualstream.runner import apply_acquisition_needs  # late: runner imports the loop, which imports this

    if not cfg.get("resume", True):
        return None
    apply_acquisition_needs(cfg)  # as run() does before it records the config
    aulc = finished_aulc(OmegaConf.to_container(cfg, resolve=True), run_dir)
    if aulc is not None:
        log.info("%s: already finished (AULC %.4f), nothing to do", run_dir, aulc)
    return aulc
