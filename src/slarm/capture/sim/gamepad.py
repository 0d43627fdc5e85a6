"""A virtual SDL game controller for `--sim`: the real Gamepad code reads it through SDL.

SDL's virtual-joystick API (pygame's own SDL library, through ctypes) attaches a pad with
six axes and fifteen buttons, mapped as a standard game controller; a thread moves its
sticks and triggers smoothly and presses L1/R1 now and then. Creating the file `unplug-gamepad`
in the sim folder unplugs it; the next connect plugs it back in, as a user would.
"""

from __future__ import annotations

import ctypes
import glob
import math
import os
import threading
import time
from pathlib import Path

from ..gamepad import Gamepad, GamepadError, sdl

BUTTON_NAMES = "a:b0,b:b1,x:b2,y:b3,back:b4,guide:b5,start:b6,leftstick:b7,rightstick:b8,leftshoulder:b9," \
               "rightshoulder:b10,dpup:b11,dpdown:b12,dpleft:b13,dpright:b14"
AXIS_NAMES = "leftx:a0,lefty:a1,rightx:a2,righty:a3,lefttrigger:a4,righttrigger:a5"
UPDATE_HZ = 100


class _GUID(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint8 * 16)]


def _sdl_library() -> ctypes.CDLL:
    """The SDL2 library pygame itself runs on (so the virtual pad is in the same SDL)."""
    import pygame

    base = os.path.dirname(pygame.__file__)
    found = glob.glob(os.path.join(base, "..", "pygame.libs", "libSDL2-2*")) + \
        glob.glob(os.path.join(base, ".dylibs", "libSDL2-2*"))
    if not found:
        raise GamepadError("the simulated gamepad needs the SDL2 library bundled with pygame's wheel")
    lib = ctypes.CDLL(os.path.realpath(found[0]))
    lib.SDL_JoystickAttachVirtual.argtypes = [ctypes.c_int] * 4
    lib.SDL_JoystickDetachVirtual.argtypes = [ctypes.c_int]
    lib.SDL_JoystickOpen.restype = ctypes.c_void_p
    lib.SDL_JoystickClose.argtypes = [ctypes.c_void_p]
    lib.SDL_JoystickSetVirtualAxis.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int16]
    lib.SDL_JoystickSetVirtualButton.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint8]
    lib.SDL_JoystickGetDeviceGUID.restype = _GUID
    lib.SDL_JoystickGetGUIDString.argtypes = [_GUID, ctypes.c_char_p, ctypes.c_int]
    lib.SDL_GameControllerAddMapping.argtypes = [ctypes.c_char_p]
    return lib


class VirtualPad:
    """One virtual controller and the thread that moves it."""

    def __init__(self, unplug_file: Path):
        self.unplug_file = unplug_file
        self.lib = None
        self.handle = None
        self.index = -1
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def plugged(self) -> bool:
        return self.handle is not None

    def plug(self) -> None:
        sdl()  # the joystick subsystems, initialised the way Gamepad does it
        with self._lock:
            if self.handle is not None:
                return
            lib = self.lib = self.lib or _sdl_library()
            self.index = lib.SDL_JoystickAttachVirtual(2, 6, 15, 0)  # SDL_JOYSTICK_TYPE_GAMECONTROLLER
            if self.index < 0:
                raise GamepadError("could not attach the virtual gamepad")
            guid = ctypes.create_string_buffer(33)
            lib.SDL_JoystickGetGUIDString(lib.SDL_JoystickGetDeviceGUID(self.index), guid, 33)
            lib.SDL_GameControllerAddMapping(
                guid.value + f",slarm virtual gamepad,{BUTTON_NAMES},{AXIS_NAMES},".encode())
            self.handle = lib.SDL_JoystickOpen(self.index)
            self._move(0.0)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sim-gamepad", daemon=True)
            self._thread.start()

    def unplug(self) -> None:
        with self._lock:
            if self.handle is None:
                return
            self.lib.SDL_JoystickClose(self.handle)
            self.lib.SDL_JoystickDetachVirtual(self.index)
            self.handle = None

    def _run(self) -> None:
        start = time.monotonic()
        while True:
            if self.unplug_file.exists():
                self.unplug()
                self.unplug_file.unlink(missing_ok=True)
            with self._lock:
                if self.handle is not None:
                    self._move(time.monotonic() - start)
            time.sleep(1 / UPDATE_HZ)

    def _move(self, t: float) -> None:
        """Smooth stick motion, triggers squeezed and released, shoulder buttons pressed now and then."""
        sticks = [math.sin(2 * math.pi * f * t + p) for f, p in ((0.21, 0.0), (0.13, 1.0), (0.17, 2.0), (0.11, 3.0))]
        triggers = [0.5 - 0.5 * math.cos(2 * math.pi * f * t) for f in (0.3, 0.23)]
        for axis, v in enumerate(sticks):
            self.lib.SDL_JoystickSetVirtualAxis(self.handle, axis, round(v * 32767))
        for axis, v in enumerate(triggers, start=4):  # SDL maps the full virtual range onto 0..32767
            self.lib.SDL_JoystickSetVirtualAxis(self.handle, axis, round(v * 65535 - 32768))
        for button, period in ((9, 1.5), (10, 2.3)):  # L1, R1
            self.lib.SDL_JoystickSetVirtualButton(self.handle, button, int((t / period) % 2 >= 1))


class SimGamepad(Gamepad):
    """The real Gamepad reader on the virtual pad; connecting plugs the pad (back) in."""

    def __init__(self, cfg, pad: VirtualPad):
        super().__init__(cfg)
        self.pad = pad

    def connect(self) -> None:
        self.pad.plug()
        super().connect()
