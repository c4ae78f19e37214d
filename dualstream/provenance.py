"""Where a run ran: the host's CPU (and GPU) and the versions of the libraries that set its numbers.

Runs repeat exactly on one machine but not across machines (CPU kernels differ in float rounding:
BENCHMARKS.md §3, the 24-seed scattered-tiles re-test), so every ``results.json`` records this beside
its scores.
"""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what :func:`platform.processor` says."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def source_commit(package_dir: Path = Path(__file__).resolve().parent) -> str | None:
    """The git commit of the checkout dualstream runs from (``+dirty`` with uncommitted changes), or None
    for an installed copy outside a git checkout."""
    try:
        run = lambda *args: subprocess.run(  # noqa: E731
            ["git", *args], cwd=package_dir, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        commit = run("rev-parse", "HEAD")
        dirty = run("status", "--porcelain", "--untracked-files=no", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def environment() -> dict[str, Any]:
    """JSON-ready facts of this process's machine and libraries (no hostname, no paths)."""
    import numpy
    import pytorch_lightning
    import torch

    from dualstream import __version__

    cuda = torch.cuda.is_available()
    return {
        "dualstream": __version__,
        "commit": source_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pytorch_lightning": pytorch_lightning.__version__,
        "numpy": numpy.__version__,
        "os": platform.system(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
    }
