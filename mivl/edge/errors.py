"""The SDK's errors (defined in mivl.errors, shared by the edge runtime, its backends and the exporter)."""
from ..errors import (BundleError, CheckpointError, ContextError, ImageError, InputError, MivlError,  # noqa: F401
                      ValidationError)
