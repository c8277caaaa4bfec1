"""The device side of the SDK: no torch, transformers or mivl.export in here."""
from .chunks import Ref, Region, grounding_question  # noqa: F401
from .errors import BundleError, ContextError, ImageError, InputError, MivlError  # noqa: F401
from .session import Answer, Session  # noqa: F401
