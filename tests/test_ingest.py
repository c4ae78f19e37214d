"""Pins dualstream-ingest and the project's label store: masks made exactly like the simulated loop's,
--skip, idempotent re-ingest, every bad input refused before anything is written, crash safety."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from PIL import Image

from dualstream.errors import DataError
from dualstream.patches import read_section
from dualstream.project.answers import PAUSE_ENV, read_answers, read_round_answers
from dualstream.project.ingest import ingest, main
from dualstream.project.layout import ANSWERS_FILE, QUERIES_FILE, NotAProjectError, ProjectInfo, open_round, round_dir
from dualstream.project.queries import QueryTable, make_queries
from dualstream.volume import Volume

REPO = Path(__file__).resolve().parents[1]
SHAPE = (3, 20, 28)  # input voxels; pool grid (3, 10, 14) with F = 2
F, P = 2, 4  # boxes are 8 x 8 input voxels
ORIGINS = np.array([[0, 0, 0], [1, 2, 3], [2, 6, 10], [0, 4, 5]])  # pool grid
IDS = np.array([7, 11, 3, 20])


def _labels(seed: int = 0) -> np.ndarray:
    """Integer labels 0..4 with a mix of empty, partial and full 2x2 blocks."""
    rng = np.random.default_rng(seed)
    return ((rng.random(SHAPE) > 0.55) * rng.integers(1, 5, SHAPE)).astype(np.uint16)


def _project(root: Path, task: str = "segment", threshold: float = 0.0) -> Path:
    project = root / "proj"
    ProjectInfo(
        image="img.h5:raw", shape=SHAPE, voxel_size=(30, 4, 4), downsample=F, patch_size=P, label_threshold=threshold, task=task
    ).write(project)
    _round(project, 0, IDS, ORIGINS)
    return project


def _round(project: Path, k: int, ids, origins) -> QueryTable:
    table = make_queries(ids, origins, F, P, np.full(len(ids), np.nan), np.zeros(len(ids)), np.linspace(1, 0, len(ids)))
    folder = round_dir(project, k)
    folder.mkdir(parents=True)
    table.write(folder / QUERIES_FILE)
    return table


def _h5(path: Path, arr: np.ndarray, name: str = "labels") -> str:
    with h5py.File(path, "w") as f:
        f[name] = arr
    return f"{path}:{name}"


def _expected(labels: np.ndarray, threshold: float = 0.0) -> dict[int, np.ndarray]:
    """Pool-grid masks of each query, cut from read_section's whole-section labels (the loop's rule)."""
    lab_vol = Volume(data=labels, voxel_size=(1, 1, 1), source="labels")
    img_vol = Volume(data=np.zeros(SHAPE, np.uint8), voxel_size=(1, 1, 1), source="image")
    out = {}
    for q, (z, y, x) in zip(IDS.tolist(), ORIGINS.tolist()):
        _, lab, _ = read_section(img_vol, lab_vol, None, z, F, threshold)
        out[q] = lab[y : y + P, x : x + P]
    return out


def _fails(argv: list[str], capsys) -> str:
    """Run main in-process; assert exit 2 and one line on stderr; return that line."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dualstream-ingest: error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize("fmt", ["h5", "tif", "pngdir"])
def test_masks_match_the_simulated_loops_labels(tmp_path, fmt, capsys):
    project = _project(tmp_path)
    labels = _labels()
    if fmt == "h5":
        spec = _h5(tmp_path / "lab.h5", labels)
    elif fmt == "tif":
        spec = str(tmp_path / "lab.tif")
        tifffile.imwrite(spec, labels, photometric="minisblack")
    else:
        folder = tmp_path / "sections"
        folder.mkdir()
        for z in range(SHAPE[0]):
            Image.fromarray(labels[z].astype(np.uint8)).save(folder / f"s{z:02d}.png")
        spec = str(folder)
    assert main([str(project), spec]) == 0
    out = capsys.readouterr().out
    assert "round 0" in out and "4 labelled" in out and "0 skipped" in out and ANSWERS_FILE in out
    labeled, masks, skipped = read_answers(project)
    expected = _expected(labels)
    assert sorted(labeled.tolist()) == sorted(IDS.tolist()) and len(skipped) == 0
    assert masks.shape == (4, P, P) and masks.dtype == np.uint8
    for q, m in zip(labeled.tolist(), masks):
        np.testing.assert_array_equal(m, expected[q])
    # the fixture is not trivial: some masks are partial (neither all 0 nor all 1)
    assert any(0 < m.mean() < 1 for m in masks)
    assert open_round(project) is None
    meta = read_round_answers(round_dir(project, 0)).meta
    assert meta["round"] == 0 and meta["source"] == spec and len(meta["sha256"]) == 64


