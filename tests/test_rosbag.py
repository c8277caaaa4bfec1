"""ROS 2 bags (sqlite3 and MCAP) as camera sources, on bags this test writes with rosbags."""
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="bag sources need the bags extra (rosbags)")

from mivl.edge.errors import InputError  # noqa: E402
from mivl.edge.multiview import CAMERAS  # noqa: E402
from mivl.edge.rosbag import bag_frame_sets  # noqa: E402

RNG = np.random.default_rng(11)


def frame(k: int, cam: int) -> np.ndarray:
    """A BGR test frame that names its tick and camera in its pixels."""
    img = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    img[0, 0] = (k, cam, 7)
    return img


def write_bag(path: Path, storage: str, ticks: int = 4, jitter_ms=(0, 3, -4, 8, -2, 5), compressed=(0, 2)):
    """Six camera topics, 10 Hz; cameras in `compressed` as JPEG-free PNG CompressedImage, the rest raw
    (rgb8 / bgr8 / mono8 alternating); header stamps jittered per camera."""
    import cv2
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    Image, Compressed = ts.types["sensor_msgs/msg/Image"], ts.types["sensor_msgs/msg/CompressedImage"]
    Header, Time = ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    truth = []
    with Writer(path, version=9, storage_plugin=plugin) as w:
        conns = {}
        for c, name in enumerate(CAMERAS):
            kind = Compressed if c in compressed else Image
            topic = f"/{name.lower()}/image" + ("/compressed" if c in compressed else "")
            conns[name] = (w.add_connection(topic, kind.__msgtype__, typestore=ts), kind, topic)
        for k in range(ticks):
            frames = {}
            for c, name in enumerate(CAMERAS):
                conn, kind, _ = conns[name]
                stamp = 1_000_000_000 + k * 100_000_000 + jitter_ms[c] * 1_000_000
                hdr = Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=name)
                bgr = frame(k, c)
                if kind is Compressed:
                    ok, png = cv2.imencode(".png", bgr)
                    msg = Compressed(header=hdr, format="png", data=np.frombuffer(png.tobytes(), np.uint8))
                    want = bgr
                else:
                    enc = ("rgb8", "bgr8", "mono8")[c % 3]
                    data = {"rgb8": bgr[:, :, ::-1], "bgr8": bgr, "mono8": bgr[:, :, 0]}[enc]
                    want = bgr if enc != "mono8" else np.repeat(bgr[:, :, :1], 3, axis=2)
                    ch = 1 if enc == "mono8" else 3
                    msg = Image(header=hdr, height=48, width=64, encoding=enc, is_bigendian=0, step=64 * ch,
                                data=np.ascontiguousarray(data).reshape(-1))
                frames[name] = want
                w.write(conn, stamp, ts.serialize_cdr(msg, kind.__msgtype__))
            truth.append(frames)
    return {name: f"{path}#{conns[name][2]}" for name in CAMERAS}, truth


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_six_cameras_grouped_by_timestamp(tmp_path, storage):
    specs, truth = write_bag(tmp_path / f"drive-{storage}", storage)
    sets = list(bag_frame_sets({"CAM_FRONT": specs["CAM_FRONT"], **{c: specs[c] for c in CAMERAS}}))
    assert len(sets) == len(truth)
    for (stamp, frames), want in zip(sets, truth):
        assert set(frames) == set(CAMERAS)
        for name in CAMERAS:
            np.testing.assert_array_equal(frames[name], want[name])


def test_a_camera_out_of_tolerance_skips_the_set_and_bad_specs_are_refused(tmp_path):
    specs, truth = write_bag(tmp_path / "late", "sqlite3", jitter_ms=(0, 0, 0, 0, 0, 80))
    sets = list(bag_frame_sets(specs, tolerance_s=0.05))
    # CAM_BACK_RIGHT is 80 ms late: with the first camera as the clock each set's nearest partner is
    # 80 ms (or 20 ms to the previous tick's message): only the ticks after the first pair up
    assert len(sets) == len(truth) - 1
    with pytest.raises(InputError, match="no topic '/nope'"):
        list(bag_frame_sets({**specs, "CAM_FRONT": str(tmp_path / "late") + "#/nope"}))
    with pytest.raises(InputError, match="PATH#/topic"):
        list(bag_frame_sets({**specs, "CAM_FRONT": str(tmp_path / "late")}))
    with pytest.raises(InputError, match="bag not found"):
        list(bag_frame_sets({**specs, "CAM_FRONT": "/no/bag#/x"}))


def test_demo_reads_a_bag_rig(tmp_path, demo_app):
    from sources import BagRig, open_rig      # beside the demo app (its folder on sys.path)

    specs, truth = write_bag(tmp_path / "drive", "mcap", ticks=3)
    rig = open_rig({k: "bag:" + v for k, v in specs.items()})
    assert isinstance(rig, BagRig)
    got = []
    while (frames := rig.read()) is not None:
        got.append(frames)
    rig.close()
    assert len(got) == 3 and all(np.array_equal(g[c], t[c]) for g, t in zip(got, truth) for c in CAMERAS)
    with pytest.raises(SystemExit, match="cannot be mixed"):
        open_rig({**{k: "bag:" + v for k, v in specs.items()}, "CAM_FRONT": "v4l2:/dev/video0"})
