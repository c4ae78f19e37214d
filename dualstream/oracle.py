"""The annotator: given pool indices, return masks, or "skip" for artifacts.

:class:`SimulatedAnnotator` reads ground truth; a human annotator plugs in through the same
:class:`Annotator` protocol (return indices' answers, never touch the loop's state):
:class:`FilesAnnotator` returns what a lab has ingested (``dualstream-ingest``) and raises
:class:`AnswersPending` for a batch not answered yet, which stops the loop until the next call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from dualstream.errors import DualstreamError


@dataclass(frozen=True)
class Answers:
    """What the annotator said about one query batch.

    Attributes:
        labeled: ``(L,)`` int64 pool indices that got a mask.
        masks: ``(L, P, P)`` uint8 masks for ``labeled``, in the same order.
        skipped: ``(S,)`` int64 pool indices answered "skip" (artifact: spends budget, no label).
    """

    labeled: np.ndarray
    masks: np.ndarray
    skipped: np.ndarray


class Annotator(Protocol):
    def annotate(self, indices: np.ndarray) -> Answers: ...


class SimulatedAnnotator:
    """Answers from ground truth; a patch at least ``threshold`` inside the ignore mask is skipped.

    Args:
        labels: ``(N, P, P)`` ground-truth masks of the pool.
        ignore_share: ``(N,)`` share of each patch in the ignore (artifact) mask.
        threshold: share at which a patch counts as an artifact (0.5: mostly artifact).
    """

    def __init__(self, labels: np.ndarray, ignore_share: np.ndarray, threshold: float = 0.5):
        self.labels = labels
        self.artifact = np.asarray(ignore_share) >= threshold

    def annotate(self, indices: np.ndarray) -> Answers:
        idx = np.asarray(indices, dtype=np.int64)
        skip = self.artifact[idx]
        labeled = idx[~skip]
        return Answers(labeled=labeled, masks=self.labels[labeled], skipped=idx[skip])


class ProposalAnnotator(SimulatedAnnotator):
    """Answers proposal queries (``task=detect``) True / False from the matching, or "skip" on artifacts.

    Same semantics as :class:`SimulatedAnnotator`; only the answers differ: ``Answers.masks`` is
    ``(L,)`` uint8, 1 = True (the proposal is a real object), 0 = False.

    Args:
        truth: ``(N,)`` 0/1 ground-truth verdict of each pool proposal.
        ignore_share: ``(N,)`` share of each proposal inside the ignore (artifact) mask.
        threshold: share at which a proposal counts as an artifact and is skipped.
    """

    def __init__(self, truth: np.ndarray, ignore_share: np.ndarray, threshold: float = 0.5):
        truth = np.asarray(truth)
        if truth.ndim != 1 or len(truth) != len(ignore_share) or not np.isin(truth, (0, 1)).all():
            raise ValueError(f"truth must be (N,) of 0/1 matching ignore_share ({len(ignore_share)},), got shape {truth.shape}")
        super().__init__(truth.astype(np.uint8), ignore_share, threshold)


class AnswersPending(DualstreamError):
    """The annotator has not answered (some of) a batch yet: the loop saves its state and stops."""


class FilesAnnotator:
    """Answers a lab ingested into its project (``annotator=files``; see :mod:`dualstream.project`).

    Args:
        read: returns every answer ingested so far: ``(labeled (L,) int64, masks (L, ...) uint8,
            skipped (S,) int64)`` (re-read at every call, so answers ingested meanwhile are seen).
        where: the project, for messages.
    """

    def __init__(self, read: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]], where: str = ""):
        self.read = read
        self.where = where

    def annotate(self, indices: np.ndarray) -> Answers:
        idx = np.asarray(indices, dtype=np.int64)
        labeled, masks, skipped = self.read()
        labeled, skipped = np.asarray(labeled, dtype=np.int64), np.asarray(skipped, dtype=np.int64)
        missing = idx[~(np.isin(idx, labeled) | np.isin(idx, skipped))]
        if len(missing):
            raise AnswersPending(
                f"{len(missing)} of {len(idx)} queries have no answer yet in {self.where or 'the project'};"
                " annotate them and run dualstream-ingest"
            )
        # Answers in the order asked, as the simulated annotator gives them.
        pos = {int(i): k for k, i in enumerate(labeled)}
        got = np.array([i for i in idx if int(i) in pos], dtype=np.int64)
        chosen = masks[[pos[int(i)] for i in got]] if len(got) else masks[:0]
        return Answers(labeled=got, masks=chosen, skipped=idx[np.isin(idx, skipped)])
