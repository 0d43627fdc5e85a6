"""Keyboard: SPACE start/stop, R discard, ESC discard and quit.

With a display (X11 or macOS) keys come from pynput, so they work while the preview window
has the focus. Otherwise (SSH, headless, Wayland) they are read from the terminal, which is
put in no-echo, unbuffered mode for the session and restored afterwards.
"""

from __future__ import annotations

import os
import queue
import select
import sys
import threading

TOGGLE, DISCARD, QUIT = "toggle", "discard", "quit"


def has_display() -> bool:
    if sys.platform == "darwin":
        return True
    return bool(os.environ.get("DISPLAY")) and not os.environ.get("WAYLAND_DISPLAY") and not os.environ.get("SSH_CONNECTION")


class Keys:
    """Collects key events from whichever source is available; poll() returns them."""

    def __init__(self):
        self.events: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.source = "none"
        self._stop = threading.Event()
        self._restore = None
        self._listener = None

    def start(self) -> str:
        """Start listening; returns the source used: pynput, terminal, or none."""
        if has_display() and self._start_pynput():
            self.source = "pynput"
        elif sys.stdin is not None and sys.stdin.isatty():
            self._start_terminal()
            self.source = "terminal"
        return self.source

    def poll(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    def stop(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.stop()
        if self._restore is not None:
            self._restore()
            self._restore = None

    def _start_pynput(self) -> bool:
        try:
            from pynput import keyboard
        except Exception:  # no usable backend (e.g. X server refused): fall back to the terminal
            return False

        def on_press(key):
            if key == keyboard.Key.space:
                self.events.put(TOGGLE)
            elif key == keyboard.Key.esc:
                self.events.put(QUIT)
            elif getattr(key, "char", None) in ("r", "R"):
                self.events.put(DISCARD)

        try:
            self._listener = keyboard.Listener(on_press=on_press)
            self._listener.start()
        except Exception:
            return False
        return True

    def _start_terminal(self) -> None:
        import termios
        import tty

        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)  # keys arrive one by one, not echoed
        attrs = termios.tcgetattr(fd)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        self._restore = lambda: termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        threading.Thread(target=self._read_terminal, args=(fd,), name="keys", daemon=True).start()

    def _read_terminal(self, fd: int) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(fd, 64)
            except OSError:
                return
            if not data:
                return
            self._feed(data, fd)

    def _feed(self, data: bytes, fd: int) -> None:
        i = 0
        while i < len(data):
            c = data[i : i + 1]
            i += 1
            if c == b" ":
                self.events.put(TOGGLE)
            elif c in (b"r", b"R"):
                self.events.put(DISCARD)
            elif c == b"\x1b":
                rest = data[i:]
                if not rest:  # a lone ESC, unless an escape sequence (arrow key...) follows at once
                    ready, _, _ = select.select([fd], [], [], 0.05)
                    rest = os.read(fd, 64) if ready else b""
                    data, i = data + rest, i
                if rest[:1] in (b"[", b"O"):
                    j = i + 1
                    while j < len(data) and not (0x40 <= data[j] <= 0x7E):
                        j += 1
                    i = j + 1
                else:
                    self.events.put(QUIT)
