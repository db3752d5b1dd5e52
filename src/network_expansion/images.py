"""Images from the real world, decoded to RGB uint8 (height, width, 3) NumPy arrays.

Photos come as JPEG, PNG, WebP, ...; grayscale, palette, with transparency, CMYK, 16-bit,
rotated by an EXIF tag. `load_image` turns each into what the network was trained on (an
upright RGB picture, transparent areas white) or raises `ImageError` naming the file and
saying what is wrong: missing, empty, truncated, not an image, or a decompression bomb.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError, printable

# Pillow warns above 89 M pixels and refuses above twice that; we refuse above this, so
# that a tiny file claiming a gigantic size cannot exhaust memory. A 100-megapixel
# camera photo still loads.
MAX_PIXELS = 120_000_000
# The preprocessing resizes the shorter side to 256 (or the model's resize size): a 1 x 60000
# strip (254 bytes as a PNG) would become 256 x 15.4 million pixels, 12 GB. A picture more than
# this many times as long as it is wide is refused before it is decoded (a panorama is 10).
MAX_ASPECT = 100


def load_image(source, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a path, a PIL image or a NumPy array.

    A picture of more than `max_pixels` pixels, or more than `MAX_ASPECT` times as long as
    it is wide, is refused (`ImageError`) before it is decoded or copied; so is anything a
    decoder fails on, named."""
    if isinstance(source, np.ndarray):
        _check_size(source.shape[1] if source.ndim > 1 else 1, source.shape[0] if source.ndim else 1,
                    f"array{tuple(source.shape)}", max_pixels)
        return _from_array(source)
    if isinstance(source, Image.Image):
        _check_size(*source.size, "the PIL image", max_pixels)
        return _to_rgb(source, "the PIL image")
    if isinstance(source, (str, Path)):
        return _from_file(Path(source), max_pixels)
    raise ImageError(f"cannot read an image from a {type(source).__name__}: expected a path, "
                     f"a PIL image or a NumPy array")


def source_name(source) -> str:
    """How to name an input in messages and results (printable: see `printable`)."""
    if isinstance(source, (str, Path)):
        return printable(str(source))
    if isinstance(source, np.ndarray):
        return f"array{tuple(source.shape)}"
    return type(source).__name__


def _check_size(width: int, height: int, name, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageError(f"{name}: {width}x{height} pixels is above the limit of {max_pixels:,} (a decompression "
                         f"bomb?); pass a larger load_image(..., max_pixels=) if you trust the file")
    if max(width, height) > MAX_ASPECT * max(min(width, height), 1):
        raise ImageError(f"{name}: {width}x{height} pixels is more than {MAX_ASPECT} times as long as it is wide; "
                         f"resized for the network it would need {max(width, height) / max(min(width, height), 1) * 256:,.0f} "
                         f"pixels a row: crop it first")


def _from_file(path: Path, max_pixels: int) -> np.ndarray:
    name = printable(str(path))
    try:
        if not path.exists():
            raise ImageError(f"{name}: no such file")
        if not path.is_file():
            raise ImageError(f"{name}: not a file")
        if path.stat().st_size == 0:
            raise ImageError(f"{name}: the file is empty (0 bytes)")
    except ImageError:
        raise
    except (OSError, ValueError) as error:  # a name too long, a NUL in it, no permission
        raise ImageError(f"{name}: cannot be opened ({printable(getattr(error, 'strerror', None) or str(error))})") \
            from None
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                _check_size(*image.size, name, max_pixels)
                image.load()
                return _to_rgb(image, name)
        except ImageError:
            raise
        except UnidentifiedImageError as error:
            raise ImageError(f"{name}: not an image Pillow can read (expected JPEG, PNG, WebP, "
                             f"BMP, GIF, TIFF, ...)") from error
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageError(f"{name}: {error}") from error
        except OSError as error:  # truncated or corrupt data
            raise ImageError(f"{name}: the image data is damaged ({error})") from error
        except MemoryError:
            raise ImageError(f"{name}: too large to decode in the memory there is") from None
        except Exception as error:  # a decoder's own failure (a text chunk over Pillow's limit, a bad header)
            raise ImageError(f"{name}: the image cannot be decoded ({type(error).__name__}: "
                             f"{printable(str(error))[:200]})") from error


def _to_rgb(image: Image.Image, name) -> np.ndarray:
    image = ImageOps.exif_transpose(image)  # the camera's orientation tag, applied
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (or 32-bit integer) grayscale: scale the full range to 8 bits.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode != "I" or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(values * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    if image.mode != "RGB":
        image = image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim != 3 or array.shape[2] != 3 or min(array.shape[:2]) < 1:
        raise ImageError(f"{name}: decoded to shape {array.shape}, expected (height, width, 3)")
    return array


def _from_array(array: np.ndarray) -> np.ndarray:
    shape = array.shape
    if array.ndim == 3 and shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4):
        raise ImageError(f"array of shape {shape} looks channels-first; pass (height, width, channels)")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageError(f"array of shape {shape}: expected (height, width), (height, width, 1), "
                         f"(height, width, 3) or (height, width, 4)")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"array of shape {shape} holds no pixels")
    if array.dtype == np.uint8:
        pass
    elif array.dtype == np.uint16:
        array = (array.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ImageError(f"float array with values outside [0, 1] (min {np.nanmin(array):.3g}, "
                             f"max {np.nanmax(array):.3g}): pass uint8 0..255 or float 0..1")
        array = (array * 255.0 + 0.5).astype(np.uint8)
    else:
        raise ImageError(f"array of dtype {array.dtype}: expected uint8, uint16 or float in [0, 1]")
    if array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    if array.shape[2] == 4:
        return _to_rgb(Image.fromarray(np.ascontiguousarray(array), "RGBA"), f"array{shape}")
    return np.ascontiguousarray(array)
