"""What a process holds open (threads, listening TCP sockets), to check a failed start frees it."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


def listening_sockets() -> int:
    """TCP sockets of this process in the LISTEN state (Linux /proc); a demo model has one."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            count += fields[3] == "0A" and fields[9] in inodes
    return count


def held() -> tuple[int, int]:
    """(threads, listening sockets) of this process."""
    return threading.active_count(), listening_sockets()


def settled(baseline: tuple[int, int], timeout: float = 20.0) -> tuple[int, int]:
    """What is held once short-lived threads had `timeout` seconds to end (a loaded machine)."""
    deadline = time.monotonic() + timeout
    while (now := held()) > baseline and time.monotonic() < deadline:
        time.sleep(0.1)
    return now
