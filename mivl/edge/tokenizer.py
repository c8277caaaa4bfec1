"""The checkpoint's tokenizer (it lives with the backends, in mivl.runtimes.tokenizer)."""
from ..runtimes.tokenizer import (QWEN2_PATTERN, TOKENIZER_FILES, TextTokenizer, load_tokenizer)  # noqa: F401
