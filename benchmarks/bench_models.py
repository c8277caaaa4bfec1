"""Real-size benchmarks (random weights: compute cost is real, answers are not).

  vision   1B vision encoder: export time / peak memory per precision, and CPU latency per tile of
           ONNX Runtime fp32 / fp16 / INT8 against PyTorch eager, in the same run
  llm      1B and 2B LLMs to GGUF: time, peak memory, file size per quant type
  runtime  decode tokens/s of the mivl runtime against raw llama-cpp-python on the same GGUF, and
           time to first token for one image and for six cameras (1B, INT8 vision + q8_0)
  decode   decode tokens/s per GGUF type (f16, q8_0, q4_k_m): raw llama-cpp-python and the mivl
           LLM backend against PyTorch (transformers for Qwen2; the mivl reference for InternLM2)
  flash    llama.cpp flash attention on vs off (CPU): logits against the PyTorch reference on
           text and image-heavy prompts (f32 GGUF, so only attention differs), and prefill speed
  vision-gpu  on a GPU: 13 tiles through PyTorch eager (fp32, fp16) against ONNX Runtime's CUDA
           execution provider and the TensorRT engine (mivl's TrtVision) per exported precision
           (needs the vision section's exports; not yet run by this project: no GPU was lent)

Usage: .venv/bin/python benchmarks/bench_models.py [vision] [llm] [runtime] [decode] [flash] [vision-gpu]
       [--size 1B|2B|default]
       [--work DIR]
Each step runs in its own process, so peak memory (ru_maxrss) is the step's own.
"""
import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from bench_common import child, ensure_checkpoint, int8_bundle

