"""keep_freed_memory: glibc's malloc stops handing freed blocks back, so they stop faulting."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from lstmkit.training import memory

# In a fresh process (the setting is process-wide): the page faults of allocating, touching and
# freeing a 64 MiB tensor ten times, before and after keep_freed_memory(). (64 MiB: glibc raises
# its mmap threshold by itself as blocks are freed, but never above 32 MiB.)
CHILD = """
import json, resource, torch
from lstmkit.training.memory import keep_freed_memory

def faults():
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        torch.ones(1 << 24)  # 64 MiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

before = faults()
reason = keep_freed_memory()
faults()  # the heap grows to hold the block once
print(json.dumps({"before": before, "reason": reason, "after": faults()}))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_blocks_stop_faulting():
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, timeout=120
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["reason"] is None
    # each block mapped afresh: 16,384 faults of 4 KiB pages (163,896 for ten here), or 32 of
    # 2 MiB ones where transparent huge pages always back large blocks
    assert result["before"] >= 300, result
    assert result["after"] * 10 <= result["before"], result  # (0 here)


def test_another_c_library_is_named_in_the_reason(monkeypatch):
    monkeypatch.setattr(memory.platform, "libc_ver", lambda: ("musl", "1.2"))
    monkeypatch.setattr(memory.ctypes, "CDLL", pytest.fail)  # nothing is called
    reason = memory.keep_freed_memory()
    assert reason is not None and "glibc" in reason and "musl" in reason
