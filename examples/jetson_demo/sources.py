"""Camera sources for the demo: each yields BGR frames (OpenCV's order) until it runs out.

  synthetic             the six-camera clip of mivl.calib (all six cameras at once)
  PATH.mp4|.avi|...     a video file
  DIR                   a folder of images, one per tick, in name order
  v4l2:/dev/video0      a V4L2 device (USB / GMSL cameras); /dev/videoN alone works too
  gst:PIPELINE          any GStreamer pipeline ending in appsink (OpenCV built with GStreamer)
  csi:N                 a Jetson CSI camera through nvarguscamerasrc (sensor-id N)
  bag:PATH#/topic       a recorded drive: sensor_msgs Image or CompressedImage from a ROS 2 bag
                        (sqlite3 or MCAP) read with rosbags; the six cameras grouped by timestamp
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def csi_pipeline(sensor: int, width: int = 1920, height: int = 1080, fps: int = 30) -> str:
    """nvarguscamerasrc -> NVMM -> nvvidconv -> BGR appsink that keeps only the newest frame."""
    return (f"nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM),width={width},height={height},"
            f"framerate={fps}/1 ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! "
            f"video/x-raw,format=BGR ! appsink drop=1 max-buffers=1")


class CaptureSource:
    def __init__(self, spec: str, cap, live: bool):
        self.spec, self.cap, self.live = spec, cap, live
        if not cap.isOpened():
            raise SystemExit(f"cannot open camera source {spec!r}")

    def read(self) -> np.ndarray | None:
        ok, frame = self.cap.read()
        return frame if ok else None

    def close(self) -> None:
        self.cap.release()


class FolderSource:
    def __init__(self, path: Path):
        self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SystemExit(f"no images in {path}")
        self.k, self.live = 0, False

    def read(self) -> np.ndarray | None:
        import cv2

        if self.k >= len(self.files):
            return None
        frame = cv2.imread(str(self.files[self.k]), cv2.IMREAD_COLOR)
        self.k += 1
        return frame

    def close(self) -> None:
        pass


def open_source(spec: str):
    import cv2

    if spec.startswith("csi:"):
        return CaptureSource(spec, cv2.VideoCapture(csi_pipeline(int(spec[4:])), cv2.CAP_GSTREAMER), True)
    if spec.startswith("gst:"):
        return CaptureSource(spec, cv2.VideoCapture(spec[4:], cv2.CAP_GSTREAMER), True)
    if spec.startswith("v4l2:") or spec.startswith("/dev/video"):
        return CaptureSource(spec, cv2.VideoCapture(spec.removeprefix("v4l2:"), cv2.CAP_V4L2), True)
    path = Path(spec)
    if path.is_dir():
        return FolderSource(path)
    if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file():
        return CaptureSource(spec, cv2.VideoCapture(str(path)), False)
    raise SystemExit(f"camera source {spec!r}: not a video file, image folder, v4l2:, gst: or csi: source")


class SyntheticRig:
    """All six cameras from mivl.calib's synthetic clip (frames converted to BGR)."""

    def __init__(self, seed: int = 0, width: int = 800, height: int = 450, max_objects: int = 1):
        from mivl.calib.clip import SixCameraClip

        self.clip, self.t = SixCameraClip(seed, width, height, max_objects), 0

    def read(self) -> dict[str, np.ndarray]:
        frames = {k: np.ascontiguousarray(v[:, :, ::-1]) for k, v in self.clip.frames(self.t).items()}
        self.t += 1
        return frames

    def close(self) -> None:
        pass


class BagRig:
    """Six cameras from ROS 2 bags (`bag:PATH#/topic` each), frame sets grouped by timestamp."""

    def __init__(self, specs: dict[str, str], tolerance_s: float = 0.05):
        from mivl.edge.rosbag import bag_frame_sets

        self.sets = bag_frame_sets({k: v.removeprefix("bag:") for k, v in specs.items()}, tolerance_s)
        self.stamp = None

    def read(self) -> dict[str, np.ndarray] | None:
        nxt = next(self.sets, None)
        if nxt is None:
            return None
        self.stamp, frames = nxt
        return frames

    def close(self) -> None:
        self.sets.close()


def open_rig(specs: dict[str, str]):
    """The rig for six camera specs: bag sources together (grouped by time), else one per camera."""
    bags = [s.startswith("bag:") for s in specs.values()]
    if any(bags) and not all(bags):
        raise SystemExit("bag: sources cannot be mixed with live or file sources in one rig")
    return BagRig(specs) if all(bags) else Rig(specs)


class Rig:
    """Six named sources read together; None once any of them runs out."""

    def __init__(self, specs: dict[str, str]):
        self.sources = {name: open_source(spec) for name, spec in specs.items()}

    def read(self) -> dict[str, np.ndarray] | None:
        frames = {}
        for name, src in self.sources.items():
            frame = src.read()
            if frame is None:
                return None
            frames[name] = frame
        return frames

    def close(self) -> None:
        for s in self.sources.values():
            s.close()
