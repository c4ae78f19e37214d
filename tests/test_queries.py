"""Pins round_NNN/queries.csv: the order of a batch, input-voxel boxes, exact round trip, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from dualstream.errors import DataError
from dualstream.project.queries import HEADER, QueryTable, make_queries


def _table() -> QueryTable:
    return make_queries(
        indices=np.array([4, 9, 2, 7, 5]),
        origins=np.array([[0, 1, 2], [1, 0, 0], [2, 3, 1], [0, 0, 5], [3, 2, 2]]),
        factor=3,
        patch_size=4,
        uncertainty=np.array([0.1, np.nan, 1 / 3, 0.2, 0.0]),
        typicality=np.array([1.0, 2.0, 3.0, 4.0, 5.0]),
        utility=np.array([0.5, np.nan, 0.9, 0.5, 1e-17]),
    )


def test_make_queries_orders_by_utility_and_scales_boxes():
    t = _table()
    # descending; ties keep the given order (4 before 7); NaN last
    assert t.query_id.tolist() == [2, 4, 7, 5, 9]
    assert t.z.tolist() == [2, 0, 0, 3, 1]
    assert t.y.tolist() == [9, 3, 0, 6, 0] and t.x.tolist() == [3, 6, 15, 6, 0]  # pool grid x 3, z unchanged
    assert (t.size_y == 12).all() and (t.size_x == 12).all()
    assert t.typicality.tolist() == [3.0, 1.0, 4.0, 5.0, 2.0]  # scores travel with their item
    np.testing.assert_array_equal(t.boxes()[0], [2, 9, 3, 21, 15])


def test_make_queries_rejects_mismatched_or_repeated_items():
    with pytest.raises(ValueError, match="must agree"):
        make_queries([1, 2], [[0, 0, 0]], 1, 4, [0, 0], [0, 0], [0, 0])
    with pytest.raises(ValueError, match="repeat"):
        make_queries([1, 1], [[0, 0, 0], [0, 1, 1]], 1, 4, [0, 0], [0, 0], [0, 0])


def test_round_trip_is_exact(tmp_path):
    t = _table()
    path = t.write(tmp_path / "queries.csv")
    text = path.read_text()
    assert text.splitlines()[0] == HEADER and "0.3333333333333333" in text and "nan" in text
    back = QueryTable.read(path)
    for name in ("query_id", "z", "y", "x", "size_y", "size_x"):
        np.testing.assert_array_equal(getattr(back, name), getattr(t, name))
        assert getattr(back, name).dtype == np.int64
    for name in ("uncertainty", "typicality", "utility"):
        np.testing.assert_array_equal(getattr(back, name), getattr(t, name))  # NaN == NaN here; bitwise floats
    assert not list(tmp_path.glob(".queries.csv.tmp-*"))  # the atomic write leaves no temp file


def test_empty_batch_round_trips(tmp_path):
    t = make_queries([], np.zeros((0, 3)), 2, 4, [], [], [])
    back = QueryTable.read(t.write(tmp_path / "q.csv"))
    assert len(back) == 0 and back.query_id.dtype == np.int64


@pytest.mark.parametrize(
    "body, needle",
    [
        ("1,0,0,0,8,8,0.1,0.2,0.3\n2,0,zero,0,8,8,0.1,0.2,0.3\n", "q.csv:3: y is 'zero', expected an integer"),
        ("1,0,0,0,8,8,0.1,0.2,abc\n", "q.csv:2: utility is 'abc', expected a number"),
        ("1,0,0,0,8,8,0.1,0.2\n", "q.csv:2: 8 cells, expected 9"),
        ("1,0,-1,0,8,8,0.1,0.2,0.3\n", "q.csv:2: y is -1, expected >= 0"),
        ("1,0,0,0,0,8,0.1,0.2,0.3\n", "q.csv:2: size_y is 0, expected >= 1"),
        ("1,0,0,0,8,8,0.1,0.2,0.3\n1,1,0,0,8,8,0.1,0.2,0.3\n", "q.csv:3: query_id 1 repeats line 2"),
    ],
)
def test_bad_content_names_file_and_line(tmp_path, body, needle):
    path = tmp_path / "q.csv"
    path.write_text(HEADER + "\n" + body)
    with pytest.raises(DataError) as exc:
        QueryTable.read(path)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_bad_header_and_missing_file(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text("id,z,y,x\n1,0,0,0\n")
    with pytest.raises(DataError, match="q.csv:1: header is 'id,z,y,x'"):
        QueryTable.read(path)
    with pytest.raises(DataError, match="no such file"):
        QueryTable.read(tmp_path / "none.csv")
