"""The label store: ``round_NNN/answers.npz``, the annotator's answers to one round's queries.

Arrays (``np.savez_compressed``, read with ``allow_pickle=False``):

- ``query_id`` ``(B,)`` int64: every query of the round (queries.csv order);
- ``labeled`` ``(L,)`` int64: pool indices that got an answer;
- ``masks``: ``(L, P, P)`` uint8 0/1 masks on the POOL grid (``task=segment``), or ``(L,)`` uint8
  1 = true / 0 = false (``task=detect``), in ``labeled`` order;
- ``skipped`` ``(S,)`` int64: pool indices answered "skip" (artifact);
- ``meta``: a JSON string ``{"round", "time", "source", "sha256", "skipped_ids", ...}``.

``labeled`` and ``skipped`` split ``query_id``. Files are written atomically (temp file + fsync +
``os.replace``): a process killed at any moment leaves either no ``answers.npz`` (or the old one) or
the complete new one. :func:`read_answers` merges every ingested round: what the loop trains on.
"""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from dualstream.errors import DataError
from dualstream.project.layout import (
    ANSWERS_FILE,
    ProjectInfo,
    answered_rounds,
    atomic_write_bytes,
    remove_stale_tmp,
    round_dir,
)

#: Seconds to sleep right before the final ``os.replace`` of answers.npz (tests kill the writer there).
PAUSE_ENV = "DUALSTREAM_TEST_PAUSE_BEFORE_COMMIT"
_KEYS = ("query_id", "labeled", "masks", "skipped", "meta")


class CorruptAnswersError(DataError):
    """An ``answers.npz`` cannot be read or is inconsistent."""


@dataclass
class RoundAnswers:
    """One round's ``answers.npz``.

    Attributes:
        query_id: ``(B,)`` int64 every query of the round.
        labeled: ``(L,)`` int64 pool indices with an answer.
        masks: ``(L, P, P)`` uint8 0/1 (segment) or ``(L,)`` uint8 0/1 (detect).
        skipped: ``(S,)`` int64 pool indices answered skip.
        meta: ``round``, ``time``, ``source``, ``sha256``, ``skipped_ids`` and whatever the writer added.
    """

    query_id: np.ndarray
    labeled: np.ndarray
    masks: np.ndarray
    skipped: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


class StoredAnswers(NamedTuple):
    """All ingested answers of a project (unpacks as ``labeled, masks, skipped``).

    Attributes:
        labeled: ``(L,)`` int64 pool indices, in round order then each round's order.
        masks: ``(L, P, P)`` uint8 (segment) or ``(L,)`` uint8 (detect).
        skipped: ``(S,)`` int64 pool indices answered skip.
    """

    labeled: np.ndarray
    masks: np.ndarray
    skipped: np.ndarray


def _check(path: Path, query_id: np.ndarray, labeled: np.ndarray, masks: np.ndarray, skipped: np.ndarray) -> None:
    """Raise CorruptAnswersError (or ValueError via the caller) unless the arrays fit together."""
    if masks.shape[:1] != labeled.shape:
        raise CorruptAnswersError(f"{path}: {len(labeled)} labeled items but masks of shape {masks.shape}; rerun dualstream-ingest")
    both = np.concatenate([labeled, skipped])
    if len(np.unique(both)) != len(both) or set(both.tolist()) != set(query_id.tolist()):
        raise CorruptAnswersError(
            f"{path}: labeled ({len(labeled)}) and skipped ({len(skipped)}) do not split the round's {len(query_id)} queries;"
            " rerun dualstream-ingest"
        )
    if masks.size and not np.isin(masks, (0, 1)).all():
        raise CorruptAnswersError(f"{path}: masks hold values other than 0/1; rerun dualstream-ingest")


def write_answers(
    round_path: str | Path,
    query_id: np.ndarray,
    labeled: np.ndarray,
    masks: np.ndarray,
    skipped: np.ndarray,
    meta: dict[str, Any],
) -> Path:
    """Write ``round_path/answers.npz`` atomically; returns its path.

    Args:
        round_path: the ``round_NNN`` folder.
        query_id: ``(B,)`` every query of the round.
        labeled: ``(L,)`` pool indices with an answer; ``masks`` ``(L, P, P)`` or ``(L,)`` 0/1.
        skipped: ``(S,)`` pool indices answered skip; ``labeled`` and ``skipped`` split ``query_id``.
        meta: JSON-serialisable dict (``round``, ``time``, ``source``, ``sha256``, ``skipped_ids``).

    Raises:
        ValueError: the arrays do not fit together (a bug in the caller, not a user error).
    """
    path = Path(round_path) / ANSWERS_FILE
    arrays = {
        "query_id": np.asarray(query_id, dtype=np.int64).reshape(-1),
        "labeled": np.asarray(labeled, dtype=np.int64).reshape(-1),
        "masks": np.asarray(masks).astype(np.uint8),
        "skipped": np.asarray(skipped, dtype=np.int64).reshape(-1),
    }
    try:
        _check(path, arrays["query_id"], arrays["labeled"], arrays["masks"], arrays["skipped"])
    except CorruptAnswersError as err:
        raise ValueError(str(err)) from None
    buf = io.BytesIO()
    np.savez_compressed(buf, meta=np.asarray(json.dumps(meta, sort_keys=True)), **arrays)
    remove_stale_tmp(path)  # leftovers of a killed ingest
    return atomic_write_bytes(path, buf.getvalue(), before_commit=_pause_for_tests)


