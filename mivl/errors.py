"""Errors of the SDK. Every public entry point raises one of these, with a message that says
what was wrong, what was expected and how to fix it."""


class MivlError(Exception):
    """Base class of every error the SDK raises on purpose."""


class InputError(MivlError, ValueError):
    """An argument or input (image, prompt, camera set, option) is not acceptable."""


class ImageError(InputError):
    """An image could not be read or is not a usable picture."""


class CheckpointError(MivlError):
    """A checkpoint directory is missing files, or its tensors do not match its config."""


class BundleError(MivlError):
    """A bundle is unknown, incomplete, tampered with, or internally inconsistent."""


class ValidationError(MivlError):
    """An exported artifact missed its precision bar against the reference."""


class ContextError(InputError):
    """The prompt (tiles x tokens + text) does not fit the session's context."""


def check_room(n_past: int, n: int, n_ctx: int) -> None:
    """The backends' last line: n more tokens after n_past must fit n_ctx (the engine checks the
    whole prompt before any compute, naming tiles and text; this guards every later step)."""
    if n_past + n > n_ctx:
        raise ContextError(f"the prompt needs {n_past + n} tokens but the context holds {n_ctx}; use fewer "
                           "tiles/frames or open the session with a larger n_ctx")
