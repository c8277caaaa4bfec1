"""`mivl serve` overhead per request against Session.ask on the same bundle, in the same run.

    .venv/bin/python benchmarks/bench_serve.py [--requests 12] [--bundle out/default-bundle]

Each request asks about one camera of the sample scene (the six cycled, the feature cache off, so
each one runs the vision encoder and the image prefill as a new picture would), 8 new tokens:
first directly through Session.ask, then over HTTP with the official openai client (image sent as a
base64 data URI, as a client would). Overhead = HTTP wall time - Session.ask wall time, per request.
"""
from __future__ import annotations

import argparse
import base64
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).parent.parent
SCENE = ROOT / "examples" / "sample_scene"
Q = "What is the yellow object?\nOptions: car, truck, bus, pedestrian, cone, traffic light.\nAnswer with one of the options."


def ensure_bundle(path: Path) -> Path:
    if not (path / "manifest.json").is_file():
        subprocess.run([sys.executable, "-m", "mivl.export.cli", "mivl/assets/default_model", "-o", str(path),
                        "--int8", "--keep-float", "projector,attention,patch_embed,last_block", "-q", "--force"], check=True,
                       cwd=ROOT)
    return path


def main() -> None:
    import openai
    import uvicorn

    from mivl.edge import Session
    from mivl.serve.app import Server, create_app

    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=12)
    ap.add_argument("--bundle", default=str(ROOT / "out" / "default-bundle"))
    a = ap.parse_args()
    bundle = ensure_bundle(Path(a.bundle))
    images = sorted(SCENE.glob("CAM_*.jpg"))
    jpegs = [p.read_bytes() for p in images]
    uris = ["data:image/jpeg;base64," + base64.b64encode(b).decode() for b in jpegs]
    threads = os.cpu_count()
    with Session(bundle, device="cpu", threads=threads, feature_cache_mb=0) as s:
        s.ask("warm up", images=[jpegs[0]], max_new_tokens=2)
        direct, ttft = [], []
        for k in range(a.requests):
            t0 = time.perf_counter()
            ans = s.ask(Q, images=[jpegs[k % len(jpegs)]], max_new_tokens=8)
            direct.append(time.perf_counter() - t0)
            ttft.append(ans.timings.time_to_first_token_s)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        uv = uvicorn.Server(uvicorn.Config(create_app(Server(s, bundle.name)), host="127.0.0.1", port=port,
                                           log_level="error"))
        t = threading.Thread(target=uv.run, daemon=True)
        t.start()
        while not uv.started:
            time.sleep(0.05)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        client.chat.completions.create(model="m", max_tokens=2, messages=[{"role": "user", "content": "warm up"}])
        http = []
        for k in range(a.requests):
            msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": uris[k % len(uris)]}},
                                                 {"type": "text", "text": Q}]}]
            t0 = time.perf_counter()
            client.chat.completions.create(model="m", messages=msgs, max_tokens=8, temperature=0)
            http.append(time.perf_counter() - t0)
        uv.should_exit = True
        t.join(10)
    over = [h - d for h, d in zip(http, direct)]
    med = statistics.median
    print(f"machine: {os.cpu_count()} cores; bundle {bundle.name}; {a.requests} requests, one camera image each, "
          "8 new tokens, feature cache off")
    print("| path | median wall ms | median TTFT ms |")
    print("|---|---|---|")
    print(f"| Session.ask (baseline) | {med(direct) * 1e3:.1f} | {med(ttft) * 1e3:.1f} |")
    print(f"| mivl serve + openai client | {med(http) * 1e3:.1f} | |")
    print(f"| overhead per request | {med(over) * 1e3:.1f} ({med(over) / med(ttft) * 100:.1f}% of TTFT) | |")


if __name__ == "__main__":
    main()
