"""Sweep jobs stop when the ``dualstream -m`` process that launched them is gone.

Hydra's joblib launcher runs jobs in loky worker processes, children of the ``dualstream`` process.
When that process is killed (SIGKILL, or SIGTERM, which ends it without any cleanup), loky's workers
are orphaned: a busy one finishes its run and may take the next queued job. So :func:`mark_launcher`
(called in ``main()`` before Hydra launches anything) records the launcher's host, pid and start time
in :data:`ENV`, which the workers inherit, and each job calls :func:`start_watchdog`: a daemon thread
that checks every second that the launcher is still alive and ends the worker with ``os._exit`` when it
is not. The thread outlives the job, so idle workers go too. The loop state written after every round
means a stopped job loses at most the round in progress.

``prctl(PR_SET_PDEATHSIG)`` is not used: it fires when the *thread* that forked the worker exits, and
loky starts workers from a manager thread that may come and go while the launcher lives.

Jobs that are not local children (SLURM jobs, another host) never watch: the launcher's pid means
nothing there, and a SLURM job outliving its submitter is SLURM's business (``scancel``).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

#: Environment variable naming the launching process: ``host:pid:start_time:slurm_job_id``.
ENV = "DUALSTREAM_LAUNCHER"
#: Exit status of a job ended by its watchdog.
EXIT_LAUNCHER_GONE = 3
_started = False
_lock = threading.Lock()


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22), "" if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ", whose comm may hold spaces
    return fields[19] if len(fields) > 19 else ""


def alive(pid: int, start_time: str = "") -> bool:
    """Is process ``pid`` running (not a zombie), and the same process (same ``start_time``) when one is given?"""
    stat_path = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            stat = stat_path.read_text()
        except OSError:
            return False
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] in ("Z", "X"):  # killed, waiting to be reaped by its own parent
            return False
        return not start_time or (len(fields) > 19 and fields[19] == start_time)
    try:  # no /proc (macOS): signal 0 checks existence only
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_launcher() -> None:
    """Record this process as the launcher of the jobs it will start (environment variable :data:`ENV`)."""
    pid = os.getpid()
    os.environ[ENV] = f"{socket.gethostname()}:{pid}:{_start_time(pid)}:{os.environ.get('SLURM_JOB_ID', '')}"


def launcher() -> tuple[int, str] | None:
    """The launcher's ``(pid, start_time)`` when this process is a local job of another process, else None."""
    value = os.environ.get(ENV, "")
    parts = value.split(":")
    if len(parts) != 4 or not parts[1].isdigit():
        return None
    host, pid, start, slurm_job = parts
    if host != socket.gethostname() or int(pid) == os.getpid() or os.environ.get("SLURM_JOB_ID", "") != slurm_job:
        return None
    return int(pid), start


def start_watchdog(interval: float = 1.0) -> bool:
    """In a local sweep job: end this process when the launcher is gone. True if a watchdog runs."""
    global _started
    target = launcher()
    if target is None:
        return False
    with _lock:
        if _started:
            return True
        pid, start = target
        if not alive(pid, start):
            _exit(pid)
        threading.Thread(target=_watch, args=(pid, start, interval), name="dualstream-watchdog", daemon=True).start()
        _started = True
    return True


def _watch(pid: int, start: str, interval: float) -> None:
    while alive(pid, start):
        time.sleep(interval)
    _exit(pid)


def _exit(pid: int) -> None:
    # os.write and os._exit only: the main thread may hold logging's or stdio's locks.
    msg = (
        f"dualstream: the sweep process {pid} is gone; stopping job process {os.getpid()}"
        " (relaunch with the same hydra.sweep.dir to resume)\n"
    )
    try:
        os.write(2, msg.encode())
    finally:
        os._exit(EXIT_LAUNCHER_GONE)
