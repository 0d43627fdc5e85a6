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


def recording_line(index: int, ep, fps: int, slow: list[tuple[str, float, int]], disk_left_s: float | None) -> str:
    """The status line while episode `index` records (`ep`: its raw.EpisodeWriter): frames, time,
    missed ticks, cameras slower than asked ((name, new frames/s, asked)), a disk falling behind
    (shown once it is a second behind) or about to fill (`disk_left_s`)."""
    return (f"Recording episode {index} | {ep.ticks_put} frames | {ep.duration:.1f}s"
            + (f" | {ep.missed_ticks} missed" if ep.missed_ticks else "")
            + "".join(f" | {name} only {gave:.0f}/{asked} fps" for name, gave, asked in slow)
            + (f" | disk {ep.backlog / fps:.0f}s behind" if ep.most_behind >= fps else "")
            + (f" | disk full in {disk_left_s:.0f}s" if disk_left_s is not None else ""))


def idle_line(saved: int, discarded: int, next_index: int, disk_left_s: float | None, keys: bool) -> str:
    """The status line between episodes."""
    return (f"Idle | {saved} saved, {discarded} discarded | next: episode {next_index}"
            + (f" | disk: room for {disk_left_s:.0f}s" if disk_left_s is not None else "")
            + (" | SPACE to record" if keys else ""))
