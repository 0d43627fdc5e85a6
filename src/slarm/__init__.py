"""slarm: record robot demonstrations and turn them into LeRobot datasets."""
