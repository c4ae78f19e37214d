"""Runs and sweeps that resume, and sweeps that stop: loop state on disk, reruns, killed processes."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dualstream.errors import ConfigError
from dualstream.loop import ActiveLearningLoop, LoopSettings
from dualstream.oracle import ProposalAnnotator, SimulatedAnnotator
from dualstream.state import PREVIOUS_FILE, STATE_FILE, LoopState, config_hash, finished_aulc
from dualstream.streams.data_stream import DataStream
from dualstream.watchdog import ENV, EXIT_LAUNCHER_GONE, alive, launcher
from test_cli import BIN

TIMING_KEYS = {"seconds", "selection_seconds"}


class Interrupted(Exception):
    pass


class NoisyTask:
    """Fake task model: score and uncertainty depend on the labelled set and the round's seed only."""

    def __init__(self, n: int):
        self.n = n

    def fit(self, images, masks, seed):
        self.seed, self.n_fit, self.fg = seed, len(images), float(masks.mean())
        return 0.5

    def score(self):
        return self.n_fit / 100.0 + self.fg

    def pool_uncertainty(self):
        return np.random.default_rng(self.seed).random(self.n)


def make_loop(acquisition="random", on_round=None, artifacts=(), n=60, schedule=(4, 8, 12, 16), proposals=False):
    """A loop over ``n`` tiny patches (dense masks), or proposals answered True/False (``proposals``)."""
    rng = np.random.default_rng(0)
    images = rng.random((n, 8, 8), dtype=np.float32)
    ignore = np.zeros(n, dtype=np.float32)
    ignore[list(artifacts)] = 1.0
    if proposals:
        annotator = ProposalAnnotator((images.mean(axis=(1, 2)) > 0.5).astype(np.uint8), ignore)
    else:
        annotator = SimulatedAnnotator((images > 0.5).astype(np.uint8), ignore)
    stream = DataStream(rng.normal(size=(n, 4)).astype(np.float32), rng.random(n) + 1.0, 0.0, False, "k")
    return ActiveLearningLoop(
        images, stream, NoisyTask(n), annotator, acquisition, {},
        LoopSettings(0, 0, 0, schedule), seed=3, on_round=on_round, progress=False,
    )


def strip(records):
    """Records as dicts without the timing fields (the only ones a resumed run may change)."""
    rows = [r if isinstance(r, dict) else {**r.__dict__} for r in records]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def interrupted_run(tmp_path, acquisition, stop_after, artifacts=(), proposals=False):
    """Run a loop that saves its state each round and dies after round ``stop_after``."""
    holder = {}

    def on_round(record):
        holder["loop"].snapshot("h", "p").save(tmp_path)
        if record.round == stop_after:
            raise Interrupted

    holder["loop"] = make_loop(acquisition, on_round, artifacts, proposals=proposals)
    with pytest.raises(Interrupted):
        holder["loop"].run()


@pytest.mark.parametrize(
    "acquisition, artifacts, proposals",
    [("random", (), False), ("dualstream", (), False), ("uncertainty", (5, 17, 40, 41), False), ("random", (3, 9), True)],
)
def test_resumed_loop_gives_the_records_of_an_uninterrupted_one(tmp_path, acquisition, artifacts, proposals):
    whole = make_loop(acquisition, artifacts=artifacts, proposals=proposals)
    expected = whole.run()
    interrupted_run(tmp_path, acquisition, stop_after=1, artifacts=artifacts, proposals=proposals)
    state = LoopState.load(tmp_path)
    assert state is not None and state.round == 1 and not state.finished
    assert state.answers.ndim == (1 if proposals else 3)
    resumed = make_loop(acquisition, artifacts=artifacts, proposals=proposals)
    resumed.restore(state)
    records = resumed.run()
    assert strip(records) == strip(expected)
    assert np.array_equal(resumed.queried, whole.queried) and np.array_equal(resumed.skipped, whole.skipped)
    assert [b.tolist() for b in resumed.proposed] == [b.tolist() for b in whole.proposed]