def test_threshold_from_project_json(tmp_path):
    project = _project(tmp_path, threshold=2.0)
    labels = _labels()
    ingest(project, _h5(tmp_path / "lab.h5", labels))
    labeled, masks, _ = read_answers(project)
    expected = _expected(labels, threshold=2.0)
    for q, m in zip(labeled.tolist(), masks):
        np.testing.assert_array_equal(m, expected[q])


def test_skip_and_empty_masks(tmp_path):
    project = _project(tmp_path)
    spec = _h5(tmp_path / "lab.h5", np.zeros(SHAPE, np.uint8))  # nothing anywhere: empty masks are answers
    assert main([str(project), spec, "--skip", "11,3"]) == 0
    labeled, masks, skipped = read_answers(project)
    assert labeled.tolist() == [7, 20] and sorted(skipped.tolist()) == [3, 11]
    assert masks.shape == (2, P, P) and not masks.any()
    assert read_round_answers(round_dir(project, 0)).meta["skipped_ids"] == [3, 11]


def test_same_file_twice_changes_nothing(tmp_path, capsys):
    project = _project(tmp_path)
    spec = _h5(tmp_path / "lab.h5", _labels())
    assert main([str(project), spec, "--skip", "20"]) == 0
    path = round_dir(project, 0) / ANSWERS_FILE
    before, stat = path.read_bytes(), os.stat(path)
    capsys.readouterr()
    assert main([str(project), spec, "--skip", "20"]) == 0
    assert "already ingested, nothing changed" in capsys.readouterr().out
    assert path.read_bytes() == before and os.stat(path).st_mtime_ns == stat.st_mtime_ns


def test_other_content_for_an_ingested_round_is_refused(tmp_path, capsys):
    project = _project(tmp_path)
    spec = _h5(tmp_path / "lab.h5", _labels(0))
    main([str(project), spec])
    before = (round_dir(project, 0) / ANSWERS_FILE).read_bytes()
    capsys.readouterr()
    err = _fails([str(project), _h5(tmp_path / "other.h5", _labels(1))], capsys)
    assert "round 0 was already ingested from" in err and "dualstream-suggest" in err
    err = _fails([str(project), spec, "--skip", "7"], capsys)  # same file, other skip list: other content
    assert "already ingested" in err
    assert (round_dir(project, 0) / ANSWERS_FILE).read_bytes() == before


def test_not_a_project(tmp_path, capsys):
    err = _fails([str(tmp_path), "x.h5:labels"], capsys)
    assert f"{tmp_path} is not a dualstream project (no project.json)" in err
    assert f"dualstream-suggest project={tmp_path}" in err
    with pytest.raises(NotAProjectError):
        read_answers(tmp_path)


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    nan = _labels().astype(np.float32)
    nan[2, 13, 21] = np.nan  # inside query 3's box (z=2, y=12:20, x=20:28)
    strings = tmp_path / "str.h5"
    with h5py.File(strings, "w") as f:
        f.create_dataset("labels", data=np.full(SHAPE, "a", dtype="S1"))
    return {
        "shape": ([_h5(tmp_path / "small.h5", np.zeros((3, 20, 27), np.uint8))], "does not match the project's image"),
        "skip": ([_h5(tmp_path / "ok.h5", _labels()), "--skip", "7,99"], "--skip: query id 99 not in round 0"),
        "skip-text": ([_h5(tmp_path / "ok2.h5", _labels()), "--skip", "seven"], "--skip: 'seven' is not a query id"),
        "nan": ([_h5(tmp_path / "nan.h5", nan)], "query 3's box"),
        "strings": ([f"{strings}:labels"], "are not numbers"),
        "missing": ([str(tmp_path / "nope.tif")], "no such file"),
    }


