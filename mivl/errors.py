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
