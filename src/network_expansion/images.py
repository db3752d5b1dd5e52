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

from .errors import ImageError

# Pillow warns above 89 M pixels and refuses above twice that; we refuse above this, so
# that a tiny file claiming a gigantic size cannot exhaust memory. A 100-megapixel
# camera photo still loads.
MAX_PIXELS = 120_000_000


def load_image(source, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a path, a PIL image or a NumPy array.

    A file claiming more than `max_pixels` pixels is refused before it is decoded."""
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, Image.Image):
        return _to_rgb(source, "the PIL image")
    if isinstance(source, (str, Path)):
        return _from_file(Path(source), max_pixels)
    raise ImageError(f"cannot read an image from a {type(source).__name__}: expected a path, "
                     f"a PIL image or a NumPy array")


def source_name(source) -> str:
    """How to name an input in messages and results."""
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, np.ndarray):
        return f"array{tuple(source.shape)}"
    return type(source).__name__


def _from_file(path: Path, max_pixels: int) -> np.ndarray:
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if not path.is_file():
        raise ImageError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: the file is empty (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageError(f"{path}: {width}x{height} pixels is above the limit of "
                                     f"{max_pixels:,} (a decompression bomb?); pass a larger "
                                     f"load_image(..., max_pixels=) if you trust the file")
                image.load()
                return _to_rgb(image, path)
        except UnidentifiedImageError as error:
            raise ImageError(f"{path}: not an image Pillow can read (expected JPEG, PNG, WebP, "
                             f"BMP, GIF, TIFF, ...)") from error
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageError(f"{path}: {error}") from error
        except OSError as error:  # truncated or corrupt data
            raise ImageError(f"{path}: the image data is damaged ({error})") from error


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
