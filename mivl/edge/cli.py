"""mivl: ask a bundle questions, or describe it.

  mivl ask BUNDLE [--image PATH ...] [--cam NAME=PATH ...] [--video PATH] [--stream] [--json] QUESTION
  mivl info BUNDLE [--budget]
  mivl eval BUNDLE [--questions N] [--seed S]     accuracy on held-out synthetic driving questions
"""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import MivlError


def add_trusted_key(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trusted-key", action="append", metavar="PUBLIC.pem",
                   help="refuse the bundle unless its signature verifies with this key (repeat for several)")


def ask_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mivl ask", description="Ask a bundle a question.")
    p.add_argument("bundle")
    p.add_argument("question")
    p.add_argument("--image", action="append", default=[], help="an image (repeat for several)")
    p.add_argument("--cam", action="append", default=[], metavar="NAME=PATH",
                   help="a camera frame, e.g. CAM_FRONT=front.jpg (all six together)")
    p.add_argument("--video", help="a video file (frames are sampled)")
    p.add_argument("--frames", type=int, default=8, help="frames sampled from --video (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--max-tiles", type=int, help="tile budget of the prompt")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int)
    p.add_argument("--n-ctx", type=int)
    add_trusted_key(p)
    p.add_argument("--ground", metavar="PHRASE", help="ask for the bounding box of PHRASE (InternVL's grounding "
                   "prompt; the phrase is plain text) instead of QUESTION; pass '' as QUESTION")
    p.add_argument("--stream", action="store_true", help="print the answer as it is decoded")
    p.add_argument("--json", action="store_true", help="print text, token_ids, objects and timings as JSON")
    return p


def parse_cams(items: list[str]) -> dict | None:
    if not items:
        return None
    cams = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise MivlError(f"--cam takes NAME=PATH, got {item!r}")
        cams[name] = path
    return cams


def main_ask(argv) -> int:
    from .session import Session

    from .chunks import grounding_question

    a = ask_parser().parse_args(argv)
    question = grounding_question(a.ground) if a.ground else a.question
    with Session(a.bundle, device=a.device, threads=a.threads, n_ctx=a.n_ctx, trusted_keys=a.trusted_key) as s:
        kw = dict(images=a.image or None, cameras=parse_cams(a.cam), video=a.video, num_frames=a.frames,
                  max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_p=a.top_p, seed=a.seed,
                  max_tiles=a.max_tiles)
        if a.stream and not a.json:
            for piece in s.ask(question, stream=True, **kw):
                print(piece, end="", flush=True)
            print()
            return 0
        ans = s.ask(question, **kw)
        if a.json:
            print(json.dumps({**ans.to_dict(), "backends": s.backends}, ensure_ascii=False, indent=2))
        else:
            print(ans.text)
            for o in ans.objects:
                print(f"  {o.kind}: {o.to_dict()}")
            if not ans.objects:
                print("  (no boxes or camera points in the answer)")
            t = ans.timings
            print(f"[{t.prompt_tokens} prompt tokens, {t.new_tokens} new; preprocess {t.preprocess_s:.2f}s, "
                  f"vision {t.vision_s:.2f}s, prefill {t.prefill_s:.2f}s, decode {t.decode_tokens_per_s:.1f} tok/s]",
                  file=sys.stderr)
    return 0


def main_info(argv) -> int:
    from ..runtimes.backends import llama_has_gpu
    from ..runtimes.ort import available_providers
    from .bundle import open_bundle
    from .multiview import CANVAS_H, CANVAS_W
    from .preprocess import grid_for_size

    p = argparse.ArgumentParser(prog="mivl info", description="Describe a bundle and this machine's backends.")
    p.add_argument("bundle")
    p.add_argument("--json", action="store_true")
    p.add_argument("--budget", action="store_true", help="memory needs against Jetson Orin Nano 8GB / NX 16GB / "
                   "AGX 64GB")
    p.add_argument("--n-ctx", type=int, help="context for --budget (default: the bundle's)")
    p.add_argument("--tiles", type=int, help="tile batch for --budget (default: the bundle's max)")
    add_trusted_key(p)
    a = p.parse_args(argv)
    b = open_bundle(a.bundle, trusted_keys=a.trusted_key)
    if a.budget:
        from .budget import budget, format_budget

        r = budget(b, n_ctx=a.n_ctx, tiles=a.tiles)
        print(json.dumps(r, indent=2) if a.json else format_budget(r))
        return 0
    info = {"manifest": b.manifest, "report": b.report(),
            "backends_here": {"onnxruntime": available_providers(), "llama_cpp_gpu": llama_has_gpu()}}
    if a.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    m, r = b.manifest, info["report"]
    print(f"bundle {b.path} (schema {m['schema_version']}, mivl {m['sdk_version']}, preset {m['preset']})")
    print(f"  source   {m['source']['checkpoint']} ({m['source']['llm_family']}), weights sha256 "
          f"{m['source']['weights_sha256'][:12]}")
    print(f"  vision   {m['vision']['file']} {m['vision']['precision']}, up to {m['vision']['max_tiles']} tiles"
          + (f", cosine min {r['vision']['min_cosine']:.5f}" if 'vision' in r else ""))
    print(f"  llm      {m['llm']['file']} {m['llm']['quant']}, n_embd {m['llm']['n_embd']}, ctx {m['llm']['n_ctx']}"
          + (f", top-1 {r['llm']['top1_agreement']:.3f}" if 'llm' in r else ""))
    pp = m["preprocessing"]
    six = grid_for_size(CANVAS_W, CANVAS_H, b.preprocessing)
    print(f"  tiling   {pp['image_size']}px tiles, " + (f"dynamic {pp['min_tiles']}..{pp['max_tiles']} (max_dynamic_patch "
          f"{pp['max_tiles']})" if pp["dynamic"] else "one tile") + f", thumbnail {'yes' if pp['use_thumbnail'] else 'no'}; "
          f"six cameras: {six.cols}x{six.rows}{' + thumbnail' if six.thumbnail else ''} = "
          f"{six.n_grid + int(six.thumbnail)} tiles")
    print(f"  prompt   template {m['prompt']['template']}, {m['prompt']['tokens_per_tile']} tokens per tile")
    print(f"  validation {'passed' if r.get('passed') else 'FAILED or absent'}")
    print(f"  here     onnxruntime {', '.join(info['backends_here']['onnxruntime']) or 'missing'}; "
          f"llama.cpp GPU offload {'yes' if info['backends_here']['llama_cpp_gpu'] else 'no'}")
    return 0


