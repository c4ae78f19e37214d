"""``dualstream-ingest DIR LABELS [--skip ID,...]``: store the annotator's answers to the open round.

``task=segment``: LABELS is a label volume of the image's shape, in any format
:func:`dualstream.volume.open_volume` reads (``f.h5:name``, a TIFF, a directory of sections). Only
the boxes of the open round's queries are read; foreground is ``label > label_threshold`` (project.json,
or ``--label-threshold``), brought to the pool grid exactly as :func:`dualstream.patches.read_section`
makes pool labels (block mean by ``downsample``, then ``>= 0.5``). Every query gets its mask (an empty
mask is a valid answer: "nothing here") except those listed in ``--skip`` (artifacts).

``task=detect``: LABELS is a CSV ``query_id,answer`` with answer ``true``/``false``/``skip`` (any
case; ``1``/``0`` too), one line per query of the round (``--skip`` ids may be left out).

Everything is checked before anything is written; answers.npz is written atomically. Ingesting the
very same content again for the latest, already ingested round changes nothing and exits 0.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from dualstream.errors import ConfigError, DataError, DualstreamError, ShapeMismatchError
from dualstream.patches import downsample
from dualstream.project.answers import read_round_answers, write_answers
from dualstream.project.layout import (
    ANSWERS_FILE,
    QUERIES_FILE,
    ProjectInfo,
    now_iso,
    open_round,
    queried_rounds,
    round_dir,
)
from dualstream.project.queries import QueryTable

EXIT_USER_ERROR = 2
_DETECT_VALUES = {"true": "true", "1": "true", "false": "false", "0": "false", "skip": "skip"}


class AlreadyIngestedError(DataError):
    """The latest round has answers already, and LABELS says something else for it."""


@dataclass(frozen=True)
class IngestResult:
    """What one ingest did.

    Attributes:
        round: the round answered.
        path: its ``answers.npz``.
        n_labeled: queries that got a mask (segment) or a true/false (detect).
        n_skipped: queries answered skip.
        foreground: share of foreground pixels over the labelled masks (segment), or share of true
            answers (detect); NaN when nothing was labelled.
        sha256: hash of the answers' content (labels read in the boxes + skip list).
        changed: False when the same content had been ingested already and nothing was written.
    """

    round: int
    path: Path
    n_labeled: int
    n_skipped: int
    foreground: float
    sha256: str
    changed: bool = True

    def summary(self) -> str:
        """A short human summary (a few lines)."""
        if not self.changed:
            return f"round {self.round}: already ingested, nothing changed ({self.path})"
        share = "n/a" if np.isnan(self.foreground) else f"{100 * self.foreground:.1f}%"
        return (
            f"round {self.round}: {self.n_labeled} labelled, {self.n_skipped} skipped,"
            f" foreground {share} of labelled pixels\nwritten to {self.path}"
        )


def _computed(
    info: ProjectInfo, queries: QueryTable, labels_spec: str, skip: set[int], threshold: float, where: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """``(labeled (L,), masks, skipped (S,), sha256)`` for one round's queries, every input checked."""
    if info.task == "detect":
        return _detect_answers(queries, Path(labels_spec), skip, where)
    return _segment_answers(info, queries, labels_spec, skip, threshold, where)


