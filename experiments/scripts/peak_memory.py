"""Peak resident memory of this process, for the benchmark scripts beside this file.

Linux: ``/proc/self/clear_refs`` resets ``VmHWM`` (the peak RSS) to the current RSS, so the peak of a
phase is ``VmHWM`` after it minus ``VmRSS`` before it; elsewhere ``ru_maxrss`` (a lifetime peak, so
only an upper bound). Both count numpy, torch and FAISS allocations, unlike tracemalloc.
"""

from __future__ import annotations

import resource


def status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``), or None where there is no /proc."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset ``VmHWM`` to the current RSS; False where that is not possible (then use ``ru_maxrss``)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def rss_kib(exact: bool) -> int:
    """Current RSS (exact) or the lifetime peak ``ru_maxrss`` (fallback), in KiB."""
    return (status_kib("VmRSS") or 0) if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_kib(exact: bool) -> int:
    """Peak RSS since :func:`reset_peak` (exact) or over the process's life (fallback), in KiB."""
    return (status_kib("VmHWM") or 0) if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
