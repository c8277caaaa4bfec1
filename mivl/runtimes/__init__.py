"""Backends behind small protocols: vision encoders (ONNX Runtime, TensorRT) and the LLM (llama.cpp)."""