def test_state_round_trip(tmp_path):
    loop = make_loop("random", artifacts=(1, 2, 3))
    loop.run()
    state = loop.snapshot("abc", "def")
    state.save(tmp_path)
    back = LoopState.read(tmp_path / STATE_FILE)
    assert back.finished and back.round == 3 and back.n_rounds == 3
    assert (back.config_hash, back.pool, back.version) == ("abc", "def", state.version)
    for name in ("queried", "labeled", "skipped", "answer_index", "answers"):
        assert np.array_equal(getattr(back, name), getattr(state, name)), name
        assert getattr(back, name).dtype == getattr(state, name).dtype, name
    assert back.answers.shape[1:] == (8, 8)  # masks of the labelled items only
    assert len(back.answer_index) == int(state.labeled.sum())
    assert [b.tolist() for b in back.proposed] == [b.tolist() for b in state.proposed]
    assert [len(b) for b in back.proposed] == [4, 4, 4, 4]
    assert back.rng_state == state.rng_state
    assert back.records == state.records
    assert back.pending.size == 0


def test_a_proposed_batch_without_answers_is_asked_on_resume(tmp_path):
    """The state says what was proposed and what was answered: an unanswered batch is pending."""
    whole = make_loop("random")
    expected = whole.run()
    interrupted_run(tmp_path, "random", stop_after=1)
    state = LoopState.load(tmp_path)
    last = state.proposed[-1]
    # As if the annotator had not answered the last batch yet.
    state.queried[last] = state.labeled[last] = state.skipped[last] = False
    keep = ~np.isin(state.answer_index, last)
    state.answer_index, state.answers = state.answer_index[keep], state.answers[keep]
    state.save(tmp_path)
    state = LoopState.load(tmp_path)
    assert sorted(state.pending.tolist()) == sorted(last.tolist())
    resumed = make_loop("random")
    resumed.restore(state)
    assert strip(resumed.run()) == strip(expected)


def test_temp_files_of_an_interrupted_write_are_ignored(tmp_path):
    loop = make_loop()
    loop.run()
    loop.snapshot("h", "p").save(tmp_path)
    # A write killed before its rename leaves only a temp file: never read, never in the way.
    (tmp_path / f"{STATE_FILE}.tmp-999").write_bytes(b"PK\x03\x04 half a zip")
    assert LoopState.load(tmp_path).round == 3
    loop.snapshot("h", "p").save(tmp_path)
    assert LoopState.load(tmp_path).round == 3


def test_truncated_state_falls_back_to_the_previous_one_then_to_none(tmp_path, caplog):
    interrupted_run(tmp_path, "random", stop_after=2)
    assert LoopState.load(tmp_path).round == 2 and (tmp_path / PREVIOUS_FILE).exists()
    data = (tmp_path / STATE_FILE).read_bytes()
    (tmp_path / STATE_FILE).write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="dualstream.state"):
        state = LoopState.load(tmp_path)
    assert state is not None and state.round == 1  # the previous round's state
    assert "cannot read the loop state" in caplog.text and STATE_FILE in caplog.text
    (tmp_path / PREVIOUS_FILE).write_bytes(b"")
    assert LoopState.load(tmp_path) is None


def test_a_state_of_another_config_or_pool_is_refused(tmp_path):
    interrupted_run(tmp_path, "random", stop_after=0)
    state = LoopState.load(tmp_path)
    state.check("h", "p", tmp_path)  # its own config: fine
    with pytest.raises(ConfigError, match="different config") as err:
        state.check("other", "p", tmp_path)
    assert str(tmp_path) in str(err.value) and "hydra.run.dir" in str(err.value)
    with pytest.raises(ConfigError, match="different pool"):
        state.check("h", "other", tmp_path)


def test_config_hash_ignores_where_and_how_a_run_logs():
    cfg = {"seed": 0, "loop": {"batch": 4}, "paths": {"output_dir": "a"}, "logger": {"name": "csv"}, "progress": True}
    same = {**cfg, "paths": {"output_dir": "b"}, "logger": {"name": "none"}, "progress": False, "resume": False}
    assert config_hash(cfg) == config_hash(same)
    assert config_hash(cfg) != config_hash({**cfg, "seed": 1})
    assert config_hash(cfg) != config_hash({**cfg, "loop": {"batch": 5}})