def _pause_for_tests(tmp: Path) -> None:
    """With ``DUALSTREAM_TEST_PAUSE_BEFORE_COMMIT=SECONDS``: announce on stderr and sleep (tests SIGKILL here)."""
    seconds = os.environ.get(PAUSE_ENV)
    if not seconds:
        return
    import sys

    print(f"{PAUSE_ENV}: {tmp}", file=sys.stderr, flush=True)
    time.sleep(float(seconds))


def read_round_answers(round_path: str | Path) -> RoundAnswers:
    """Read and check one round's ``answers.npz``.

    Raises:
        CorruptAnswersError: missing, unreadable or inconsistent file.
    """
    path = Path(round_path) / ANSWERS_FILE
    fix = "delete it and rerun dualstream-ingest for that round"
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in _KEYS if k not in data.files]
            if missing:
                raise CorruptAnswersError(f"{path}: missing {', '.join(missing)}; {fix}")
            arrays = {k: np.asarray(data[k]) for k in _KEYS}
    except FileNotFoundError:
        raise CorruptAnswersError(f"{path}: no such file; run dualstream-ingest for that round") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise CorruptAnswersError(f"{path}: cannot read ({type(err).__name__}: {err}); {fix}") from err
    try:
        meta = json.loads(str(arrays["meta"]))
    except json.JSONDecodeError as err:
        raise CorruptAnswersError(f"{path}: meta is not JSON ({err}); {fix}") from err
    out = RoundAnswers(
        query_id=arrays["query_id"].astype(np.int64).reshape(-1),
        labeled=arrays["labeled"].astype(np.int64).reshape(-1),
        masks=arrays["masks"].astype(np.uint8),
        skipped=arrays["skipped"].astype(np.int64).reshape(-1),
        meta=meta if isinstance(meta, dict) else {},
    )
    _check(path, out.query_id, out.labeled, out.masks, out.skipped)
    return out


def read_answers(project: str | Path) -> StoredAnswers:
    """Every ingested round's answers merged, in round order: what the loop trains on.

    Returns ``(labeled (L,) int64, masks (L, P, P) uint8 or (L,) uint8 for task=detect, skipped (S,)
    int64)``; empty arrays (with the right trailing shape) before the first ingest.

    Raises:
        NotAProjectError: ``project`` has no project.json.
        CorruptAnswersError: an answers.npz is unreadable, has masks of another shape than the
            project's ``(P, P)``, or answers a pool item another round answered too.
    """
    info = ProjectInfo.read(project)
    tail: tuple[int, ...] = () if info.task == "detect" else (info.patch_size, info.patch_size)
    labeled, masks, skipped = [], [], []
    first_round: dict[int, int] = {}
    for k in answered_rounds(project):
        ans = read_round_answers(round_dir(project, k))
        where = round_dir(project, k) / ANSWERS_FILE
        if ans.masks.shape[1:] != tail:
            raise CorruptAnswersError(
                f"{where}: masks of shape {ans.masks.shape[1:]} but the project's items are {tail} ({info.task});"
                " delete it and rerun dualstream-ingest for that round"
            )
        for q in ans.query_id.tolist():
            if q in first_round:
                raise CorruptAnswersError(
                    f"{where}: query {q} was answered in round {first_round[q]} already; a pool item is queried once,"
                    " so one of the two rounds is stale: delete its answers.npz and rerun dualstream-ingest"
                )
            first_round[q] = k
        labeled.append(ans.labeled)
        masks.append(ans.masks)
        skipped.append(ans.skipped)
    if not labeled:
        return StoredAnswers(np.zeros(0, np.int64), np.zeros((0, *tail), np.uint8), np.zeros(0, np.int64))
    return StoredAnswers(np.concatenate(labeled), np.concatenate(masks), np.concatenate(skipped))
