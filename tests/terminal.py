"""Running a command with stderr on a pseudo-terminal, as a user at a terminal sees it."""

from __future__ import annotations

import os
import pty
import subprocess


def on_a_terminal(argv: list[str], env: dict | None = None, timeout: float = 300) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal and stdout on a pipe: (exit code, stdout, what the terminal shows)."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=follower, env=env)
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal has no writer left
                break
            if not chunk:
                break
            shown += chunk
        out, _ = proc.communicate(timeout=timeout)
    finally:
        os.close(leader)
    return proc.returncode, out.decode(), shown.decode()
