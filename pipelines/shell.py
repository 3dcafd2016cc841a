"""Child processes of the flows: ``dvc`` stages streamed into the Prefect log, short ``git`` calls.

A stage can run for hours, so its output is logged line by line as it comes (progress-bar
updates, ``\\r``-terminated, at most every ``PROGRESS_EVERY_S``), and it runs in its own process
group: a timeout or a cancelled flow kills the stage's workers too, not only ``dvc``.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipelines.dvc_graph import tool_env

PROGRESS_EVERY_S = 5.0
KILL_GRACE_S = 10.0


def _pump(stream: Any, name: str, lines: queue.Queue) -> None:
    """Split a byte stream into lines; ``\\r``-terminated pieces are progress-bar updates."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buffer = ""
    while chunk := stream.read1(65536):
        buffer += decoder.decode(chunk)
        while match := re.search(r"[\r\n]", buffer):
            end = match.start()
            lines.put((name, buffer[:end], buffer[end] == "\r"))
            buffer = buffer[end + 1 :]
    buffer += decoder.decode(b"", final=True)
    if buffer:
        lines.put((name, buffer, False))
    lines.put((name, None, False))


def _kill(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)


def stream_command(
    cmd: list[str],
    cwd: Path,
    logger: logging.Logger | logging.LoggerAdapter,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str, str], None] | None = None,
) -> tuple[int, list[str]]:
    """Run ``cmd``, log its output line by line as it comes, kill it after ``timeout_s``.

    Returns the exit code and the last lines of stderr. The child runs in its own process
    group, so a timeout or a cancelled flow kills the stage's workers too.
    """
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=tool_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    lines: queue.Queue = queue.Queue()
    for name, stream in (("stdout", proc.stdout), ("stderr", proc.stderr)):
        threading.Thread(target=_pump, args=(stream, name, lines), daemon=True).start()
    stderr_tail: deque[str] = deque(maxlen=200)
    last_progress: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    open_streams = 2
    try:
        while open_streams:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            try:
                name, line, progress = lines.get(timeout=min(0.5, remaining))
            except queue.Empty:
                continue
            if line is None:
                open_streams -= 1
                continue
            line = line.rstrip()
            if not line.strip():
                continue
            if progress:
                now = time.monotonic()
                if now - last_progress.get(name, -PROGRESS_EVERY_S) < PROGRESS_EVERY_S:
                    continue
                last_progress[name] = now
            elif name == "stderr":
                stderr_tail.append(line)
            if on_line is not None:
                on_line(name, line)
            level = logging.INFO
            if line.startswith("ERROR"):
                level = logging.ERROR
            elif line.startswith("WARNING"):
                level = logging.WARNING
            logger.log(level, "%s", line)
        returncode = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except (TimeoutError, subprocess.TimeoutExpired):
        _kill(proc)
        raise TimeoutError(f"timed out after {timeout_s:g} s") from None
    finally:
        _kill(proc)
    return returncode, list(stderr_tail)


def error_detail(stderr_lines: list[str]) -> str:
    """The stage's own error (``ERROR [stage]: ...`` and what follows), else the stderr tail."""
    lines = [line for line in stderr_lines if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith("ERROR [")]
    if starts:
        block = []
        for line in lines[starts[-1] :]:
            if line.startswith("ERROR: failed to reproduce"):
                break
            block.append(line)
        return "\n".join(block)
    return "\n".join(lines[-15:]) or "no error output"


def git(cwd: Path, *args: str) -> str:
    """Run a short ``git`` command in ``cwd`` and return its stdout; fail naming it."""
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {result.stderr.strip()}")
    return result.stdout