def _segment_answers(
    info: ProjectInfo, queries: QueryTable, spec: str, skip: set[int], threshold: float, where: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    from dualstream import volume as volumes

    vol = volumes.open_volume(spec, voxel_size=info.voxel_size, role="LABELS")
    dtype = np.dtype(vol.data.dtype)
    if dtype.kind not in "biuf":
        raise DataError(
            f"LABELS '{spec}': values of type {dtype} are not numbers; give a label volume of integers, floats"
            " or booleans (0 = background)"
        )
    if vol.shape != info.shape:
        raise ShapeMismatchError(
            f"LABELS '{spec}': shape {vol.shape} (z, y, x) does not match the project's image {tuple(info.shape)}"
            f" ({info.image}, in project.json); give labels covering the image voxel for voxel"
        )
    side, f = info.box_size, info.downsample
    Z, Y, X = info.shape
    todo = [i for i in range(len(queries)) if int(queries.query_id[i]) not in skip]
    for i in todo:  # check every box before reading any
        q, z, y, x = (int(a[i]) for a in (queries.query_id, queries.z, queries.y, queries.x))
        sy, sx = int(queries.size_y[i]), int(queries.size_x[i])
        if (sy, sx) != (side, side):
            raise DataError(
                f"{where}: query {q} has a {sy} x {sx} box but project.json says patch_size * downsample = {side};"
                " the round does not belong to this project: rerun dualstream-suggest"
            )
        if not (0 <= z < Z and y + sy <= Y and x + sx <= X):
            raise DataError(
                f"{where}: query {q}'s box z={z}, y={y}:{y + sy}, x={x}:{x + sx} lies outside the label volume"
                f" {vol.shape} ('{spec}'); the round does not fit this volume: check LABELS or rerun dualstream-suggest"
            )
    stack_type = getattr(volumes, "SectionStack", None)
    whole_sections = stack_type is not None and isinstance(vol.data, stack_type)  # one file per z: read it once
    cached: tuple[int, np.ndarray] | None = None
    digests: dict[int, bytes] = {}
    masks: dict[int, np.ndarray] = {}
    for i in sorted(todo, key=lambda j: int(queries.z[j])):
        q, z, y, x = (int(a[i]) for a in (queries.query_id, queries.z, queries.y, queries.x))
        if whole_sections:
            if cached is None or cached[0] != z:
                cached = (z, vol.section(z))
            box = cached[1][y : y + side, x : x + side]
        elif hasattr(vol, "read_box"):  # reads only the box (chunked formats: only the chunks it touches)
            box = vol.read_box(z, z + 1, y, y + side, x, x + side)[0]
        else:
            box = np.asarray(vol.data[z, y : y + side, x : x + side])
        if box.dtype.kind == "f":
            n_bad = int(box.size - np.count_nonzero(np.isfinite(box)))
            if n_bad:
                raise DataError(
                    f"LABELS '{spec}': query {q}'s box (z={z}, y={y}:{y + side}, x={x}:{x + side}) holds {n_bad} NaN/Inf"
                    " values; labels must be numbers: set them to 0 (background) or a label"
                )
        fg = box > threshold
        digests[i] = hashlib.sha256(np.packbits(fg).tobytes()).digest()
        # Exactly dualstream.patches.read_section's rule, so ingested masks match simulated ones.
        masks[i] = (downsample(fg.astype(np.float32), f) >= 0.5).astype(np.uint8)
    h = hashlib.sha256(b"segment\n")
    for i in todo:  # queries.csv order: the hash does not depend on the reading order
        h.update(f"{int(queries.query_id[i])}:".encode())
        h.update(digests[i])
    h.update(("skip:" + ",".join(str(s) for s in sorted(skip))).encode())
    labeled = queries.query_id[todo].astype(np.int64)
    stack = np.stack([masks[i] for i in todo]) if todo else np.zeros((0, info.patch_size, info.patch_size), np.uint8)
    skipped = np.asarray([q for q in queries.query_id.tolist() if q in skip], dtype=np.int64)
    return labeled, stack, skipped, h.hexdigest()


def _read_detect_csv(path: Path) -> dict[int, tuple[str, int]]:
    """``{query_id: (answer, line)}`` of a ``query_id,answer`` CSV; answer is true/false/skip."""
    fix = "write one line 'query_id,answer' per query, answer true, false or skip"
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise DataError(f"LABELS: no such file '{path}'; for task=detect give a CSV query_id,answer") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"LABELS '{path}': cannot read as a CSV text file ({type(err).__name__}); {fix}") from err
    if not lines or lines[0].strip().replace(" ", "").lower() != "query_id,answer":
        got = lines[0].strip()[:60] if lines else "an empty file"
        raise DataError(f"{path}:1: header is '{got}', expected 'query_id,answer' (task=detect); {fix}")
    out: dict[int, tuple[str, int]] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 2:
            raise DataError(f"{path}:{lineno}: {len(cells)} cells, expected 2 (query_id,answer); {fix}")
        try:
            q = int(cells[0])
        except ValueError:
            raise DataError(f"{path}:{lineno}: query_id '{cells[0]}' is not an integer; {fix}") from None
        answer = _DETECT_VALUES.get(cells[1].lower())
        if answer is None:
            raise DataError(f"{path}:{lineno}: answer '{cells[1]}' for query {q}; expected true, false or skip (or 1/0)")
        if q in out:
            raise DataError(f"{path}:{lineno}: query {q} is answered on line {out[q][1]} already; keep one line per query")
        out[q] = (answer, lineno)
    return out