def test_finished_aulc_needs_the_last_round_and_a_complete_results_file(tmp_path):
    cfg = {"seed": 3}
    loop = make_loop()
    loop.run()
    loop.snapshot(config_hash(cfg), "p").save(tmp_path)
    assert finished_aulc(cfg, tmp_path) is None  # no results.json
    (tmp_path / "results.json").write_text(json.dumps({"records": [{}] * 4, "aulc": 0.25}))
    assert finished_aulc(cfg, tmp_path) == 0.25
    (tmp_path / "results.json").write_text(json.dumps({"records": [{}] * 3, "aulc": 0.25}))
    assert finished_aulc(cfg, tmp_path) is None
    with pytest.raises(ConfigError, match="different config"):
        finished_aulc({"seed": 4}, tmp_path)


def test_watchdog_ends_a_job_whose_launcher_is_gone(tmp_path):
    assert alive(os.getpid())
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    job = None
    try:
        from dualstream.watchdog import _start_time

        env = {**os.environ, ENV: f"{socket.gethostname()}:{parent.pid}:{_start_time(parent.pid)}:{os.environ.get('SLURM_JOB_ID', '')}"}
        code = "from dualstream.watchdog import start_watchdog; import time; assert start_watchdog(0.1); print('watching', flush=True); time.sleep(120)"
        job = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert job.stdout.readline().strip() == "watching"
        assert job.poll() is None
        parent.kill()
        parent.wait()
        assert not alive(parent.pid)
        assert job.wait(timeout=30) == EXIT_LAUNCHER_GONE
        assert "is gone" in job.stderr.read()
    finally:
        for p in (parent, job):
            if p is not None and p.poll() is None:
                p.kill()


def test_no_watchdog_in_the_launcher_itself_or_on_another_host(monkeypatch):
    from dualstream.watchdog import mark_launcher

    monkeypatch.delenv(ENV, raising=False)
    assert launcher() is None
    mark_launcher()
    assert launcher() is None  # this process is the launcher
    host, pid, start, slurm = os.environ[ENV].split(":")
    monkeypatch.setenv(ENV, f"elsewhere:{os.getppid()}:{start}:{slurm}")
    assert launcher() is None
    monkeypatch.setenv(ENV, f"{host}:{os.getppid()}::{slurm}x")  # a SLURM job of its own
    assert launcher() is None
    monkeypatch.setenv(ENV, f"{host}:{os.getppid()}::{slurm}")
    assert launcher() == (os.getppid(), "")


# ---- end to end through the console script --------------------------------------------------