def bench_vision(work: Path, size: str = "1B", rounds: int = 7) -> list[str]:
    ckpt = ensure_checkpoint(work, size)
    rows = []
    for prec in ("fp32", "fp16", "int8"):
        out = work / f"vision-{size}-{prec}"
        cached = work / f"vision-{size}-{prec}.json"
        if cached.is_file():
            rows.append((prec, json.loads(cached.read_text())))
            continue
        res = child(f"""
import time, shutil, numpy as np
from pathlib import Path
from mivl.export.checkpoint import load_checkpoint
from mivl.export.reference import Reference
from mivl.export.vision_onnx import export_vision
from mivl.export.vision_check import check_vision, reference_features
from mivl.export.quantize import quantize_vision_isolated
from mivl.calib.synthetic import scene_images
out = Path({str(out)!r}); shutil.rmtree(out, ignore_errors=True); out.mkdir(parents=True)
ref = Reference({str(ckpt)!r})
t = time.time()
path = export_vision(ref.model, out / 'vision.onnx', half={prec == "fp16"!r})
if {prec!r} == 'int8':
    calib = np.concatenate([ref.tiles(images=[im], max_tiles=1).pixels for im in scene_images(4, seed=0)])
    q = out / 'vision.int8.onnx'
    del ref.model.language_model
    quantize_vision_isolated(path, q, calib, 'minmax')
    path = q
secs = time.time() - t   # the graph as traced (attention written out); fused below, as the exporter does
val = np.concatenate([ref.tiles(images=[im], max_tiles=1).pixels for im in scene_images(2, seed=100000)])
feats = reference_features(ref.model, val)
RESULT = dict(seconds=secs, vision=check_vision(path, {prec!r}, val, feats), size=path.stat().st_size,
              file=path.name)
""")
        rows.append((prec, res))
        cached.write_text(json.dumps(res))
        print(f"export {prec}: {res['seconds']:.0f} s, peak {res['peak_gib']:.1f} GiB", file=sys.stderr)
    files = {p: str(work / f"vision-{size}-{p}" / r["file"]) for p, r in rows}
    fused = {p: f.replace(".onnx", ".fused.onnx") for p, f in files.items()}
    made = child(f"""
import os, shutil
from mivl.export.checkpoint import read_config
from mivl.runtimes.attention_graph import fuse_file
heads = read_config(__import__('pathlib').Path({str(ckpt)!r}))[0].vision.num_attention_heads
RESULT = {{}}
for p, src in {files!r}.items():
    dst = {fused!r}[p]
    if not os.path.isfile(dst):
        shutil.copy(src, dst + '.tmp'); fuse_file(dst + '.tmp', heads); os.replace(dst + '.tmp', dst)
    RESULT[p] = os.path.getsize(dst)
""")
    # every artifact loaded at once and run in turn, round after round: this machine's speed drifts
    # by +-20% within minutes, so each ratio is the median over rounds of per-round ratios
    lat = child(f"""
import time, numpy as np, torch, onnxruntime as ort
from mivl.export.checkpoint import load_checkpoint
from mivl.runtimes.ort import session_options
torch.set_num_threads({os.cpu_count()})
ck = load_checkpoint({str(ckpt)!r})
x = np.random.default_rng(0).standard_normal((1, 3, 448, 448)).astype(np.float32)
def cos(a, b):
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())
runs = {{'torch_eager_fp32': lambda: ck.model.extract_feature(torch.from_numpy(x))}}
RESULT = {{}}
for prec in {[p for p, _ in rows]!r}:
    outs = {{}}
    for kind, path in (('written', {files!r}[prec]), ('fused', {fused!r}[prec])):
        so = session_options({os.cpu_count()})
        s = ort.InferenceSession(path, so, providers=['CPUExecutionProvider'])
        runs['ort_' + prec + '_' + kind] = (lambda s: lambda: s.run(None, {{'pixel_values': x}}))(s)
        outs[kind] = runs['ort_' + prec + '_' + kind]()[0]
    RESULT['cos_' + prec] = cos(outs['written'], outs['fused'])
for f in runs.values():
    f()
times = {{k: [] for k in runs}}
for _ in range({rounds}):
    for k, f in runs.items():
        time.sleep(0.5)    # the previous run's idle threads (OpenMP, ONNX Runtime) stop spinning first
        t = time.perf_counter(); f(); times[k].append(time.perf_counter() - t)
base = times['torch_eager_fp32']
for k, ts in times.items():
    RESULT[k] = float(np.median(ts))
    RESULT['speedup_' + k] = float(np.median([b / t for b, t in zip(base, ts)]))
""")
    out = [f"| vision artifact ({size}: InternViT + projector) | export s | export peak GiB | file MiB | "
           f"cosine vs PyTorch (min / mean) | CPU s per tile (median of {rounds}) | vs PyTorch eager "
           "(median of per-round ratios) |", "|---|---|---|---|---|---|---|"]
    base = lat["torch_eager_fp32"]
    out.append(f"| PyTorch eager fp32 (baseline) | | | | | {base:.2f} | 1.00x |")
    for prec, r in rows:
        v = r["vision"]
        for kind, label in (("written", "attention written out (before)"), ("fused", "fused attention (now)")):
            key = f"ort_{prec}_{kind}"
            cosine = (f"{v['min_cosine']:.5f} / {v['mean_cosine']:.5f}" if kind == "written" else
                      f"{lat['cos_' + prec]:.5f} min vs the row above")
            size_mib = (r["size"] if kind == "written" else made[prec]) / 2**20
            out.append(f"| ONNX {prec}, {label} | {r['seconds']:.0f} | {r['peak_gib']:.1f} | {size_mib:.0f} | "
                       f"{cosine} | {lat[key]:.2f} | {lat['speedup_' + key]:.2f}x |")
    return out


