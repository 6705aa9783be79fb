"""Two figures that tell apart the states of this (virtual) machine, for a benchmark's header.

    python benchmarks/probe.py

Speed-ups measured here have swung by up to 1.6x between runs hours apart (docs/performance.md).
Two things a benchmark cannot see from inside PyTorch may explain it: the clock a core runs at,
and where the two virtual CPUs sit on the host. Cores on one chiplet pass a cache line back and
forth in well under 100 ns; cores on two chiplets take several times as long, and every step of
a batch-1 LSTM (ours and torch's) has its threads wait for each other. ``probe.c`` measures both:
a chain of dependent adds (one a cycle) for the clock, and a cache line passed between CPU 0 and
CPU 1 for the round trip. It is compiled with the system's C compiler at each run; without one
(or on another architecture) the figures are left out, and nothing else changes.
"""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("probe.c")


_built: dict[str, object] = {}  # "lib": the loaded library or None; "dir": where it lies


def _library() -> ctypes.CDLL | None:
    """probe.c compiled once per process (None where it cannot be)."""
    if "lib" not in _built:
        workdir = tempfile.TemporaryDirectory()  # removed when the process ends
        _built["dir"] = workdir
        _built["lib"] = _compile(Path(workdir.name))
    return _built["lib"]  # type: ignore[return-value]


def _compile(workdir: Path) -> ctypes.CDLL | None:
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None or platform.machine() not in ("x86_64", "AMD64"):
        return None
    target = workdir / "probe.so"
    build = [compiler, "-O2", "-shared", "-fPIC", "-pthread", str(SOURCE), "-o", str(target)]
    if subprocess.run(build, capture_output=True).returncode != 0:
        return None
    lib = ctypes.CDLL(str(target))
    lib.clock_ghz.restype = ctypes.c_double
    lib.clock_ghz.argtypes = [ctypes.c_int64]
    lib.round_trip_ns.restype = ctypes.c_double
    lib.round_trip_ns.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64]
    return lib


def probe(repeats: int = 5) -> dict[str, float]:
    """``{"clock_ghz": ..., "core_round_trip_ns": ...}`` (medians of ``repeats``), the second
    only with two CPUs or more; ``{}`` where probe.c cannot be built."""
    lib = _library()
    if lib is None:
        return {}
    result = {"clock_ghz": statistics.median(lib.clock_ghz(5_000_000) for _ in range(repeats))}
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) >= 2:
        trips = [lib.round_trip_ns(cpus[0], cpus[1], 20_000) for _ in range(repeats)]
        if min(trips) > 0:
            result["core_round_trip_ns"] = statistics.median(trips)
    return result


def describe(figures: dict[str, float]) -> str:
    """The figures in words for a Markdown header ("" when there are none)."""
    parts = []
    if "clock_ghz" in figures:
        parts.append(f"clock {figures['clock_ghz']:.2f} GHz")
    if "core_round_trip_ns" in figures:
        trip = figures["core_round_trip_ns"]
        parts.append(f"cache-line round trip between the first two CPUs {trip:.0f} ns")
    return "; ".join(parts)


if __name__ == "__main__":
    print(describe(probe()) or "probe.c could not be built here (needs a C compiler on x86-64)")
