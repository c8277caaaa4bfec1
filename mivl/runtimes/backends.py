"""Choosing and opening a bundle's backends. Takes the manifest's sections and the bundle folder
(plain data: mivl.runtimes never imports mivl.edge) and returns objects that implement
mivl.runtimes.protocols: VisionBackend and LLMBackend."""
from __future__ import annotations

from pathlib import Path

from ..errors import BundleError


def llama_has_gpu() -> bool:
    try:
        import llama_cpp
        return bool(llama_cpp.llama_supports_gpu_offload())
    except Exception:
        return False


def open_llm(root: Path, llm: dict, prompt: dict, device: str, threads: int | None, n_ctx: int,
             n_batch: int, flash_attn: bool):
    """The bundle's LLM on its runtime: llama.cpp for GGUF, ONNX Runtime for an ONNX decoder.
    Returns (backend, description)."""
    fmt = llm.get("format", "gguf")
    if fmt == "onnx":
        from .llm_ort import OrtLLM

        backend = OrtLLM(str(root / llm["file"]), str(root / llm["tokenizer"]), n_ctx=n_ctx, n_batch=n_batch,
                         n_threads=threads, device=device, eog_ids=prompt.get("stop_ids", ()))
        return backend, backend.backend
    if fmt != "gguf":
        raise BundleError(f"the bundle's LLM format {fmt!r} is not one this runtime knows (gguf, onnx)")
    from .gguf_check import check_gguf
    from .llm_llamacpp import LlamaCppLLM, kv_type_for

    check_gguf(root / llm["file"], llm)     # llama.cpp aborts the process on headers it cannot use
    gpu_layers = 0 if device == "cpu" else -1 if llama_has_gpu() else 0
    backend = LlamaCppLLM(str(root / llm["file"]), n_ctx=n_ctx, n_batch=n_batch, n_threads=threads,
                          n_gpu_layers=gpu_layers, flash_attn=flash_attn, kv_type=kv_type_for(str(llm.get("quant"))))
    return backend, "llama.cpp" + (" (GPU)" if gpu_layers else " (CPU)")


def tensorrt_vision(root: Path, vision: dict, vision_sha256: str):
    """The bundle's TensorRT engine for this GPU, if `mivl-export build-engine` made one; else None
    (TensorRT, CuPy or a GPU missing, or no engine built: ONNX Runtime runs the vision then)."""
    from .tensorrt_engine import TensorRTUnavailable, find_engine

    try:
        plan = find_engine(root, vision_sha256, vision["precision"])
        if plan is None:
            return None
        from .vision_trt import TrtVision

        return TrtVision(plan, vision["input"]["name"], int(vision["max_tiles"]))
    except TensorRTUnavailable:
        return None


def check_graph(session, vision: dict, name: str, output: dict) -> None:
    """The loaded graph takes the manifest's input and gives its output (names and fixed sizes);
    refused, with the graph closed by the caller, before it runs."""
    ins, outs = session.get_inputs(), session.get_outputs()
    want_in = vision["input"]
    if len(ins) != 1 or ins[0].name != want_in["name"]:
        raise BundleError(f"{name} takes {[i.name for i in ins]} but the manifest says {want_in['name']!r}")
    if len(outs) != 1 or outs[0].name != output["name"]:
        raise BundleError(f"{name} gives {[o.name for o in outs]} but the manifest says {output['name']!r}")
    for what, got, want in (("input", ins[0].shape, want_in["shape"]), ("output", outs[0].shape, output["shape"])):
        fixed = [(g, w) for g, w in zip(got, want) if isinstance(g, int) and isinstance(w, int)]
        if len(got) != len(want) or any(g != w for g, w in fixed):
            raise BundleError(f"{name}'s {what} shape is {got} but the manifest says {want}")


def open_vision(root: Path, vision: dict, vision_sha256: str, device: str, threads: int | None,
                use_engines: bool = True):
    """The bundle's vision encoder: one graph, or a split ViT + projector (--split-vision); its
    TensorRT engine where one was built here (and use_engines)."""
    from .vision_ort import OrtVision

    backend = tensorrt_vision(root, vision, vision_sha256) if device != "cpu" and use_engines else None
    if backend is None:
        backend = OrtVision(str(root / vision["file"]), vision["input"]["name"], int(vision["max_tiles"]), device,
                            threads)
        try:
            check_graph(backend.session, vision, vision["file"],
                        vision["split"]["vit_output"] if vision.get("split") else vision["output"])
        except BaseException:
            backend.close()
            raise
    split = vision.get("split")
    if not split:
        return backend
    from .vision_split import SplitVision, read_norm

    try:
        gamma, beta = read_norm(root / split["norm_file"])
        return SplitVision(backend, str(root / split["projector_file"]), split["projector_input"], gamma, beta,
                           float(split["norm_eps"]), threads)
    except BaseException:
        backend.close()
        raise
