"""Time to first token of one cold six-camera question (six synthetic 1600x900 cameras, 2 threads),
printed as JSON with the path of the mivl package that ran it. For side-by-side runs of two SDK
versions on the same machine:

    git worktree add /tmp/oldmain REV
    PYTHONPATH=/tmp/oldmain .venv/bin/python benchmarks/ttft_six_cameras.py OLD_BUNDLE
    .venv/bin/python benchmarks/ttft_six_cameras.py NEW_BUNDLE
"""
import json
import os
import sys

import mivl
from mivl.calib.synthetic import draw_scene
from mivl.edge.session import Session

with Session(sys.argv[1], device="cpu", threads=os.cpu_count()) as s:
    t = s.ask("What is ahead?", cameras=dict(draw_scene(1).cameras), max_new_tokens=2).timings.to_dict()
print(json.dumps({"mivl": mivl.__file__, **{k: t[k] for k in ("vision_s", "prefill_s", "time_to_first_token_s",
                                                              "prompt_tokens")}}))
