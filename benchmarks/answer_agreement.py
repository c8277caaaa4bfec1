"""Two runs on the same questions, side by side: per kind, each run's accuracy, the difference in
points and how many answers differ (right -> wrong, wrong -> right). For an INT8 bundle against the
fp32 reference (or any two bundles): how far quantisation moves each kind, and whether a gap is
questions or noise.

    .venv/bin/mivl eval BUNDLE --kinds ... --questions N --json > b.json
    .venv/bin/python benchmarks/answer_agreement.py a.json b.json [--first K]

Either file may also be what `mivl.calib.evaluate.score(..., keep=True)` returns, dumped as JSON
(the PyTorch reference). Both must hold the same question stream (seed, kinds, objects per camera);
with --first K only the first K questions count.
"""
import argparse
import json
from collections import defaultdict


def load(path: str) -> dict:
    run = json.load(open(path))
    if "answers" not in run:
        raise SystemExit(f"{path} holds no answers: run mivl eval with --json (score with keep=True)")
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--first", type=int, default=None)
    args = ap.parse_args()
    a, b = load(args.a), load(args.b)
    for key in ("seed", "max_objects"):
        if a.get(key) != b.get(key):
            raise SystemExit(f"the runs differ in {key}: {a.get(key)} and {b.get(key)}")
    n = min(len(a["answers"]), len(b["answers"]), args.first or 1 << 62)
    pairs = list(zip(a["answers"][:n], b["answers"][:n]))
    for x, y in pairs:
        if x["question"] != y["question"]:
            raise SystemExit(f"question {x['i']} differs between the runs: not the same stream")
    kinds = defaultdict(list)
    for x, y in pairs:
        kinds[x["kind"]].append((x, y))
    print(f"{n} questions; a = {args.a}, b = {args.b}")
    print("| kind | questions | a | b | b - a (points) | answers that differ | right -> wrong | wrong -> right |")
    print("|---|---|---|---|---|---|---|---|")
    for k in sorted(kinds) + ["all"]:
        rows = pairs if k == "all" else kinds[k]
        ra, rb = sum(x["correct"] for x, _ in rows), sum(y["correct"] for _, y in rows)
        differ = sum(x["got"].strip() != y["got"].strip() for x, y in rows)
        lost = sum(x["correct"] and not y["correct"] for x, y in rows)
        won = sum(y["correct"] and not x["correct"] for x, y in rows)
        print(f"| {k} | {len(rows)} | {ra / len(rows):.3f} | {rb / len(rows):.3f} | "
              f"{100 * (rb - ra) / len(rows):+.2f} | {differ} | {lost} | {won} |")


if __name__ == "__main__":
    main()
