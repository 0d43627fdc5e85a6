"""slarm-convert: raw episodes into a LeRobot dataset (v3.0, or v2.1 for OpenPI)."""
