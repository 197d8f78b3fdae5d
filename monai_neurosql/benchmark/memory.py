"""Peak and current memory of this process (used by the benchmark cells and the scripts under benchmarks/)."""

from __future__ import annotations

import resource
from pathlib import Path

__all__ = ["peak_rss_mib", "rss_mib"]


def _proc_status_mib(field: str) -> float | None:
    """``field`` (e.g. ``VmHWM``) of ``/proc/self/status`` in MiB; ``None`` where ``/proc`` is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB.

    Reads ``VmHWM`` from ``/proc/self/status``. ``getrusage(RUSAGE_SELF).ru_maxrss`` is not usable in a spawned
    child: Linux carries it over ``fork`` and ``execve``, so a child started by a 2 GB parent reports at least
    2 GB. ``VmHWM`` belongs to the process's current address space and starts afresh at ``execve``.
    Falls back to ``ru_maxrss`` (KiB on Linux) where ``/proc`` is missing.
    """
    peak = _proc_status_mib("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mib() -> float:
    """Current resident set size (``VmRSS``) of this process, MiB (nan where ``/proc`` is missing)."""
    current = _proc_status_mib("VmRSS")
    return current if current is not None else float("nan")