def dualstream_popen(*args: str, cwd: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    return subprocess.Popen(
        [str(BIN / "dualstream"), *args], cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True
    )


def run_to_end(*args: str, cwd: Path, log: Path) -> tuple[int, str]:
    proc = dualstream_popen(*args, cwd=cwd, log=log)
    rc = proc.wait(timeout=600)
    return rc, log.read_text()


def state_round(run_dir: Path) -> int:
    try:
        return LoopState.read(run_dir / STATE_FILE).round
    except Exception:  # not there yet, or being replaced
        return -1


def wait_for(condition, timeout: float = 300.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def descendants(pid: int) -> dict[int, str]:
    """pid -> start time of every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    from dualstream.watchdog import _start_time

    found, todo = {}, [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found[child] = _start_time(child)
            todo.append(child)
    return found


def records_of(run_dir: Path) -> list[dict]:
    return strip(json.loads((run_dir / "results.json").read_text())["records"])


@pytest.mark.slow
def test_killed_run_resumes_with_the_records_of_an_uninterrupted_run(tmp_path, tiny_overrides):
    args = [*tiny_overrides, "logger=none", "loop.rounds=3", "acquisition=dualstream"]
    rc, out = run_to_end(*args, f"hydra.run.dir={tmp_path / 'whole'}", cwd=tmp_path, log=tmp_path / "whole.log")
    assert rc == 0, out[-3000:]
    run_dir = tmp_path / "killed"
    proc = dualstream_popen(*args, f"hydra.run.dir={run_dir}", cwd=tmp_path, log=tmp_path / "killed.log")
    try:
        wait_for(lambda: state_round(run_dir) >= 1 or proc.poll() is not None, what="round 1")
    finally:
        proc.kill()
    proc.wait()
    assert 1 <= state_round(run_dir) < 3, "the run finished before it could be killed"
    assert json.loads((run_dir / "results.json").read_text())["finished"] is False  # a copy taken now says so
    rc, out = run_to_end(*args, f"hydra.run.dir={run_dir}", cwd=tmp_path, log=tmp_path / "resumed.log")
    assert rc == 0, out[-3000:]
    assert "resuming after round" in out
    assert records_of(run_dir) == records_of(tmp_path / "whole")
    assert [r["round"] for r in records_of(run_dir)] == [0, 1, 2, 3]
    assert json.loads((run_dir / "results.json").read_text())["finished"] is True


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_sweep_leaves_no_worker_and_relaunch_skips_finished_runs(tmp_path, tiny_overrides, sig):
    sweep = tmp_path / "sweep"
    args = ["-m", *tiny_overrides, "logger=none", "loop.rounds=2", "acquisition=random", "seed=0,1,2", f"hydra.sweep.dir={sweep}"]
    proc = dualstream_popen(*args, cwd=tmp_path, log=tmp_path / "first.log")
    try:
        wait_for(lambda: any(state_round(d) >= 2 for d in sweep.glob("*_s*")) or proc.poll() is not None, what="a finished run")
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        workers = descendants(proc.pid)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert workers, "the sweep had no worker processes"
    # Every worker notices within a few seconds that its launcher is gone, and starts nothing more.
    wait_for(lambda: not any(alive(pid, start) for pid, start in workers.items()), timeout=30, what="workers to exit")
    finished = {d.name: (d / STATE_FILE).stat().st_mtime_ns for d in sweep.glob("*_s*") if state_round(d) == 2}
    assert finished and len(finished) < 3, f"expected an interrupted sweep, got finished runs {sorted(finished)}"
    rc, out = run_to_end(*args[:-1], f"hydra.sweep.dir={sweep}", cwd=tmp_path, log=tmp_path / "relaunch.log")
    assert rc == 0, out[-3000:]
    assert out.count("already finished") == len(finished)
    for name, mtime in finished.items():
        assert (sweep / name / STATE_FILE).stat().st_mtime_ns == mtime, f"{name} was redone"
    runs = sorted(sweep.glob("*_s*"))
    assert [d.name for d in runs] == ["0_random_s0", "1_random_s1", "2_random_s2"]
    for d in runs:
        assert [r["n_queried"] for r in records_of(d)] == [4, 8, 12], d.name


@pytest.mark.slow
def test_corrupt_state_warns_and_runs_clean_then_skips_then_refuses_another_config(tmp_path, tiny_overrides):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / STATE_FILE).write_bytes(b"PK\x03\x04 truncated")
    args = [*tiny_overrides, "logger=none", "loop.rounds=1", f"hydra.run.dir={run_dir}"]
    rc, out = run_to_end(*args, cwd=tmp_path, log=tmp_path / "first.log")
    assert rc == 0, out[-3000:]
    assert "cannot read the loop state" in out and "Traceback" not in out
    assert [r["round"] for r in records_of(run_dir)] == [0, 1]
    assert LoopState.read(run_dir / STATE_FILE).finished
    mtime = (run_dir / "results.json").stat().st_mtime_ns
    rc, out = run_to_end(*args, cwd=tmp_path, log=tmp_path / "again.log")
    assert rc == 0 and "already finished" in out, out[-3000:]
    assert (run_dir / "results.json").stat().st_mtime_ns == mtime
    rc, out = run_to_end(*args, "seed=5", cwd=tmp_path, log=tmp_path / "other.log")
    assert rc == 2, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("dualstream: error:")]
    assert len(errors) == 1 and "different config" in errors[0] and str(run_dir) in errors[0]
    assert "Traceback" not in out


def test_later_keys_at_their_defaults_leave_run_hashes_unchanged():
    """Runs started before the pool-inference keys existed still resume; setting one changes the hash
    of a simulated run (float rounding could move a pick) but not a lab project's state config."""
    from dualstream.runner import state_config

    old = {"seed": 0, "trainer": {"cpu_threads": 1}, "data": {"patch_size": 64}}
    new = {"seed": 0, "trainer": {"cpu_threads": 1, "channels_last": False, "fuse_batchnorm": False, "compile": False, "predict_batch_size": 256}, "data": {"patch_size": 64}}
    assert config_hash(new) == config_hash(old)
    fast = {**new, "trainer": {**new["trainer"], "channels_last": True}}
    assert config_hash(fast) != config_hash(old)
    assert config_hash(state_config(fast, lab=True)) == config_hash(state_config(old, lab=True))
    assert config_hash(state_config({**old, "encoder": {"steps": 2}}, lab=True)) != config_hash(state_config(old, lab=True))