@pytest.mark.parametrize("case", ["shape", "skip", "skip-text", "nan", "strings", "missing"])
def test_bad_inputs_exit_2_and_write_nothing(tmp_path, case, capsys):
    project = _project(tmp_path)
    args, needle = _bad_inputs(tmp_path)[case]
    err = _fails([str(project), *args], capsys)
    assert needle in err
    assert not (round_dir(project, 0) / ANSWERS_FILE).exists()
    assert open_round(project) == 0


def test_box_outside_the_volume(tmp_path, capsys):
    project = _project(tmp_path)
    path = round_dir(project, 0) / QUERIES_FILE
    table = QueryTable.read(path)
    table.y[1] = SHAPE[1] - 4  # the box would end 4 voxels past the volume
    table.write(path)
    err = _fails([str(project), _h5(tmp_path / "lab.h5", _labels())], capsys)
    assert "lies outside the label volume" in err and "query" in err
    assert not (round_dir(project, 0) / ANSWERS_FILE).exists()


def test_no_round_yet(tmp_path, capsys):
    project = tmp_path / "p"
    ProjectInfo(image="i.tif", shape=SHAPE, voxel_size=(1, 1, 1), downsample=F, patch_size=P).write(project)
    assert "no round has queries yet" in _fails([str(project), "x.tif"], capsys)
    labeled, masks, skipped = read_answers(project)
    assert labeled.shape == (0,) and masks.shape == (0, P, P) and skipped.shape == (0,)


def test_sigkill_before_commit_leaves_the_store_as_it_was(tmp_path):
    project = _project(tmp_path)
    spec = _h5(tmp_path / "lab.h5", _labels())
    env = {**os.environ, PAUSE_ENV: "120", "PYTHONPATH": str(REPO)}
    code = "import sys; from dualstream.project.ingest import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, str(project), spec], env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()  # printed once the temp file is complete, right before os.replace
        assert line.startswith(PAUSE_ENV), line + proc.stderr.read()
        tmp = Path(line.split(": ", 1)[1].strip())
        assert tmp.exists() and tmp.parent == round_dir(project, 0) and tmp.name != ANSWERS_FILE
    finally:
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -9
    assert not (round_dir(project, 0) / ANSWERS_FILE).exists()
    assert open_round(project) == 0  # the round is still open, the leftover is not taken for answers
    assert read_answers(project).labeled.size == 0
    assert ingest(project, spec).changed
    assert not tmp.exists()  # the next ingest cleans the leftover
    assert sorted(read_answers(project).labeled.tolist()) == sorted(IDS.tolist())


def test_detect_csv_answers(tmp_path, capsys):
    project = _project(tmp_path, task="detect")
    csv = tmp_path / "answers.csv"
    csv.write_text("query_id,answer\n7,TRUE\n11,false\n3,Skip\n\n20,1\n")
    assert main([str(project), str(csv)]) == 0
    labeled, verdicts, skipped = read_answers(project)
    assert labeled.tolist() == [7, 11, 20] and verdicts.tolist() == [1, 0, 1] and skipped.tolist() == [3]
    assert verdicts.shape == (3,) and verdicts.dtype == np.uint8
    capsys.readouterr()
    assert main([str(project), str(csv)]) == 0  # the same answers again: nothing changes
    assert "nothing changed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "text, needle",
    [
        ("query_id,answer\n7,true\n11,false\n3,maybe\n20,0\n", ":4: answer 'maybe'"),
        ("query_id,answer\n7,true\n11,false\n20,0\n", "no answer for query 3"),
        ("query_id,answer\n7,true\n11,false\n3,0\n20,0\n99,1\n", ":6: query 99 is not in this round"),
        ("query_id,answer\n7,true\n7,false\n3,0\n20,0\n11,1\n", "answered on line 2 already"),
        ("id,label\n7,true\n", ":1: header"),
    ],
)
def test_detect_csv_errors(tmp_path, text, needle, capsys):
    project = _project(tmp_path, task="detect")
    csv = tmp_path / "answers.csv"
    csv.write_text(text)
    assert needle in _fails([str(project), str(csv)], capsys)
    assert not (round_dir(project, 0) / ANSWERS_FILE).exists()


