"""How commands end and what they draw on a terminal: exit codes, Ctrl-C, closed pipes, progress.

Exit codes: 0 ok, 1 a failure or an alarm, 2 bad input (ConfigError), 130 interrupted by
SIGINT (128 + 2, as shells report it). A closed output pipe (`archiver status | head -1`) is the
reader saying it has seen enough: the command ends quietly with 0, like `cat`, not with a
traceback or Python's "Exception ignored ... BrokenPipeError" at exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import TextIO

import click

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT


class Group(click.Group):
    """The command group; every command (nested groups included) runs inside `unix_endings`."""

    def invoke(self, ctx: click.Context):
        with unix_endings():
            return super().invoke(ctx)


@contextlib.contextmanager
def unix_endings() -> Iterator[None]:
    """Ctrl-C exits 130 with one line and no traceback; a closed stdout exits 0 silently.

    click alone would turn both into "Aborted!" and exit 1, the code of a failed check.
    """
    try:
        try:
            yield
        finally:
            sys.stdout.flush()  # a closed pipe shows here rather than in the interpreter's last flush
    except KeyboardInterrupt:
        with contextlib.suppress(OSError):
            newline = "\n" if sys.stderr.isatty() else ""  # ends the terminal's ^C echo
            click.echo(f"{newline}archiver: interrupted", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except BrokenPipeError:
        # The interpreter flushes stdout once more at exit; point it at /dev/null so that flush is quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(EXIT_OK) from None


class Progress:
    """One line on stderr, redrawn as work advances, only when stderr is a terminal.

    Output meant for pipes and files (stdout, and stderr when redirected) never sees it.
    """

    def __init__(self, stream: TextIO | None = None, every_s: float = 0.1):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.every_s = every_s
        self._last = 0.0
        self._drawn = False

    def show(self, line: str, force: bool = False) -> None:
        """Redraw the line; at most every `every_s` seconds unless `force` (the final count)."""
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < self.every_s):
            return
        self._last = now
        self._drawn = True
        click.echo(f"\r{line} ", nl=False, file=self.stream)

    def close(self) -> None:
        """End the line, so what follows starts on its own."""
        if self._drawn:
            click.echo("", file=self.stream)
            self._drawn = False
