"""The simulated active-learning loop: it orchestrates, the streams and strategies compute.

Per round ``r = 0 .. rounds``: train the task model on the labels gathered so far, score it on the
test set, score pool uncertainty, record, then (except after the last round) acquire a batch and ask
the annotator. The initial set is drawn from the seed alone, so every strategy starts from the same
labels for a given seed and curves are paired (``loop.cold_start=random``); a lab without labels
starts from the data stream alone instead (``loop.cold_start=typiclust``, or any strategy that
needs no task model).

The same loop serves a simulated annotator and a human: a human's answers arrive later
(:class:`dualstream.oracle.FilesAnnotator` raises :class:`AnswersPending`), so the loop stops right
after proposing a batch, with its state saved, and goes on from there when run again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Mapping, Protocol

import numpy as np
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from dualstream.acquisition import PoolView, Selection, acquire
from dualstream.errors import ConfigError, EmptyPoolError
from dualstream.oracle import Annotator, AnswersPending
from dualstream.results import RoundRecord
from dualstream.state import LoopState, pending_items
from dualstream.streams.data_stream import DataStream

log = logging.getLogger(__name__)


class TaskModel(Protocol):
    """What the loop needs of the task stream (see :class:`dualstream.streams.task_stream.TaskStream`).

    ``fit`` takes the labelled items and their answers (masks for the dense task, True/False for
    proposals); ``score`` is the test metric; ``pool_uncertainty`` is ``(N,)``. Optional:
    ``metrics() -> dict[str, float]`` adds task-specific numbers to every round's record, and
    ``pool_extras() -> dict[str, ndarray]`` (arrays computed with the last ``pool_uncertainty``:
    margin, BALD, task embedding, gradient embedding...) reaches the acquisition as ``PoolView.extras``.
    """

    def fit(self, images: np.ndarray, masks: np.ndarray, seed: int) -> float: ...

    def score(self) -> float: ...

    def pool_uncertainty(self) -> np.ndarray: ...


@dataclass(frozen=True)
class LoopSettings:
    """The labelling budget of a run, as cumulative budgets per round.

    Either ``initial`` random queries then ``rounds`` batches of ``batch`` queries (budgets
    ``initial, initial + batch, ...``), or an explicit ``schedule`` of cumulative budgets
    (``loop.schedule=[4,8,16,32,64,128]``: the first is the shared random initial set, each later
    round acquires the difference). A schedule wins over initial/batch/rounds.
    """

    initial: int
    batch: int
    rounds: int
    schedule: tuple[int, ...] | None = None

    @classmethod
    def from_config(cls, loop_cfg: Mapping[str, Any], pool_size: int | None = None) -> "LoopSettings":
        """``loop`` config -> settings (``schedule`` null: initial/batch/rounds).

        ``rounds`` null: as many rounds as a pool of ``pool_size`` items holds (a lab's open-ended project).
        """
        schedule = loop_cfg.get("schedule")
        if schedule is not None:
            try:
                budgets = tuple(int(b) for b in schedule)
            except (TypeError, ValueError):
                raise ConfigError(f"loop.schedule must be a list of integers (cumulative budgets, e.g. [4,8,16,32]), got {schedule!r}") from None
            return cls(budgets[0] if budgets else 0, 0, max(len(budgets) - 1, 0), budgets)
        try:
            if loop_cfg.get("rounds") is None and pool_size is not None:
                initial, batch = int(loop_cfg["initial"]), int(loop_cfg["batch"])
                return cls(initial, batch, max((pool_size - initial) // max(batch, 1), 0))
            return cls(int(loop_cfg["initial"]), int(loop_cfg["batch"]), int(loop_cfg["rounds"]))
        except (TypeError, ValueError):
            raise ConfigError(
                f"loop.initial, loop.batch and loop.rounds must be integers, got {loop_cfg.get('initial')!r},"
                f" {loop_cfg.get('batch')!r}, {loop_cfg.get('rounds')!r}"
            ) from None

    @property
    def budgets(self) -> list[int]:
        """Cumulative budget after each round's queries: ``budgets[0]`` is the initial set."""
        if self.schedule is not None:
            return list(self.schedule)
        return [self.initial + self.batch * r for r in range(self.rounds + 1)]

    def batch_at(self, round_index: int) -> int:
        """Queries acquired after round ``round_index`` (to reach ``budgets[round_index + 1]``)."""
        b = self.budgets
        return b[round_index + 1] - b[round_index]

    @property
    def n_rounds(self) -> int:
        """Acquisition rounds (the schedule's length minus the initial set, when a schedule is given)."""
        return len(self.budgets) - 1

    @property
    def total(self) -> int:
        return self.budgets[-1]

    def check(self, pool_size: int) -> None:
        if self.schedule is not None:
            b = list(self.schedule)
            if not b or b[0] < 1 or any(y <= x for x, y in zip(b, b[1:])):
                raise ConfigError(
                    f"loop.schedule must be strictly increasing cumulative budgets starting at >= 1 (e.g. [4,8,16,32]), got {b}"
                )
        elif self.initial < 1 or self.batch < 1 or self.rounds < 0:
            raise ConfigError(
                f"loop.initial and loop.batch must be >= 1 and loop.rounds >= 0, got {self.initial}, {self.batch}, {self.rounds}"
            )
        if self.total > pool_size:
            asked = (
                f"loop.schedule ends at {self.total}" if self.schedule is not None
                else f"the loop asks for {self.total} queries (loop.initial={self.initial} + loop.rounds={self.rounds} x loop.batch={self.batch})"
            )
            raise ConfigError(f"{asked} but the pool has only {pool_size} items; lower the budget or use more data")


ProposeHook = Callable[["ActiveLearningLoop", int, Selection, PoolView], None]
"""``hook(loop, batch_number, selection, view)``: called with every batch put to the annotator (``0`` is
the initial set; ``selection.indices`` in the order chosen, ``selection.utilities`` ``(N,)``; ``view``
what the strategy saw, uncertainty NaN before any model)."""


def stream_correlation(uncertainty: np.ndarray, typicality: np.ndarray) -> float:
    """Spearman rank correlation of the two streams (NaN if either is constant or too short)."""
    if len(uncertainty) < 3 or np.ptp(uncertainty) == 0 or np.ptp(typicality) == 0:
        return float("nan")
    return float(spearmanr(uncertainty, typicality).statistic)


def cold_start_selection(
    name: str, view: PoolView, k: int, rng: np.random.Generator, screen: Mapping[str, Any] | None = None
) -> Selection:
    """The first batch of a run without labels: strategy ``name`` on the data stream alone.

    No task model exists yet, so strategies that read uncertainty see a constant. With ``screen``
    (keyword arguments of :func:`~dualstream.acquisition.core.quality_screen`: ``screen_z``,
    ``screen_embedding``, ...) the items the quality screen flags are excluded from the pick
    (``PoolView.excluded``) but still count for the embedding's structure (k-means, densities), so a
    lab's first batch does not go to blank, saturated or folded tiles, nor to a whole corrupted
    section, which a cluster-covering strategy such as TypiClust would otherwise treat as one more
    cluster to cover. When the screen leaves fewer than ``k`` candidates it is dropped (with a warning).

    Args:
        view: ``(N, ...)`` arrays of the pool (``extras["pixel_stats"]`` for the pixel screen,
            ``extras["screen_embedding"]`` for a second encoder's embedding screen).

    Returns:
        The ``(B,)`` selection; its ``(N,)`` utilities are NaN on excluded items.
    """
    from dualstream.acquisition.core import quality_screen

    n = len(view)
    blind = PoolView(view.embedding, view.typicality, np.zeros(n), view.queried, view.extras)
    excluded = quality_screen(view, **dict(screen))[0] if screen else None
    if excluded is not None:
        screened = replace(blind, excluded=excluded & ~view.queried)
        left = len(screened.candidates)
        if left < k:
            log.warning("cold start: the quality screen leaves %d items for a batch of %d; not screening", left, k)
        else:
            log.info("cold start: the quality screen rules out %d of %d items", int(screened.excluded.sum()), n)
            blind = screened
    return acquire(name, blind, k, rng)


class ActiveLearningLoop:
    """Runs one acquisition strategy from the initial set to the last round.

    Args:
        pool_images: ``(N, P, P)`` float32 candidates (an array, or a pool store read lazily: the loop
            reads the labelled items only).
        data_stream: the frozen encoder's embedding and typicality of the pool.
        task: the task model (retrained each round).
        annotator: answers queries (masks or skip).
        acquisition: strategy name in the registry; ``acquisition_params`` its keyword arguments.
        on_round: called with each :class:`RoundRecord` as soon as it is measured (results file, logger).
        static_extras: ``(N, ...)`` arrays that never change between rounds (e.g. ``pixel_stats``), handed
            to every acquisition in ``PoolView.extras`` beside the task model's per-round extras.
        cold_start: ``random`` (the seed's random initial set, paired across strategies) or the name of a
            strategy that needs no task model (``typiclust``, ``probcover``, ``coreset``, ``density``):
            it picks the initial set from the data stream alone.
        cold_screen: keyword arguments of :func:`~dualstream.acquisition.core.quality_screen` for a
            cold start that is not random (``None``: no screen); see :func:`cold_start_selection`.
        on_propose: see :data:`ProposeHook` (a lab's query list and plots).
        on_wait: called when the annotator has not answered a batch yet (save the state); the run stops.

    Resuming: :meth:`snapshot` (called from ``on_round``) captures the state after a round,
    :meth:`restore` puts it into a fresh loop before :meth:`run`, which then goes on from the next
    round. Each round depends only on the labels, the round's seed and the acquisition rng, all in the
    state, so a resumed run gives the records of an uninterrupted one.
    """

    def __init__(
        self,
        pool_images: np.ndarray,
        data_stream: DataStream,
        task: TaskModel,
        annotator: Annotator,
        acquisition: str,
        acquisition_params: Mapping[str, Any],
        settings: LoopSettings,
        seed: int,
        on_round: Callable[[RoundRecord], None] | None = None,
        progress: bool = True,
        static_extras: Mapping[str, np.ndarray] | None = None,
        cold_start: str = "random",
        on_propose: ProposeHook | None = None,
        on_wait: Callable[[], None] | None = None,
        cold_screen: Mapping[str, Any] | None = None,
    ):
        self.images = pool_images
        self.static_extras = dict(static_extras or {})
        self.stream = data_stream
        self.task = task
        self.annotator = annotator
        self.acquisition = acquisition
        self.params = dict(acquisition_params)
        self.settings = settings
        self.seed = seed
        self.on_round = on_round or (lambda record: None)
        self.on_propose = on_propose
        self.on_wait = on_wait or (lambda: None)
        self.cold_start = cold_start
        self.cold_screen = dict(cold_screen) if cold_screen is not None else None
        self.progress = progress
        n = len(pool_images)
        settings.check(n)
        self.queried = np.zeros(n, dtype=bool)
        self.labeled = np.zeros(n, dtype=bool)
        self.skipped = np.zeros(n, dtype=bool)
        # Answers of labelled items only (never an (N, ...) array: a pool on disk may not fit in memory).
        self.answers: dict[int, np.ndarray] = {}
        self._no_answers: np.ndarray | None = None  # (0, ...) shaped and typed like the annotator's answers
        self.n_skipped = 0
        self.proposed: list[np.ndarray] = []  # every batch put to the annotator, in order (initial set first)
        self.records: list[RoundRecord] = []
        self.round = -1  # last round measured
        self.rng: np.random.Generator | None = None  # the acquisition rng, advanced every round

    def _ask(self, indices: np.ndarray) -> None:
        answers = self.annotator.annotate(indices)
        if self._no_answers is None:
            self._no_answers = np.zeros((0, *answers.masks.shape[1:]), dtype=answers.masks.dtype)
        self.queried[indices] = True
        self.labeled[answers.labeled] = True
        self.skipped[answers.skipped] = True
        for i, mask in zip(np.asarray(answers.labeled, dtype=np.int64), answers.masks):
            self.answers[int(i)] = np.array(mask, dtype=self._no_answers.dtype)
        self.n_skipped += len(answers.skipped)

    def answers_of(self, indices: np.ndarray) -> np.ndarray:
        """``(L, ...)`` answers of labelled items ``indices`` (masks, or ``(L,)`` verdicts), in that order."""
        if len(indices) == 0:
            return self._no_answers.copy() if self._no_answers is not None else np.zeros(0, dtype=np.uint8)
        return np.stack([self.answers[int(i)] for i in indices])

    def _propose_and_ask(self, selection: Selection, view: PoolView) -> bool:
        """Put a batch to the annotator; False when it has not answered yet (the batch stays pending)."""
        self.proposed.append(np.asarray(selection.indices, dtype=np.int64).copy())
        if self.on_propose is not None:
            self.on_propose(self, len(self.proposed) - 1, selection, view)
        return self._ask_or_wait(selection.indices)

    def _ask_or_wait(self, indices: np.ndarray) -> bool:
        try:
            self._ask(indices)
        except AnswersPending as waiting:
            log.info("%s", waiting)
            return False
        return True

    @property
    def pending(self) -> np.ndarray:
        """``(P,)`` int64 items of the last proposed batch without an answer yet."""
        return pending_items(self.proposed, self.queried)

    def _initial_selection(self) -> tuple[Selection, PoolView]:
        """The first batch: the seed's random draw, or a label-free strategy on the data stream."""
        n, k = len(self.images), self.settings.budgets[0]
        rng = np.random.default_rng([self.seed, 0])
        nan = np.full(n, np.nan)
        view = PoolView(self.stream.embedding, self.stream.typicality, nan, self.queried.copy(), dict(self.static_extras))
        if self.cold_start == "random":
            return Selection(rng.choice(n, k, replace=False).astype(np.int64), nan.copy()), view
        return cold_start_selection(self.cold_start, view, k, rng, self.cold_screen), view

    def snapshot(self, config_hash: str = "", pool: str = "") -> LoopState:
        """The loop's state now (after the last round's queries were answered), for :meth:`LoopState.save`."""
        idx = np.flatnonzero(self.labeled)
        answers = self.answers_of(idx)
        return LoopState(
            config_hash=config_hash, pool=pool, n_rounds=self.settings.n_rounds, round=self.round,
            queried=self.queried.copy(), labeled=self.labeled.copy(), skipped=self.skipped.copy(),
            answer_index=idx, answers=answers.copy(), proposed=[b.copy() for b in self.proposed],
            rng_state=self.rng.bit_generator.state if self.rng is not None else {},
            records=[asdict(r) for r in self.records],
        )

    def restore(self, state: LoopState, check_rounds: bool = True) -> None:
        """Continue from ``state`` (written by :meth:`snapshot` for this pool and settings) at the next :meth:`run`.

        ``check_rounds=False`` (a lab's open-ended project) lets the batch size, hence the number of
        rounds, change between calls.
        """
        n = len(self.images)
        if len(state.queried) != n or (check_rounds and state.n_rounds != self.settings.n_rounds):
            raise ConfigError(
                f"the loop state is for {len(state.queried)} items and {state.n_rounds} rounds, this run has {n} and"
                f" {self.settings.n_rounds}; start over in a new hydra.run.dir"
            )
        self.queried[:], self.labeled[:], self.skipped[:] = state.queried, state.labeled, state.skipped
        self.answers = {int(i): np.array(a) for i, a in zip(state.answer_index, state.answers)}
        # Nothing answered yet (a lab's cold start): the first answers fix the answers' shape.
        self._no_answers = np.zeros((0, *state.answers.shape[1:]), dtype=state.answers.dtype) if len(state.answer_index) else None
        self.n_skipped = int(state.skipped.sum())
        self.proposed = [np.asarray(b, dtype=np.int64).copy() for b in state.proposed]
        self.records = [RoundRecord(**r) for r in state.records]
        self.round = state.round
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state.rng_state

    def run(self) -> list[RoundRecord]:
        """Run the remaining rounds (all of them unless :meth:`restore` was called); return every round's record."""
        s = self.settings
        if not self.proposed:  # a fresh run
            self.rng = np.random.default_rng([self.seed, 1])
            # The initial set depends on the seed only, so strategies are compared on paired curves.
            if not self._propose_and_ask(*self._initial_selection()):
                self.on_wait()
                return list(self.records)
        elif len(self.pending):  # resumed: a batch proposed but not answered yet is put to the annotator again
            if not self._ask_or_wait(self.pending):
                self.on_wait()
                return list(self.records)
        assert self.rng is not None
        rng = self.rng
        start_round = self.round + 1
        bar = tqdm(
            range(start_round, s.n_rounds + 1), initial=start_round, total=s.n_rounds + 1,
            desc=f"{self.acquisition} seed={self.seed}", disable=not self.progress, leave=True,
        )
        for r in bar:
            start = time.perf_counter()
            if not self.labeled.any():
                raise EmptyPoolError(
                    f"all {int(self.queried.sum())} queries so far were artifacts (skipped), nothing to train on;"
                    " raise loop.initial or check data.ignore"
                )
            idx = np.flatnonzero(self.labeled)
            images, masks = self.images[idx], self.answers_of(idx)  # the labelled items only
            if hasattr(self.stream, "update"):  # a fine-tuned (not frozen) data stream sees the labels too
                self.stream.update(images, masks, seed=self.seed * 1000 + r)
            loss = self.task.fit(images, masks, seed=self.seed * 1000 + r)
            score = self.task.score()
            uncertainty = self.task.pool_uncertainty()
            free = ~self.queried
            corr = stream_correlation(uncertainty[free], self.stream.typicality[free])
            select_seconds = 0.0
            waiting = False
            record = RoundRecord(
                round=r,
                n_labeled=int(self.labeled.sum()),
                n_queried=int(self.queried.sum()),
                n_skipped=self.n_skipped,
                score=score,
                stream_correlation=corr,
                seconds=0.0,
                train_loss=loss,
                metrics=dict(self.task.metrics()) if hasattr(self.task, "metrics") else {},
            )
            if r < s.n_rounds:
                extras = {**self.static_extras, **(self.task.pool_extras() if hasattr(self.task, "pool_extras") else {})}
                view = PoolView(self.stream.embedding, self.stream.typicality, uncertainty, self.queried.copy(), extras)
                t0 = time.perf_counter()
                selection = acquire(self.acquisition, view, s.batch_at(r), rng, **self.params)
                select_seconds = time.perf_counter() - t0
                waiting = not self._propose_and_ask(selection, view)
            record.selection_seconds = select_seconds
            record.seconds = time.perf_counter() - start
            self.records.append(record)
            self.round = r
            bar.set_postfix(score=f"{score:.3f}", labeled=record.n_labeled)
            log.info(
                "round %d: %d labelled, %d queried (%d skipped), score %.4f, stream corr %.3f, %.1fs",
                r, record.n_labeled, record.n_queried, record.n_skipped, score, corr, record.seconds,
            )
            self.on_round(record)  # saves the state, with a batch still waiting for answers if so
            if waiting:
                break
        bar.close()
        return list(self.records)