def bench_flash(work: Path, size: str = "1B") -> list[str]:
    """Flash attention in llama.cpp's CPU backend: fidelity and prefill time, on vs off."""
    ckpt = ensure_checkpoint(work, size)
    gguf = gguf_for(work, size, "f32")
    cases = work / f"flash-cases-{size}.npz"
    if not cases.is_file():
        child(f"""
import numpy as np
from mivl.export.reference import Reference
from mivl.export.llm_export import reference_cases
from mivl.calib.synthetic import scene_images
ref = Reference({str(ckpt)!r})
np.savez({str(cases)!r}, **reference_cases(ref, scene_images(1, seed=7, width=1600, height=900), steps=8, n_ctx=4096))
RESULT = {{}}
""")
    rows = [f"| llama.cpp CPU, {size} f32 GGUF | max rel. logit error (text / image prompt) | top-1 agreement | "
            "greedy identical | prefill tokens/s (image prompt) |", "|---|---|---|---|---|"]
    for flash in (False, True):
        r = child(f"""
import time, numpy as np
from mivl.export.llm_check import compare, feed_prompt
from mivl.runtimes.llm_llamacpp import LlamaCppLLM
data = np.load({str(cases)!r})
llm = LlamaCppLLM({str(gguf)!r}, n_ctx=4096, n_batch=512, n_threads={os.cpu_count()}, flash_attn={flash!r})
res = compare(llm, data)
img = [c for c in range(int(data['n_cases'])) if len(data[f'feats{{c}}'])][0]
ids = data[f'ids{{img}}']
t = time.perf_counter(); feed_prompt(llm, ids, data[f'feats{{img}}'], int(data['img_context_id'])); dt = time.perf_counter() - t
RESULT = dict(text=max(x['max_rel_logit_error'] for x in res if not x['image']),
              image=max(x['max_rel_logit_error'] for x in res if x['image']),
              top1=sum(x['top1_agree'] for x in res) / sum(x['steps'] for x in res),
              greedy=all(x['greedy_identical'] for x in res), tokens=len(ids), tps=len(ids) / dt)
""")
        rows.append(f"| flash attention {'on' if flash else 'off'} | {r['text']:.1e} / {r['image']:.1e} | "
                    f"{r['top1']:.3f} | {'yes' if r['greedy'] else 'no'} | {r['tps']:.0f} ({r['tokens']} tokens) |")
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


GPU_TILES = 13   # a six-camera request


def bench_vision_gpu(work: Path, size: str = "1B") -> list[str]:
    """13 tiles on the GPU: PyTorch eager vs ONNX Runtime CUDA EP vs the TensorRT engine, per
    precision of the vision section's exports, in one process (one CUDA context)."""
    bench_vision(work, size)            # the exports (cached)
    ckpt = ensure_checkpoint(work, size)
    files = {p: json.loads((work / f"vision-{size}-{p}.json").read_text())["file"] for p in ("fp32", "fp16", "int8")}
    res = child(f"""
import time, numpy as np, torch, cupy, onnxruntime as ort
from pathlib import Path
from mivl.export.checkpoint import load_checkpoint
from mivl.runtimes.tensorrt_engine import build_plan
from mivl.runtimes.vision_trt import TrtVision
work, n = Path({str(work)!r}), {GPU_TILES}
x = np.random.default_rng(0).standard_normal((n, 3, 448, 448)).astype(np.float32)
def best(f, reps=10):
    f(); b = 1e9
    for _ in range(reps):
        t = time.perf_counter(); f(); b = min(b, time.perf_counter() - t)
    return b
RESULT = {{}}
model = load_checkpoint({str(ckpt)!r}).model
del model.language_model
model = model.cuda().eval()
xt = torch.from_numpy(x).cuda()
def eager():
    with torch.no_grad():
        model.extract_feature(xt)
    torch.cuda.synchronize()
RESULT['torch_fp32'] = best(eager)
model = model.half(); xt = xt.half()
RESULT['torch_fp16'] = best(eager)
del model; torch.cuda.empty_cache()
xd = cupy.asarray(x)
for prec, name in {sorted(files.items())!r}:
    onnx = work / f'vision-{size}-{{prec}}' / name
    s = ort.InferenceSession(str(onnx), providers=['CUDAExecutionProvider'])
    RESULT['ort_' + prec] = best(lambda: s.run(None, {{'pixel_values': x}}))
    t = time.time()
    plan = build_plan(onnx, work / 'engines' / f'vision-{size}-{{prec}}.plan', 'pixel_values', n,
                      fp16=prec == 'fp16', int8=prec == 'int8')
    RESULT['build_' + prec] = time.time() - t
    trt = TrtVision(plan, 'pixel_values', n)
    RESULT['trt_' + prec] = best(lambda: trt.run_device(xd, keep_on_device=True))
RESULT['gpu'] = torch.cuda.get_device_name(0)
""")
    base = res["torch_fp32"]
    rows = [f"| vision, {size}, {GPU_TILES} tiles on {res['gpu']} | ms | vs PyTorch eager fp32 | engine build s |",
            "|---|---|---|---|",
            f"| PyTorch eager fp32 (baseline) | {base * 1e3:.1f} | 1.00x | |",
            f"| PyTorch eager fp16 | {res['torch_fp16'] * 1e3:.1f} | {base / res['torch_fp16']:.2f}x | |"]
    for prec in ("fp32", "fp16", "int8"):
        rows.append(f"| ONNX Runtime CUDA EP, {prec} (host input and output) | {res['ort_' + prec] * 1e3:.1f} | "
                    f"{base / res['ort_' + prec]:.2f}x | |")
        rows.append(f"| TensorRT engine, {prec} (device buffers) | {res['trt_' + prec] * 1e3:.1f} | "
                    f"{base / res['trt_' + prec]:.2f}x | {res['build_' + prec]:.0f} |")
    return rows