def main_eval(argv) -> int:
    from ..calib.evaluate import EVAL_SEED, FIGURES, asker, score
    from ..calib.questions import KINDS, MAX_OBJECTS, MAX_SCENE_OBJECTS, MC_KINDS
    from .session import Session

    p = argparse.ArgumentParser(prog="mivl eval", description="Accuracy of a bundle on freshly drawn, held-out "
                                "synthetic six-camera driving scenes (multiple-choice colour, class and camera "
                                "questions by default).")
    p.add_argument("bundle")
    p.add_argument("--questions", type=int, default=200, help="how many questions (default 200)")
    p.add_argument("--seed", type=int, default=EVAL_SEED, help=f"question stream (default {EVAL_SEED})")
    p.add_argument("--kinds", default=",".join(MC_KINDS), help=f"comma list of {', '.join(KINDS)}")
    p.add_argument("--max-objects", type=int, default=MAX_OBJECTS,
                   help=f"objects per camera in the drawn scenes (0..N; default {MAX_OBJECTS})")
    p.add_argument("--threads", type=int)
    p.add_argument("--json", action="store_true", help="print every question and answer as JSON")
    a = p.parse_args(argv)
    kinds = tuple(k for k in a.kinds.split(",") if k)
    bad = set(kinds) - set(KINDS)
    if bad or not kinds:
        raise MivlError(f"--kinds takes {', '.join(KINDS)}; got {a.kinds!r}")
    from . import args
    from .request import check_seed

    args.integer("--questions", a.questions, 1, 1_000_000)
    check_seed("--seed", a.seed)
    args.integer("--max-objects", a.max_objects, 0, MAX_SCENE_OBJECTS, "objects per camera of a synthetic scene")
    with Session(a.bundle, threads=a.threads) as s:
        res = score(asker(s), a.questions, a.seed, kinds, keep=a.json, max_objects=a.max_objects)
    if a.json:
        print(json.dumps(res, indent=2, ensure_ascii=False))
        return 0
    print(f"accuracy {res['accuracy']:.3f} on {res['n']} held-out questions (stream {a.seed}, "
          f"up to {a.max_objects} object(s) per camera, "
          f"{res['seconds']:.0f} s)")
    for k, v in res["per_kind"].items():
        extra = "".join(f", {name.replace('_', ' ')} {v[name]:.3f}" for name in FIGURES.values() if name in v)
        print(f"  {k:<13} {v['accuracy']:.3f}  ({v['n']}{extra})")
    return 0


def main_serve(argv) -> int:
    p = argparse.ArgumentParser(prog="mivl serve", description="Serve a bundle over an OpenAI-compatible HTTP API "
                                "(POST /v1/chat/completions, GET /v1/models, GET /health).")
    p.add_argument("bundle")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: no key)")
    p.add_argument("--queue", type=int, default=8, help="requests that may wait for the one generating (default 8)")
    p.add_argument("--allow-local-files", action="store_true", help="accept local file paths as image URLs")
    p.add_argument("--max-body-mb", type=int, default=64, help="largest request body (default 64 MB)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int)
    p.add_argument("--n-ctx", type=int)
    add_trusted_key(p)
    a = p.parse_args(argv)
    try:
        from ..serve.app import serve
    except ImportError as e:
        raise MivlError(f"mivl serve needs the serve extra (pip install 'mivl[serve]'): {e}") from None
    from . import args

    args.integer("--port", a.port, 1, 65535)
    args.integer("--queue", a.queue, 0, 10_000)
    args.integer("--max-body-mb", a.max_body_mb, 1, 4096)
    print(f"mivl serve: {a.bundle} on http://{a.host}:{a.port}/v1 (Ctrl-C stops)", file=sys.stderr)
    serve(a.bundle, a.host, a.port, a.api_key, a.queue, a.allow_local_files, a.max_body_mb << 20,
          device=a.device, threads=a.threads, n_ctx=a.n_ctx, trusted_keys=a.trusted_key)
    return 0


COMMANDS = {"ask": (main_ask, "ask a bundle a question about images, six cameras or a video"),
            "info": (main_info, "describe a bundle, this machine's backends, and (--budget) its memory needs"),
            "eval": (main_eval, "accuracy on held-out synthetic driving questions"),
            "serve": (main_serve, "serve a bundle over an OpenAI-compatible HTTP API")}


def usage() -> str:
    lines = ["usage: mivl COMMAND [options]   (mivl COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<6} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(usage())
        return 0
    if not argv or argv[0] not in COMMANDS:
        print(usage(), file=sys.stderr)
        if argv:
            print(f"\nmivl: error: unknown command {argv[0]!r}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[argv[0]][0](argv[1:])
    except MivlError as e:
        print(f"mivl: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
