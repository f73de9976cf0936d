"""One job at a time per configuration: two identical jobs (same tracking store, same config hash) started at
once would both find no finished run and both write one. The second waits for the first, then reuses its run.

The lock is an ``flock`` on one of a fixed set of files under ``$GOVERNANCE_HOME/locks`` (else
``$XDG_STATE_HOME/governance/locks``): it covers every process on this machine (CLI runs, service workers,
local executors), it is released by the kernel when a process dies, and the number of lock files stays
bounded (two different configurations share a file with probability 1/``STRIPES``; they then merely queue).
Processes on different machines are not covered: they should share one service queue.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Iterator

log = logging.getLogger("governance.run.locks")

STRIPES = 256


def lock_dir() -> Path:
    from governance.host.settings import state_dir

    return state_dir() / "locks"


@contextlib.contextmanager
def config_lock(tracking_uri: str, config_hash: str) -> Iterator[float]:
    """Hold the lock for ``(tracking_uri, config_hash)``; yields the seconds spent waiting for it."""
    import fcntl

    stripe = int(hashlib.sha256(f"{tracking_uri}|{config_hash}".encode()).hexdigest()[:8], 16) % STRIPES
    folder = lock_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / f"run-{stripe:03d}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:  # no state folder (read-only home): run unlocked rather than not at all
        log.warning("no run lock (%s): identical concurrent jobs may both run", exc)
        yield 0.0
        return
    t0 = time.monotonic()
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("an identical job is running (lock %s): waiting for it", stripe)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield time.monotonic() - t0
    finally:
        os.close(fd)  # closing releases the lock