def bench_llm(work: Path) -> list[str]:
    out = ["| LLM | GGUF type | convert s | peak GiB | file MiB |", "|---|---|---|---|---|"]
    for size in ("1B", "2B"):
        ckpt = ensure_checkpoint(work, size)
        for quant in ("f16", "q8_0", "q4_k_m"):
            res = child(f"""
import time, tempfile
from pathlib import Path
from mivl.export.reference import Reference
from mivl.export.llm_export import write_llm
t = time.time()
ref = Reference({str(ckpt)!r})
p = Path({str(work)!r}) / 'llm-{size}.{quant}.gguf'
write_llm(ref, p, {quant!r}, 4096, Path(tempfile.mkdtemp(dir={str(work)!r})))
RESULT = dict(seconds=time.time() - t, size=p.stat().st_size)
""")
            out.append(f"| {size} | {quant} | {res['seconds']:.0f} | {res['peak_gib']:.1f} | {res['size'] / 2**20:.0f} |")
            print(out[-1], file=sys.stderr)
    return out


def gguf_for(work: Path, size: str, quant: str) -> Path:
    p = work / f"llm-{size}.{quant}.gguf"
    if not p.is_file():
        ckpt = ensure_checkpoint(work, size)
        child(f"""
import tempfile
from pathlib import Path
from mivl.export.reference import Reference
from mivl.export.llm_export import write_llm
write_llm(Reference({str(ckpt)!r}), Path({str(p)!r}), {quant!r}, 4096, Path(tempfile.mkdtemp(dir={str(work)!r})))
RESULT = {{}}
""")
    return p


DECODE_N = 48


def bench_decode(work: Path, size: str = "1B") -> list[str]:
    """Decode tokens/s: PyTorch baseline (transformers for Qwen2, else the mivl reference) vs raw
    llama-cpp-python vs the mivl runtime's LLM loop, per GGUF type, each in its own process."""
    ckpt = ensure_checkpoint(work, size)
    base = child(f"""
import time, json, torch
from pathlib import Path
from safetensors.torch import load_file
torch.set_num_threads({os.cpu_count()})
cfg = json.loads((Path({str(ckpt)!r}) / 'config.json').read_text())
llm = cfg['llm_config']
ids = torch.arange(100, 132)[None]
if llm.get('model_type') == 'qwen2':
    import transformers
    hf = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**llm)).eval()
    sd = {{}}
    for f in sorted(Path({str(ckpt)!r}).glob('*.safetensors')):
        sd.update({{k[len('language_model.'):]: v.float() for k, v in load_file(str(f)).items() if k.startswith('language_model.')}})
    hf.load_state_dict(sd, strict=False)
    name = 'transformers ' + transformers.__version__ + ' (PyTorch eager fp32)'
    def run():
        with torch.no_grad():
            hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens={DECODE_N}, min_new_tokens={DECODE_N}, do_sample=False)
else:
    from mivl.export.checkpoint import load_checkpoint
    m = load_checkpoint({str(ckpt)!r}).model
    name = 'mivl PyTorch reference (eager fp32; transformers has no InternLM2 class)'
    def run():
        m.generate(ids[0], None, -1, set(), {DECODE_N})
run()
t = time.perf_counter(); run(); dt = time.perf_counter() - t
RESULT = dict(name=name, tps={DECODE_N} / dt)
""")
    rows = [f"| decode, {size} LLM | tokens/s | vs PyTorch | peak GiB |", "|---|---|---|---|",
            f"| {base['name']} (baseline) | {base['tps']:.1f} | 1.00x | {base['peak_gib']:.1f} |"]
    for quant in ("f16", "q8_0", "q4_k_m"):
        gguf = gguf_for(work, size, quant)
        for who in ("raw", "mivl"):
            res = child(f"""
import time, llama_cpp
N = {DECODE_N}
if {who!r} == 'raw':
    raw = llama_cpp.Llama({str(gguf)!r}, n_ctx=1024, n_threads={os.cpu_count()}, verbose=False)
    toks = list(range(100, 132))
    raw.eval(toks)
    t = time.perf_counter()
    for _ in range(N):
        raw.eval([raw.sample(temp=0.0)])
    tps = N / (time.perf_counter() - t)
else:
    import numpy as np
    from mivl.runtimes.llm_llamacpp import LlamaCppLLM
    llm = LlamaCppLLM({str(gguf)!r}, n_ctx=1024, n_threads={os.cpu_count()})
    llm.eval_tokens(list(range(100, 132)))
    t = time.perf_counter()
    for _ in range(N):
        llm.eval_tokens([int(np.argmax(llm.logits(-1)))])
    tps = N / (time.perf_counter() - t)
RESULT = dict(tps=tps)
""")
            label = "raw llama-cpp-python" if who == "raw" else "mivl runtime"
            rows.append(f"| {label}, {quant} | {res['tps']:.1f} | {res['tps'] / base['tps']:.2f}x | {res['peak_gib']:.1f} |")
            print(rows[-1], file=sys.stderr)
    return rows


