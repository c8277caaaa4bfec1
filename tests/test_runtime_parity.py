"""End-to-end parity: the edge runtime (ONNX Runtime + llama.cpp, torch unimportable) gives the
PyTorch reference's greedy tokens for one image, several images, six cameras and video."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mivl.calib.synthetic import draw_scene
from mivl.edge.multiview import CAMERAS

FAMILIES = ["qwen2", "internlm2", "phi3"]
STEPS = 8


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    scene = draw_scene(11, 800, 450)
    cams = {}
    for name, img in scene.cameras.items():
        Image.fromarray(img).save(d / f"{name}.png")
        cams[name] = str(d / f"{name}.png")
    extra = np.random.default_rng(0).integers(0, 256, (300, 700, 3), dtype=np.uint8)
    Image.fromarray(extra).save(d / "wide.png")
    frames = np.stack([draw_scene(20 + i, 320, 180).cameras["CAM_FRONT"] for i in range(4)])
    np.save(d / "frames.npy", frames)
    return {"one": [cams["CAM_FRONT"]], "several": [cams["CAM_BACK"], str(d / "wide.png")],
            "cameras": cams, "frames": frames, "frames_npy": str(d / "frames.npy")}


def run_runtime(bundle, cases, tmp_path):
    f = tmp_path / "cases.json"
    f.write_text(json.dumps(cases))
    r = subprocess.run([sys.executable, str(Path(__file__).parent / "runtime_worker.py"), str(bundle), str(f)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def parity_cases(inputs) -> list[dict]:
    """One image, several images, six cameras, video, text: the runtime_worker cases."""
    return [
        {"question": "What is in the picture?", "images": inputs["one"], "max_new_tokens": STEPS},
        {"question": "Compare the two images.", "images": inputs["several"], "max_new_tokens": STEPS},
        {"question": "What is in front of the car?", "cameras": inputs["cameras"], "max_new_tokens": STEPS},
        {"question": "What happens in the video?", "video_npy": inputs["frames_npy"], "max_new_tokens": STEPS},
        {"question": "Hello, who are you?", "max_new_tokens": STEPS},
    ]


def reference_answers(ref, cases, inputs) -> list:
    """The PyTorch reference's answers to parity_cases (video from the in-memory frames)."""
    return [ref.ask(c["question"], max_new_tokens=c["max_new_tokens"],
                    **({"video": list(inputs["frames"])} if "video_npy" in c else
                       {k: c[k] for k in ("images", "cameras") if k in c}))
            for c in cases]


@pytest.mark.parametrize("family", FAMILIES)
def test_runtime_matches_reference(family, bundle_dir, reference, inputs, tmp_path):
    ref = reference(family)
    cases = parity_cases(inputs)
    got = run_runtime(bundle_dir(family, "fp32"), cases, tmp_path)
    expected = reference_answers(ref, cases, inputs)
    for name, g, e in zip(["one image", "several images", "six cameras", "video", "text"], got, expected):
        assert g["tokens"] == e.token_ids, f"{family} {name}: runtime {g['tokens']} != reference {e.token_ids}"
    assert got[2]["timings"]["prompt_tokens"] == len(expected[2].prompt_ids)  # 13 tiles x 256 + text
    assert got[2]["timings"]["prompt_tokens"] > 13 * 256
