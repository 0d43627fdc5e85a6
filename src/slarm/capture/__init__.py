"""slarm-capture: the recorder (devices, sampling loop, episode files, preview)."""