def test_detect_skip_flag_and_conflict(tmp_path, capsys):
    project = _project(tmp_path, task="detect")
    csv = tmp_path / "a.csv"
    csv.write_text("query_id,answer\n7,true\n11,false\n20,0\n")  # 3 left out: --skip answers it
    assert "listed in --skip" in _fails([str(project), str(csv), "--skip", "3,7"], capsys)
    assert main([str(project), str(csv), "--skip", "3"]) == 0
    assert read_answers(project).skipped.tolist() == [3]


def test_read_answers_merges_rounds(tmp_path):
    project = _project(tmp_path)
    first = _labels(0)
    ingest(project, _h5(tmp_path / "a.h5", first), skip_ids=[11])
    assert open_round(project) is None
    ids1, origins1 = np.array([5, 9]), np.array([[1, 0, 8], [2, 2, 0]])
    _round(project, 1, ids1, origins1)
    assert open_round(project) == 1
    second = np.ones(SHAPE, np.uint8)  # a different file for the next round: everything foreground
    result = ingest(project, _h5(tmp_path / "b.h5", second), skip_ids=[9])
    assert result.round == 1 and result.n_labeled == 1 and result.n_skipped == 1 and result.foreground == 1.0
    labeled, masks, skipped = read_answers(project)
    assert labeled.tolist() == [7, 3, 20, 5]  # round order, then queries.csv order (utility)
    assert skipped.tolist() == [11, 9]
    expected = _expected(first)
    for q, m in zip(labeled[:3].tolist(), masks[:3]):
        np.testing.assert_array_equal(m, expected[q])
    assert masks[3].all()


def test_corrupt_answers_file(tmp_path):
    project = _project(tmp_path)
    ingest(project, _h5(tmp_path / "a.h5", _labels()))
    path = round_dir(project, 0) / ANSWERS_FILE
    path.write_bytes(path.read_bytes()[:100])  # truncated by something other than ingest
    with pytest.raises(DataError, match="answers.npz: cannot read"):
        read_answers(project)


# --- project.json and rounds --------------------------------------------------------------


def test_project_info_round_trip_and_errors(tmp_path):
    info = ProjectInfo(image="a.h5:raw", shape=(5, 6, 7), voxel_size=(30, 4, 4), downsample=2, patch_size=8, task="detect")
    info.write(tmp_path)
    raw = json.loads((tmp_path / "project.json").read_text())
    assert raw["version"] == 1 and raw["shape"] == [5, 6, 7] and raw["label_threshold"] == 0.0 and raw["created"]
    raw["future_key"] = {"kept": True}
    (tmp_path / "project.json").write_text(json.dumps(raw))
    back = ProjectInfo.read(tmp_path)
    assert back.shape == (5, 6, 7) and back.voxel_size == (30.0, 4.0, 4.0) and back.task == "detect" and back.box_size == 16
    back.write(tmp_path)
    assert json.loads((tmp_path / "project.json").read_text())["future_key"] == {"kept": True}
    (tmp_path / "project.json").write_text("{not json")
    with pytest.raises(DataError, match="project.json: cannot read"):
        ProjectInfo.read(tmp_path)
    (tmp_path / "project.json").write_text(json.dumps({**raw, "version": 2}))
    with pytest.raises(Exception, match="newer than this dualstream reads"):
        ProjectInfo.read(tmp_path)
    (tmp_path / "project.json").write_text(json.dumps({k: v for k, v in raw.items() if k != "shape"}))
    with pytest.raises(DataError, match="missing shape"):
        ProjectInfo.read(tmp_path)


def test_open_round_is_the_latest_unanswered(tmp_path):
    from dualstream.project.layout import list_rounds

    project = _project(tmp_path)
    (project / "round_001").mkdir()  # a folder without queries.csv (suggest still writing it) is no round
    assert list_rounds(project) == [0, 1] and open_round(project) == 0
    assert round_dir(project, 12).name == "round_012"
