"""Runs asks on a bundle in a fresh process with torch made unimportable; prints JSON results.
Usage: python runtime_worker.py BUNDLE CASES.json"""
import json
import sys


class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers") or name.startswith("mivl.export"):
            raise ImportError("blocked: " + name)


sys.meta_path.insert(0, Block())

import numpy as np  # noqa: E402

from mivl.edge.session import Session  # noqa: E402


def main():
    bundle, cases_file = sys.argv[1], sys.argv[2]
    cases = json.load(open(cases_file))
    out = []
    with Session(bundle, device="cpu", threads=2) as s:
        for c in cases:
            kw = {k: c[k] for k in ("images", "cameras", "max_new_tokens", "history") if k in c}
            if "video_npy" in c:
                kw["video"] = list(np.load(c["video_npy"]))
            ans = s.ask(c["question"], **kw)
            out.append({"tokens": ans.token_ids, "text": ans.text, "timings": ans.timings.to_dict()})
    assert not any(m.split(".")[0] == "torch" for m in sys.modules)
    print(json.dumps(out))


main()
