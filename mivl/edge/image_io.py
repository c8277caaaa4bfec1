"""Reading images from what users hand over: a path, encoded bytes, a NumPy array, a PIL image.

Everything becomes an RGB uint8 HWC array. Files and bytes are decoded by PIL, as the reference
pipeline does (`Image.open(p).convert('RGB')`), so JPEG decoding matches it. Grayscale, RGBA,
palette and 16-bit pictures are converted; empty, corrupt, truncated and absurdly large ones are
refused with an error that says which.
"""
from __future__ import annotations

import io
import os
import warnings
from typing import Any, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageError

MAX_PIXELS = 128 * 1024 * 1024  # decompression-bomb guard: 128 Mpixel (a 16k x 8k frame)

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray, Image.Image]


def load_rgb(image: ImageInput, *, channels: str = "RGB", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Return `image` as a C-contiguous RGB uint8 array of shape (H, W, 3).

    `channels` tells the order of a NumPy array's channels ("RGB" or "BGR", as OpenCV and most
    camera drivers deliver); it is ignored for files, bytes and PIL images, which know their own.
    """
    if isinstance(image, np.ndarray):
        return _from_array(image, channels, max_pixels)
    if isinstance(image, Image.Image):
        _check_size(image.width, image.height, max_pixels, "PIL image")
        return _from_pil(image, "PIL image")
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if not data:
            raise ImageError("image bytes are empty; expected an encoded picture (JPEG, PNG, ...)")
        return _decode(io.BytesIO(data), "image bytes", max_pixels)
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise ImageError(f"image file not found: {path!r}")
        if os.path.getsize(path) == 0:
            raise ImageError(f"image file is empty (0 bytes): {path!r}")
        with open(path, "rb") as f:
            return _decode(io.BytesIO(f.read()), f"image file {path!r}", max_pixels)
    raise ImageError(f"unsupported image type {type(image).__name__}; expected a path, bytes, "
                     "a NumPy uint8 array (H, W, 3) or a PIL image")


def _check_size(width: int, height: int, max_pixels: int, what: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"{what} has zero size ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(f"{what} is {width}x{height} = {width * height / 1e6:.0f} Mpixel, over the "
                         f"limit of {max_pixels / 1e6:.0f} Mpixel (decompression-bomb guard); "
                         "downscale it first or raise max_pixels")


def _decode(stream: io.BytesIO, what: str, max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # our own max_pixels check below governs; PIL's hard error stays as a backstop
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            pil = Image.open(stream)
            _check_size(pil.width, pil.height, max_pixels, what)
            pil.load()
            if pil.format == "PNG":
                _check_png_end(stream, what)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{what} is over PIL's hard limit for image size ({e}); a picture this "
                         f"many Mpixel is refused (decompression-bomb guard)") from None
    except UnidentifiedImageError as e:
        raise ImageError(f"{what} is not a readable image ({e}); expected JPEG, PNG, BMP, WebP "
                         "or TIFF") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{what} is corrupt or truncated: {e}") from None
    return _from_pil(pil, what)


def _check_png_end(stream: io.BytesIO, what: str) -> None:
    """PIL decodes a PNG whose last IDAT bytes or IEND are missing without a word; a whole PNG ends
    with its IEND chunk (length 0, type IEND, CRC AE426082)."""
    tail = bytes(stream.getbuffer()[-65536:])          # (bytes after IEND are tolerated)
    if b"\x00\x00\x00\x00IEND\xaeB`\x82" not in tail:
        raise ImageError(f"{what} is corrupt or truncated: the PNG does not end with its IEND chunk")


def _from_pil(pil: Image.Image, what: str) -> np.ndarray:
    if pil.mode in ("I;16", "I;16B", "I;16L", "I", "I;16N"):
        arr = np.asarray(pil)
        return _gray_to_rgb(_scale_to_uint8(arr))
    if pil.mode == "F":
        raise ImageError(f"{what} holds floating-point pixels (mode F); convert it to 8-bit first")
    return np.ascontiguousarray(np.asarray(pil.convert("RGB")))


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """16-bit (or 32-bit integer) intensities to 8 bit by the top byte, rounding (x / 257)."""
    arr = np.clip(arr.astype(np.int64), 0, 65535)
    return ((arr * 255 + 32767) // 65535).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))


def _from_array(arr: np.ndarray, channels: str, max_pixels: int) -> np.ndarray:
    if channels not in ("RGB", "BGR"):
        raise ImageError(f"channels must be 'RGB' or 'BGR', got {channels!r}")
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ImageError(f"array image has shape {arr.shape}; expected (H, W), (H, W, 1), "
                         "(H, W, 3) or (H, W, 4)")
    _check_size(arr.shape[1], arr.shape[0], max_pixels, "array image")
    if arr.dtype == np.uint16:
        arr = _scale_to_uint8(arr)
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        raise ImageError(f"array image has dtype {arr.dtype}; expected uint8 (or uint16), "
                         "values 0..255, not normalised floats")
    if arr.ndim == 2 or arr.shape[2] == 1:
        return _gray_to_rgb(arr.reshape(arr.shape[0], arr.shape[1]))
    arr = arr[:, :, :3]  # RGBA/BGRA: alpha dropped, as PIL's convert('RGB') does
    if channels == "BGR":
        arr = arr[:, :, ::-1]
    return np.ascontiguousarray(arr)


def describe(image: Any) -> str:
    """A short description of an image input for messages."""
    if isinstance(image, (str, os.PathLike)):
        return repr(os.fspath(image))
    if isinstance(image, np.ndarray):
        return f"array {image.shape} {image.dtype}"
    return type(image).__name__
