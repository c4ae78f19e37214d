"""A lab's loop (suggest -> annotate -> ingest) goes through the simulated loop's code: same queries.

Three rounds on the bundled sample with a scripted annotator that paints label files from the
sample's ground truth (zeros outside the queried boxes, as a human would leave them), against the
simulated loop with the same seed, pool and cold start.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from dualstream.errors import ConfigError, DataError
from dualstream.project.ingest import ingest
from dualstream.project.layout import ProjectInfo, round_dir
from dualstream.project.queries import QueryTable
from dualstream.sample import sample_path
from dualstream.state import LoopState

from conftest import compose_config

TINY = [
    "encoder.steps=3",
    "encoder.batch_size=16",
    "model.steps=3",
    "model.batch_size=4",
    "model.module.width=4",
    "progress=false",
    "trainer.cpu_threads=1",
    "logger=none",
    "acquisition=dualstream",
]


def _paint(project: Path, k: int, out: Path) -> str:
    """The scripted annotator: the sample's mitochondria inside round ``k``'s boxes, 0 elsewhere."""
    table = QueryTable.read(round_dir(project, k) / "queries.csv")
    with h5py.File(sample_path(), "r") as f:
        truth = f["mitochondrion"][()]
    with h5py.File(out, "w") as f:
        f["labels"] = table.within_boxes(truth)
    return f"{out}:labels"


def _suggest_cfg(project: Path, cache: Path, extra: list[str] = ()):
    return compose_config(
        [*TINY, f"project={project}", f"data.image={sample_path()}:image", "data.sections=0:3", "loop.batch=4",
         f"paths.cache_dir={cache}", *extra],
        name="suggest",
    )


@pytest.mark.slow
def test_three_rounds_of_suggest_and_ingest_ask_what_the_simulated_loop_asks(tmp_path):
    from dualstream.project.suggest import suggest
    from dualstream.runner import run

    # The simulated loop: sections 0-3 of the sample, the last held out as test, so its pool is 0-2; with
    # the lab loop's encoders (the default dualstream's VAE weight and SimCLR veto) and screened cold start.
    sim = compose_config(
        [*TINY, "data.sections=0:4", "loop.initial=4", "loop.batch=4", "loop.rounds=2", "loop.cold_start=typiclust",
         f"paths.cache_dir={tmp_path / 'cache_sim'}"],
    )
    run(sim, tmp_path / "sim")
    expected = LoopState.load(tmp_path / "sim").proposed
    assert len(expected) == 3

    project = tmp_path / "lab"
    for k in range(3):
        folder = suggest(_suggest_cfg(project, tmp_path / "cache_lab"))
        assert folder == round_dir(project, k)
        queries = QueryTable.read(folder / "queries.csv")
        assert sorted(queries.query_id.tolist()) == sorted(expected[k].tolist()), f"round {k}"
        assert (folder / "patches.h5").exists() and (folder / "why.png").exists() and (folder / "neuroglancer.json").exists()
        if k < 2:
            result = ingest(project, _paint(project, k, tmp_path / f"labels_{k}.h5"))
            assert result.n_labeled == 4
    got = LoopState.load(project).proposed
    assert [g.tolist() for g in got] == [e.tolist() for e in expected]  # the same order too
    info = ProjectInfo.read(project)
    assert info.shape == (12, 384, 512) and info.patch_size == 64


@pytest.mark.slow
def test_suggest_refuses_a_second_batch_before_the_first_is_ingested_and_changed_settings(tmp_path):
    from dualstream.project.suggest import suggest

    project = tmp_path / "lab"
    suggest(_suggest_cfg(project, tmp_path / "cache"))
    with pytest.raises(DataError, match="round_000 .* has no answers yet"):
        suggest(_suggest_cfg(project, tmp_path / "cache"))
    ingest(project, _paint(project, 0, tmp_path / "l.h5"))
    with pytest.raises(ConfigError, match="encoder.steps=4 but the project was started with 3"):
        suggest(_suggest_cfg(project, tmp_path / "cache", ["encoder.steps=4"]))
    with pytest.raises(ConfigError, match="data.patch_size=32 but project"):
        suggest(_suggest_cfg(project, tmp_path / "cache", ["data.patch_size=32"]))
    # The batch size may change between calls.
    folder = suggest(_suggest_cfg(project, tmp_path / "cache", ["loop.batch=2"]))
    assert len(QueryTable.read(folder / "queries.csv")) == 2


def test_a_simulated_run_without_labels_says_how_to_annotate(tmp_path):
    from dualstream.runner import make_annotator
    from dualstream.tasks import TaskSetup

    cfg = compose_config(TINY)
    setup = TaskSetup(items=np.zeros((4, 8, 8)), settings=None, streams=lambda: None, annotator=None)
    with pytest.raises(ConfigError, match="dualstream-suggest"):
        make_annotator(cfg, setup, tmp_path)


def test_suggest_cli_errors_are_one_line_and_exit_2(tmp_path):
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "dualstream-suggest"
    proc = subprocess.run([str(exe), f"data.image={sample_path()}:image"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "dualstream-suggest: error: project: not set; give the project directory: dualstream-suggest project=DIR data.image=PATH"
    proc = subprocess.run([str(exe), f"project={tmp_path / 'p'}", f"data.image={tmp_path / 'missing.zarr'}"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "data.image: no such file or directory" in proc.stderr
