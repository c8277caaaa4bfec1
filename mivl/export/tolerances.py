"""The precision ladder (design.md section 4) as data: what each artifact must reach against the
PyTorch fp32 reference. A miss is an error."""

VISION = {  # per-token cosine against PyTorch fp32
    "fp32": {"min_cosine": 0.99999},
    "fp16": {"min_cosine": 0.999},
    "int8": {"mean_cosine": 0.99},
}
# Top-1 agreement bars apply to decisive steps (reference top-1 ahead of top-2 by >= 2% of the
# logit range, see llm_check.DECISIVE_MARGIN); raw agreement over all steps is reported beside.
# f16/bf16: every decisive step must agree (near-ties flip under any rounding, and a flipped
# near-tie changes the free-running greedy continuation after it: that is reported, not judged).
LLM = {
    "f32": {"greedy_identical": True, "max_rel_logit_error": 1e-3},
    "f16": {"min_top1_agreement": 1.0},
    "bf16": {"min_top1_agreement": 1.0},
    "q8_0": {"min_top1_agreement": 0.98},
    "q6_k": {"min_top1_agreement": 0.95},
    "q5_k_m": {"min_top1_agreement": 0.90},
    "q4_k_m": {"min_top1_agreement": 0.0},  # reported only: task accuracy decides
}
# The ONNX decoder (--llm-format onnx): fp32 is held to the f32 GGUF's bar, int8 (blocks of 32
# like q8_0) to q8_0's.
LLM_ONNX = {"fp32": LLM["f32"], "int8": LLM["q8_0"]}
