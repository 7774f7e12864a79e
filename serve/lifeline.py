"""Lifelines: no server outlives the `ebgen serve` that started it, even one killed by SIGKILL.

A killed process runs no cleanup, so the ones it started watch it instead:

- `watchdog(group)` starts a tiny separate process (`python -m ebgen.serve.lifeline`) that waits
  for its parent, the launcher, to die, then stops process group `group` (TorchServe and its
  workers: SIGTERM, SIGKILL after a grace period) and removes the folders it was given;
- `exit_with_parent(pid)` runs a thread inside a worker (the HTTP service's uvicorn workers)
  that stops the worker once its supervisor `pid` is gone.

Both notice a dead parent by being re-parented (`os.getppid()` changes), which pid reuse cannot
fool. They poll twice a second.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

POLL_S = 0.5
GRACE_S = 10.0


def _orphaned(parent: int) -> bool:
    return os.getppid() != parent


def watchdog(group: int, remove: Sequence[str] = ()) -> subprocess.Popen:
    """A process that stops process group `group` (and removes `remove`) when we die."""
    return subprocess.Popen([sys.executable, "-m", "ebgen.serve.lifeline", str(os.getpid()),
                             str(group), *remove], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def stop_group(group: int, grace_s: float = GRACE_S) -> None:
    """SIGTERM process group `group`, then SIGKILL whatever is left after `grace_s`."""
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass


def alive(pid: int) -> bool:
    """Whether a process `pid` exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def exit_with_parent(parent: int, cleanup: Callable[[], None] | None = None) -> threading.Thread:
    """A daemon thread that runs `cleanup` and stops this process (SIGTERM to itself, so its
    server shuts down as on Ctrl-C) once `parent` is no longer its parent."""
    def watch() -> None:
        while not _orphaned(parent):
            time.sleep(POLL_S)
        if cleanup is not None:
            cleanup()
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, daemon=True, name="lifeline")
    thread.start()
    return thread


def main(argv: Sequence[str]) -> int:
    """`python -m ebgen.serve.lifeline PARENT_PID GROUP [DIR ...]`: the watchdog's body."""
    parent, group, remove = int(argv[0]), int(argv[1]), argv[2:]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the launcher
    while not _orphaned(parent):
        time.sleep(POLL_S)
    stop_group(group)
    for path in remove:
        shutil.rmtree(path, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
