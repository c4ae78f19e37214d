"""What each acquired batch held: the foreground share of its labelled masks, read from run directories.

    python experiments/scripts/batch_foreground.py RUN_DIR [RUN_DIR ...]

Why: a learning curve says *that* a run stalled, not *why*. For the dense task the loop state
(``loop_state.npz``, :mod:`dualstream.state`) keeps every batch put to the annotator and every answered
mask, so whether a strategy kept picking empty background (a cold model whose uncertainty is flat, say)
can be read off the run without rerunning it. One line per run: per batch ``size: fg% / n with fg``,
where ``fg%`` is the mean foreground share of the batch's labelled masks and ``n with fg`` counts the
labelled patches with any foreground; skipped items (artifacts) have no mask and are left out.
Detect runs (0/1 answers) are refused with one line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from dualstream.state import CorruptStateError, LoopState


def batch_foreground(state: LoopState) -> list[dict]:
    """Per proposed batch: ``size``, ``labelled``, ``fg_share`` (mean over its masks; nan if none), ``with_fg``."""
    if state.answers.ndim < 3:
        raise ValueError("the answers are not masks (a detect run?): this script reads dense-task runs")
    by_item = {int(i): a for i, a in zip(state.answer_index, state.answers)}
    rows = []
    for batch in state.proposed:
        masks = [by_item[int(i)] for i in batch if int(i) in by_item]
        shares = [float(np.mean(m > 0)) for m in masks]
        rows.append({
            "size": len(batch), "labelled": len(masks),
            "fg_share": float(np.mean(shares)) if shares else float("nan"),
            "with_fg": sum(s > 0 for s in shares),
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories holding loop_state.npz")
    args = ap.parse_args(argv)
    status = 0
    for run in args.runs:
        try:
            state = LoopState.load(run)
            if state is None:
                raise FileNotFoundError(f"{run}: no loop_state.npz (not a run directory, or the run kept no state)")
            rows = batch_foreground(state)
        except (FileNotFoundError, CorruptStateError, ValueError) as err:
            print(f"batch_foreground: {err}", file=sys.stderr)
            status = 2
            continue
        cells = [f"{r['size']}: {100 * r['fg_share']:.1f}% / {r['with_fg']} of {r['labelled']}" for r in rows]
        print(f"{run}  " + "  |  ".join(cells))
    return status


if __name__ == "__main__":
    sys.exit(main())
