"""The device side of the SDK: no torch, transformers or mivl.export in here."""
from .errors import BundleError, ImageError, InputError, MivlError  # noqa: F401
from .session import Answer, Session  # noqa: F401