def _detect_answers(
    queries: QueryTable, path: Path, skip: set[int], where: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    given = _read_detect_csv(path)
    ids = queries.query_id.tolist()
    known = set(ids)
    for q, (_, lineno) in given.items():
        if q not in known:
            raise DataError(f"{path}:{lineno}: query {q} is not in this round ({where}); answer only that file's query_id values")
    final: list[tuple[int, str]] = []
    for q in ids:
        answer = given.get(q, (None, 0))[0]
        if q in skip:
            if answer not in (None, "skip"):
                raise DataError(f"{path}:{given[q][1]}: query {q} is answered '{answer}' here but listed in --skip; keep one")
            answer = "skip"
        if answer is None:
            raise DataError(f"{path}: no answer for query {q} of {where}; add a line '{q},true' (or false, or skip)")
        final.append((q, answer))
    h = hashlib.sha256(b"detect\n")
    h.update("\n".join(f"{q}:{a}" for q, a in final).encode())
    labeled = np.asarray([q for q, a in final if a != "skip"], dtype=np.int64)
    verdict = np.asarray([a == "true" for q, a in final if a != "skip"], dtype=np.uint8)
    skipped = np.asarray([q for q, a in final if a == "skip"], dtype=np.int64)
    return labeled, verdict, skipped, h.hexdigest()


def ingest(
    project: str | Path, labels_spec: str | Path, skip_ids: Iterable[int] = (), label_threshold: float | None = None
) -> IngestResult:
    """Read the annotator's answers to the open round from ``labels_spec`` and store them.

    Args:
        project: the project directory (holds project.json).
        labels_spec: a label volume spec (segment) or a ``query_id,answer`` CSV (detect).
        skip_ids: query ids answered skip (artifacts); each must be a query of the open round.
        label_threshold: foreground is ``label > label_threshold``; ``None`` takes project.json's.

    Returns:
        An :class:`IngestResult`; ``changed=False`` when the latest round was ingested from the same
        content already (nothing written).

    Raises:
        NotAProjectError: no project.json.
        AlreadyIngestedError: no open round and LABELS differs from what the latest round holds.
        ShapeMismatchError, DataError, ConfigError: bad LABELS, --skip or round files (nothing written).
    """
    project = Path(project)
    info = ProjectInfo.read(project)
    threshold = info.label_threshold if label_threshold is None else float(label_threshold)
    if not np.isfinite(threshold):
        raise ConfigError(f"--label-threshold: expected a finite number, got {threshold}")
    skip = {int(s) for s in skip_ids}
    k = open_round(project)
    done = None
    if k is None:
        rounds = queried_rounds(project)
        if not rounds:
            raise DataError(f"{project}: no round has queries yet; run dualstream-suggest project={project} first")
        k = rounds[-1]
        done = read_round_answers(round_dir(project, k))
    folder = round_dir(project, k)
    queries = QueryTable.read(folder / QUERIES_FILE)
    unknown = sorted(skip - set(queries.query_id.tolist()))
    if unknown:
        raise DataError(
            f"--skip: query id {', '.join(map(str, unknown))} not in round {k} ({folder / QUERIES_FILE});"
            " use that file's query_id values"
        )
    spec = str(labels_spec)
    labeled, masks, skipped, sha = _computed(info, queries, spec, skip, threshold, folder / QUERIES_FILE)
    n_fg = float(masks.mean()) if masks.size else float("nan")
    if done is not None:
        if done.meta.get("sha256") == sha:
            return IngestResult(k, folder / ANSWERS_FILE, len(labeled), len(skipped), n_fg, sha, changed=False)
        raise AlreadyIngestedError(
            f"round {k} was already ingested from {done.meta.get('source', '?')} on {done.meta.get('time', '?')}"
            f" and '{spec}' (with --skip {','.join(map(str, sorted(skip))) or 'none'}) gives other answers;"
            f" run dualstream-suggest project={project} for the next batch"
            f" (or delete {folder / ANSWERS_FILE} to ingest round {k} again)"
        )
    meta = {
        "round": k,
        "time": now_iso(),
        "source": spec,
        "sha256": sha,
        "skipped_ids": sorted(int(s) for s in skipped),
        "task": info.task,
        "label_threshold": threshold,
    }
    try:
        path = write_answers(folder, queries.query_id, labeled, masks, skipped, meta)
    except OSError as err:
        raise DataError(f"{folder / ANSWERS_FILE}: cannot write ({err.strerror or err}); check permissions and free space") from err
    return IngestResult(k, path, len(labeled), len(skipped), n_fg, sha, changed=True)


def _parse_skip(values: list[str]) -> list[int]:
    out = []
    for value in values:
        for cell in value.split(","):
            if not cell.strip():
                continue
            try:
                out.append(int(cell))
            except ValueError:
                raise ConfigError(f"--skip: '{cell.strip()}' is not a query id; give integers from queries.csv, e.g. --skip 12,40") from None
    return out


def main(argv: list[str] | None = None) -> int:
    """Console script ``dualstream-ingest``; returns 0, exits 2 on a user error (one line on stderr)."""
    parser = argparse.ArgumentParser(
        prog="dualstream-ingest",
        description="Store the answers to the open round of a dualstream project (see dualstream-suggest).",
    )
    parser.add_argument("project", metavar="DIR", help="the project directory (holds project.json)")
    parser.add_argument(
        "labels",
        metavar="LABELS",
        help="label volume of the image's shape (f.h5:name, .tif, directory of sections); task=detect: CSV query_id,answer",
    )
    parser.add_argument("--skip", action="append", default=[], metavar="ID,...", help="query ids to answer skip (artifacts)")
    parser.add_argument(
        "--label-threshold", type=float, default=None, metavar="T", help="foreground is label > T (default: project.json's)"
    )
    args = parser.parse_args(argv)
    try:
        result = ingest(args.project, args.labels, _parse_skip(args.skip), args.label_threshold)
    except DualstreamError as err:
        print(f"dualstream-ingest: error: {' '.join(str(err).split())}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
