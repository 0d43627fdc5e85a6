"""What the person at the terminal sees: one status line that updates in place, and messages.

On a terminal the status line is redrawn in place; when output goes to a file or a pipe
(CI, logs) only messages and changes of state are printed, one per line: a status line is
printed when it differs from the last one printed in more than its figures (recording starts,
missed ticks or a slow camera appear, a device is being reconnected).
"""

from __future__ import annotations

import re
import sys
import time


class Output:
    """The status line and messages on stdout; errors and warnings on stderr, as slarm-convert
    and slarm-inspect print theirs."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self._line = ""
        self._last_kind = ""
        self._last_draw = 0.0

    def status(self, text: str) -> None:
        if self.tty:
            now = time.monotonic()
            if text != self._line and now - self._last_draw >= 0.1:
                self.stream.write("\r" + text + "\x1b[K")
                self.stream.flush()
                self._line, self._last_draw = text, now
        else:
            kind = re.sub(r"\d+(\.\d+)?", "#", text)
            if kind != self._last_kind:
                self.stream.write(text + "\n")
                self.stream.flush()
                self._last_kind = kind

    def message(self, text: str) -> None:
        self._write(self.stream, text)

    def warning(self, text: str) -> None:
        self._write(sys.stderr, f"warning: {text}")

    def error(self, text: str) -> None:
        self._write(sys.stderr, f"error: {text}")

    def _write(self, stream, text: str) -> None:
        if self.tty and self._line:  # the status line goes first, so the two do not mix
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._line = ""
        stream.write(text + "\n")
        stream.flush()
        self._last_kind = ""

    def close(self) -> None:
        if self.tty and self._line:
            self.stream.write("\n")
            self.stream.flush()
            self._line = ""
