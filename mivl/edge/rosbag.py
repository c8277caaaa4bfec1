"""Recorded drives: camera frames out of ROS 2 bags (sqlite3 and MCAP) with the `rosbags` library,
no ROS install needed (pip install 'mivl[bags]').

    for t, frames in bag_frame_sets("drive/", {"CAM_FRONT": "/cam_front/image_raw/compressed", ...}):
        answer = session.ask("What is ahead?", cameras=frames, channels="BGR")

sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) and sensor_msgs/CompressedImage (JPEG, PNG)
are read; frames come back as BGR uint8 arrays (OpenCV's order). The six cameras are grouped by
timestamp: each message of the reference camera (the first named) makes a frame set with every
other camera's message nearest to it in time, when that is within `tolerance_s`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ImageError, InputError

IMAGE, COMPRESSED = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"
CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


def _reader(path):
    try:
        from rosbags.highlevel import AnyReader
    except ImportError as e:
        raise InputError(f"reading ROS bags needs the rosbags library (pip install 'mivl[bags]'): {e}") from None
    path = Path(path)
    if not path.exists():
        raise InputError(f"bag not found: {path}")
    return AnyReader([path])


def to_bgr(msg, msgtype: str) -> np.ndarray:
    """One image message as a BGR uint8 array (H, W, 3)."""
    import cv2

    if msgtype == COMPRESSED:
        frame = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
        if frame is None:
            raise ImageError(f"a CompressedImage ({msg.format!r}) could not be decoded")
        return frame
    enc = msg.encoding.lower()
    if enc not in CHANNELS:
        raise ImageError(f"Image encoding {msg.encoding!r} is not read; supported: {', '.join(CHANNELS)}")
    c, h, w = CHANNELS[enc], int(msg.height), int(msg.width)
    if msg.step < w * c or len(msg.data) < msg.step * h:
        raise ImageError(f"an Image message of {w}x{h} {enc} carries {len(msg.data)} bytes with step {msg.step}")
    rows = np.frombuffer(bytes(msg.data), np.uint8)[: msg.step * h].reshape(h, msg.step)[:, : w * c]
    img = rows.reshape(h, w, c)
    if enc == "mono8":
        return np.ascontiguousarray(np.repeat(img, 3, axis=2))
    if enc.startswith("rgb"):
        return np.ascontiguousarray(img[:, :, 2::-1])
    return np.ascontiguousarray(img[:, :, :3])


def _messages(path, topics: dict[str, str]):
    """(stamp ns, camera name, raw message, msgtype) of the named topics of one bag, in bag order."""
    with _reader(path) as r:
        by_topic = {c.topic: c for c in r.connections}
        conns = []
        for name, topic in topics.items():
            c = by_topic.get(topic)
            if c is None:
                images = sorted(t for t, c in by_topic.items() if c.msgtype in (IMAGE, COMPRESSED))
                raise InputError(f"{path} has no topic {topic!r}; its image topics: {images}")
            if c.msgtype not in (IMAGE, COMPRESSED):
                raise InputError(f"topic {topic!r} of {path} carries {c.msgtype}, not an image")
            conns.append(c)
        names = {topics[k]: k for k in topics}
        for conn, t, raw in r.messages(connections=conns):
            msg = r.deserialize(raw, conn.msgtype)
            stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
            yield stamp or t, names[conn.topic], msg, conn.msgtype


def bag_frame_sets(cameras: dict[str, str], tolerance_s: float = 0.05):
    """cameras: name -> "BAG_PATH#/topic" (one bag or several). Yields (timestamp ns, {name: BGR
    frame}) frame sets in time order, the first-named camera's messages as the clock; a set whose
    other cameras have no message within tolerance_s of it is skipped. Streams: only messages within
    the tolerance window are held, and only frames that are yielded are decoded."""
    import heapq
    from collections import deque

    per_bag: dict[str, dict[str, str]] = {}
    for name, spec in cameras.items():
        path, sep, topic = str(spec).partition("#")
        if not sep or not topic.startswith("/"):
            raise InputError(f"camera {name}: a bag source is PATH#/topic, got {spec!r}")
        per_bag.setdefault(path, {})[name] = topic
    names = list(cameras)
    ref, others = names[0], names[1:]
    tol = int(tolerance_s * 1e9)
    pending: deque = deque()                      # reference messages waiting for their partners
    buffers = {n: deque() for n in others}
    latest = {n: -1 for n in others}

    def resolve(final: bool):
        while pending:
            s, msg, kind = pending[0]
            if not final and any(latest[n] < s + tol for n in others):
                return                           # a partner nearer in time may still come
            pending.popleft()
            frames = {ref: to_bgr(msg, kind)}
            for n in others:
                buf = buffers[n]
                while len(buf) > 1 and abs(buf[1][0] - s) <= abs(buf[0][0] - s):
                    buf.popleft()
                if not buf or abs(buf[0][0] - s) > tol:
                    break
                frames[n] = to_bgr(buf[0][1], buf[0][2])
            if len(frames) == len(names):
                yield s, frames

    streams = [_messages(path, topics) for path, topics in per_bag.items()]
    for stamp, name, msg, kind in heapq.merge(*streams, key=lambda m: m[0]):
        if name == ref:
            pending.append((stamp, msg, kind))
        else:
            buf = buffers[name]
            buf.append((stamp, msg, kind))
            latest[name] = max(latest[name], stamp)
            while not pending and len(buf) > 1 and buf[0][0] < stamp - tol:
                buf.popleft()                    # no reference frame can want it any more
        yield from resolve(final=False)
    yield from resolve(final=True)
