"""``round_NNN/queries.csv``: the batch put to the annotator, one row per query.

Header ``query_id,z,y,x,size_y,size_x,uncertainty,typicality,utility``; rows ordered by utility,
highest first. ``query_id`` is the pool index of the item; ``z, y, x`` is the box's top-left corner and
``size_y, size_x`` its size, all in INPUT voxels (the pool grid times ``downsample`` in y and x); the
three scores are floats written with ``repr`` precision (``nan`` allowed, e.g. at the cold start).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dualstream.errors import DataError
from dualstream.project.layout import atomic_write_bytes

COLUMNS = ("query_id", "z", "y", "x", "size_y", "size_x", "uncertainty", "typicality", "utility")
INT_COLUMNS = COLUMNS[:6]
FLOAT_COLUMNS = COLUMNS[6:]
HEADER = ",".join(COLUMNS)


@dataclass
class QueryTable:
    """The columns of ``queries.csv`` as ``(B,)`` numpy arrays, in file order.

    Attributes:
        query_id: int64 pool indices (unique).
        z, y, x: int64 top-left corner of each box, input voxels.
        size_y, size_x: int64 box size, input voxels.
        uncertainty, typicality, utility: float64 scores (NaN allowed).
    """

    query_id: np.ndarray
    z: np.ndarray
    y: np.ndarray
    x: np.ndarray
    size_y: np.ndarray
    size_x: np.ndarray
    uncertainty: np.ndarray
    typicality: np.ndarray
    utility: np.ndarray

    def __post_init__(self) -> None:
        for name in INT_COLUMNS:
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.int64).reshape(-1))
        for name in FLOAT_COLUMNS:
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float64).reshape(-1))
        n = len(self.query_id)
        bad = [c for c in COLUMNS if len(getattr(self, c)) != n]
        if bad:
            raise ValueError(f"QueryTable columns {bad} do not have the length of query_id ({n})")

    def __len__(self) -> int:
        return int(len(self.query_id))

    def boxes(self) -> np.ndarray:
        """``(B, 5)`` int64 ``z, y0, x0, y1, x1`` per query (``y1, x1`` end-exclusive), input voxels."""
        return np.stack([self.z, self.y, self.x, self.y + self.size_y, self.x + self.size_x], axis=1)

    def within_boxes(self, volume: np.ndarray) -> np.ndarray:
        """``volume`` ``(Z, Y, X)`` inside this table's boxes, 0 elsewhere: the label volume a scripted
        annotator paints from ground truth (tests, benchmarks)."""
        out = np.zeros_like(volume)
        for z, y, x, sy, sx in zip(self.z, self.y, self.x, self.size_y, self.size_x):
            out[z, y : y + sy, x : x + sx] = volume[z, y : y + sy, x : x + sx]
        return out

    def to_csv(self) -> str:
        """The file's text (header + one line per row, ``\\n`` line ends)."""
        out = io.StringIO()
        out.write(HEADER + "\n")
        ints = [getattr(self, c) for c in INT_COLUMNS]
        floats = [getattr(self, c) for c in FLOAT_COLUMNS]
        for i in range(len(self)):
            cells = [str(int(col[i])) for col in ints] + [repr(float(col[i])) for col in floats]
            out.write(",".join(cells) + "\n")
        return out.getvalue()

    def write(self, path: str | Path) -> Path:
        """Write ``queries.csv`` atomically (temp file + fsync + ``os.replace``); returns the path."""
        return atomic_write_bytes(Path(path), self.to_csv().encode())

    @classmethod
    def read(cls, path: str | Path) -> "QueryTable":
        """Read and check a ``queries.csv``.

        Raises:
            DataError: missing file, wrong header, a cell that is not a number of its column's type,
                a negative corner, a size < 1 or a repeated ``query_id`` (one line naming file and line).
        """
        path = Path(path)
        fix = "it is written by dualstream-suggest; restore it or rerun dualstream-suggest"
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise DataError(f"{path}: no such file; run dualstream-suggest to make the round's queries") from None
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"{path}: cannot read ({type(err).__name__}: {err}); {fix}") from err
        lines = text.splitlines()
        if not lines or lines[0].strip().replace(" ", "") != HEADER:
            got = lines[0].strip() if lines else "an empty file"
            raise DataError(f"{path}:1: header is '{got}', expected '{HEADER}'; {fix}")
        cols: dict[str, list] = {c: [] for c in COLUMNS}
        seen: dict[int, int] = {}
        for lineno, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            cells = [c.strip() for c in line.split(",")]
            if len(cells) != len(COLUMNS):
                raise DataError(f"{path}:{lineno}: {len(cells)} cells, expected {len(COLUMNS)} ({HEADER}); {fix}")
            for name, cell in zip(COLUMNS, cells):
                if name in INT_COLUMNS:
                    try:
                        value: float | int = int(cell)
                    except ValueError:
                        raise DataError(f"{path}:{lineno}: {name} is '{cell}', expected an integer; {fix}") from None
                    if value < (1 if name.startswith("size") else 0):
                        raise DataError(f"{path}:{lineno}: {name} is {value}, expected {'>= 1' if name.startswith('size') else '>= 0'}; {fix}")
                else:
                    try:
                        value = float(cell)
                    except ValueError:
                        raise DataError(f"{path}:{lineno}: {name} is '{cell}', expected a number (or nan); {fix}") from None
                cols[name].append(value)
            qid = int(cols["query_id"][-1])
            if qid in seen:
                raise DataError(f"{path}:{lineno}: query_id {qid} repeats line {seen[qid]}; {fix}")
            seen[qid] = lineno
        return cls(**{c: np.asarray(v) for c, v in cols.items()})


def make_queries(
    indices: np.ndarray,
    origins: np.ndarray,
    factor: int,
    patch_size: int,
    uncertainty: np.ndarray,
    typicality: np.ndarray,
    utility: np.ndarray,
) -> QueryTable:
    """The query table of a batch of pool items, ordered by utility (descending, stable, NaN last).

    Args:
        indices: ``(B,)`` int pool indices (become ``query_id``).
        origins: ``(B, 3)`` int ``z, y, x`` top-left corners on the POOL grid (``PatchPool.origins[indices]``).
        factor: in-plane downsampling ``f`` from input voxels to the pool grid.
        patch_size: ``P``, item side on the pool grid; boxes are ``P * f`` input voxels square.
        uncertainty, typicality, utility: ``(B,)`` float scores (NaN allowed).
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    org = np.asarray(origins, dtype=np.int64).reshape(-1, 3)
    unc, typ, util = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (uncertainty, typicality, utility))
    if not (len(org) == len(unc) == len(typ) == len(util) == len(idx)):
        raise ValueError(
            f"make_queries: indices ({len(idx)},), origins {org.shape}, scores ({len(unc)},), ({len(typ)},), ({len(util)},) must agree"
        )
    if len(np.unique(idx)) != len(idx):
        raise ValueError("make_queries: indices repeat; a batch queries each pool item once")
    f, side = int(factor), int(patch_size) * int(factor)
    # NaN sorts last in argsort; negating keeps a stable descending order among equal utilities.
    order = np.argsort(-util, kind="stable")
    return QueryTable(
        query_id=idx[order],
        z=org[order, 0],
        y=org[order, 1] * f,
        x=org[order, 2] * f,
        size_y=np.full(len(idx), side, dtype=np.int64),
        size_x=np.full(len(idx), side, dtype=np.int64),
        uncertainty=unc[order],
        typicality=typ[order],
        utility=util[order],
    )