def bench_runtime(work: Path) -> list[str]:
    bundle = int8_bundle(work)
    res = child(f"""
import time, numpy as np, llama_cpp
from mivl.edge.session import Session
from mivl.edge.request import Request
from mivl.calib.synthetic import draw_scene
N = 64
gguf = {str(bundle)!r} + '/llm.q8_0.gguf'
raw = llama_cpp.Llama(gguf, n_ctx=4096, n_threads={os.cpu_count()}, verbose=False, use_mmap=True)
toks = raw.tokenize(b'Hello, describe a road scene.', add_bos=False, special=True)
raw.eval(toks)
t = time.perf_counter()
for _ in range(N):
    tok = raw.sample(temp=0.0)
    raw.eval([tok])
raw_tps = N / (time.perf_counter() - t)
del raw
s = Session({str(bundle)!r}, device='cpu', threads={os.cpu_count()})
a = s.ask('Hello, describe a road scene.', max_new_tokens=N)
scene = draw_scene(1)
one = s.ask('What is ahead?', images=[scene.cameras['CAM_FRONT']], max_new_tokens=4)
six = s.ask('What is ahead?', cameras=scene.cameras, max_new_tokens=4)
RESULT = dict(raw_tps=raw_tps, ours_tps=a.timings.decode_tokens_per_s, one=one.timings.to_dict(), six=six.timings.to_dict(),
              backends=s.backends)
""")
    o, x = res["one"], res["six"]
    return [
        f"| decode, 1B q8_0 GGUF | tokens/s |", "|---|---|",
        f"| raw llama-cpp-python (baseline) | {res['raw_tps']:.1f} |",
        f"| mivl runtime | {res['ours_tps']:.1f} ({res['ours_tps'] / res['raw_tps']:.2f}x) |", "",
        "| time to first token, 1B INT8 vision + q8_0 | tiles | prompt tokens | preprocess s | vision s | prefill s | TTFT s |",
        "|---|---|---|---|---|---|---|",
        f"| one 1600x900 image | {o['prompt_tokens'] // 256} | {o['prompt_tokens']} | {o['preprocess_s']:.2f} | "
        f"{o['vision_s']:.1f} | {o['prefill_s']:.1f} | {o['time_to_first_token_s']:.1f} |",
        f"| six 1600x900 cameras | 13 | {x['prompt_tokens']} | {x['preprocess_s']:.2f} | {x['vision_s']:.1f} | "
        f"{x['prefill_s']:.1f} | {x['time_to_first_token_s']:.1f} |",
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sections", nargs="*", default=["vision", "llm", "runtime"])
    ap.add_argument("--work", default="out/bench")
    ap.add_argument("--size", default="1B", choices=["default", "1B", "2B"])
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    for name in a.sections:
        print(f"\n### {name}\n")
        fn = {"vision": bench_vision, "llm": bench_llm, "runtime": bench_runtime, "decode": bench_decode,
              "vision-gpu": bench_vision_gpu, "flash": bench_flash}[name]
        rows = fn(work, a.size) if name in ("vision", "decode", "vision-gpu", "flash") else fn(work)
        print("\n".join(rows), flush=True)


if __name__ == "__main__":
    main()
