"""Checks for arguments that come from a caller: one function per kind of value.

Each returns the value in its plain Python type (NumPy integers and floats are accepted and
converted) or raises InputError naming the argument, the value, what is accepted and why. They run
before anything native sees the value.
"""
from __future__ import annotations

import math
import numbers
import os

from .errors import InputError

MAX_TEXT_CHARS = 1_000_000       # one question or history turn; far beyond any context


def _show(value) -> str:
    r = repr(value)
    return r if len(r) <= 80 else r[:77] + "..."


def integer(name: str, value, lo: int, hi: int | None = None, why: str = "") -> int:
    """An integer in lo..hi (bool refused: True is not a count)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an integer, got {_show(value)} ({type(value).__name__})")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise InputError(f"{name} must be within {rng}, got {v}" + (f" ({why})" if why else ""))
    return v


def optional_integer(name: str, value, lo: int, hi: int | None = None, why: str = "") -> int | None:
    return None if value is None else integer(name, value, lo, hi, why)


def real(name: str, value, lo: float, hi: float, lo_open: bool = False, why: str = "") -> float:
    """A finite number in [lo, hi] (or (lo, hi] with lo_open)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be a number, got {_show(value)} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v) or v > hi or v < lo or (lo_open and v == lo):
        rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise InputError(f"{name} must be a finite number in {rng}, got {v!r}" + (f" ({why})" if why else ""))
    return v


def flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{name} must be True or False, got {_show(value)} ({type(value).__name__})")
    return value


def choice(name: str, value, options: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in options:
        raise InputError(f"{name} must be one of {', '.join(repr(o) for o in options)}, got {_show(value)}")
    return value


def text(name: str, value, allow_empty: bool = False) -> str:
    """Text that can be encoded as UTF-8 (no lone surrogates), of bounded length."""
    if not isinstance(value, str):
        raise InputError(f"{name} must be a string, got {_show(value)} ({type(value).__name__})")
    if len(value) > MAX_TEXT_CHARS:
        raise InputError(f"{name} is {len(value)} characters; at most {MAX_TEXT_CHARS} are accepted")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"{name} is not valid Unicode text: a lone surrogate {value[e.start]!r} at "
                         f"character {e.start}; pass text that encodes as UTF-8") from None
    if not allow_empty and not value.strip():
        raise InputError(f"{name} is empty; pass some text")
    return value


def path_like(name: str, value) -> str:
    """A filesystem path given as str, bytes (UTF-8) or os.PathLike."""
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{name} must be a UTF-8 path, got undecodable bytes") from None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value or "\x00" in value:
        raise InputError(f"{name} must be a path (str or os.PathLike), got {_show(value)}")
    return text(name, value)


def max_threads() -> int:
    return 4 * (os.cpu_count() or 1)


def threads(value) -> int | None:
    return optional_integer("threads", value, 1, max_threads(),
                            f"this machine has {os.cpu_count()} cores; more threads than 4x that only slow it down")
