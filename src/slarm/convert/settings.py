"""What a conversion produces: format, image size and fit, action definition, encoding."""

from __future__ import annotations

from dataclasses import dataclass

FORMATS = ("v3.0", "v2.1")
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Settings:
    width: int = 256
    height: int = 256
    resize_mode: str = "stretch"
    action: str = "state"
    codec: str = "libsvtav1"  # v3.0: the video codec
    task: str | None = None  # None: the task stored in each raw episode
    format: str = "v3.0"
    jpeg_quality: int = 80  # v2.1: JPEG quality of the images embedded in the parquet files
    device: str = "cpu"  # where JPEGs are decoded and resized: cpu (OpenCV) or cuda (nvJPEG + torch)
    joint_units: str = "rad"  # the SO-101's state and action: as recorded, or LeRobot's (joint_units.py)

    def describe(self) -> dict:
        """The settings a dataset keeps (meta/slarm.json), which every appended episode must share."""
        d = {"width": self.width, "height": self.height, "resize_mode": self.resize_mode, "action": self.action,
             "joint_units": self.joint_units}
        if self.format == "v2.1":
            d["jpeg_quality"] = self.jpeg_quality
        else:
            d["codec"] = self.codec
        return {"format": self.format, **d}
