"""Start, find and stop detached background processes by pid file; wait for readiness."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def read_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process is still alive, else None."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if is_alive(pid) else None


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user (postgres runs as its own user)
        return True
    # A zombie (exited child not yet reaped) still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return True


def spawn(
    cmd: Sequence[str],
    log_file: Path,
    pid_file: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
    group: str | None = None,
) -> int:
    """Start ``cmd`` in its own session, detached from the caller, logging to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the CLI that started it; SIGINT at a prompt won't reach it
            env={**os.environ, **(env or {})},
            cwd=cwd,
            user=user,
            group=group,
        )
    pid_file.write_text(str(proc.pid))
    return proc.pid


def stop(pid_file: Path, grace_s: float = 20.0, sig: int = signal.SIGTERM) -> bool:
    """Send ``sig`` to the process in ``pid_file``, wait, then SIGKILL. True if one was running."""
    pid = read_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and is_alive(pid):
        _reap(pid)
        time.sleep(0.1)
    if is_alive(pid):
        os.kill(pid, signal.SIGKILL)
        _reap(pid)
    pid_file.unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def wait_until(check: Callable[[], bool], timeout_s: float, alive: Callable[[], bool]) -> bool:
    """Poll ``check`` until it is true, the timeout passes, or ``alive`` says the process died."""
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except Exception:  # noqa: BLE001 - any failure of a readiness probe means "not yet"
            pass
        if not alive():
            return False
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
    return False


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, for error messages that say why a part failed."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"
