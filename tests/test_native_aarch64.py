"""The compiled resampler built for AArch64 (Jetson Orin) and run under qemu: its NEON and portable
paths give PIL's very pixels. Needs a cross compiler and qemu-user (Debian: gcc-aarch64-linux-gnu,
qemu-user; .ci/run installs them)."""
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mivl.edge.resize import pil_windows

ROOT = Path(__file__).resolve().parent.parent
CC, QEMU = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
pytestmark = pytest.mark.skipif(not (CC and QEMU), reason="needs aarch64-linux-gnu-gcc and qemu-aarch64 "
                                "(apt-get install gcc-aarch64-linux-gnu qemu-user)")


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    exe = tmp_path_factory.mktemp("arm") / "resize_driver"
    r = subprocess.run([CC, "-O3", "-std=c11", "-Wall", "-Werror", "-DMIVL_NO_PYTHON", "-static",
                        str(ROOT / "tests/native/resize_driver.c"), str(ROOT / "mivl/edge/csrc/resample.c"),
                        "-o", str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return exe


def job(img: np.ndarray, width: int, height: int) -> bytes:
    h, w, c = img.shape
    parts, kx, ky = [], 0, 0
    if width != w:
        xmin, count, weights = pil_windows(w, width)
        kx = weights.shape[1]
        parts += [xmin, count, weights]
    if height != h:
        ymin, count, weights = pil_windows(h, height)
        ky = weights.shape[1]
        parts += [ymin, count, weights]
    head = np.array([h, w, c, width, height, kx, ky], "<i4").tobytes()
    return head + img.tobytes() + b"".join(np.ascontiguousarray(p, "<i4").tobytes() for p in parts)


@pytest.mark.parametrize("portable", [False, True], ids=["neon", "portable"])
def test_aarch64_build_is_bit_exact(driver, tmp_path, portable):
    rng = np.random.default_rng(7)
    cases = [((900, 1600, 3), (896, 448)), ((896, 2688, 3), (448, 448)), ((480, 640, 3), (1344, 896)),
             ((37, 501, 1), (200, 300)), ((1, 1, 3), (5, 3))]
    # (widths from 8: a picture over 100 times taller than wide is Pillow's vertical-first case,
    # which mivl.edge.native.resize runs as two calls; the driver is one call)
    cases += [((int(rng.integers(1, 400)), int(rng.integers(8, 400)), 3),
               (int(rng.integers(1, 400)), int(rng.integers(1, 400)))) for _ in range(12)]
    for shape, (width, height) in cases:
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        (tmp_path / "job").write_bytes(job(img, width, height))
        r = subprocess.run([QEMU, str(driver), str(tmp_path / "job"), str(tmp_path / "out")]
                           + (["portable"] if portable else []), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == ("other" if portable else "neon")
        got = np.frombuffer((tmp_path / "out").read_bytes(), np.uint8).reshape(height, width, shape[2])
        pil = np.asarray(Image.fromarray(img[:, :, 0] if shape[2] == 1 else img).resize((width, height), Image.BICUBIC))
        assert np.array_equal(got, pil.reshape(got.shape)), (shape, width, height)
