"""Image files as MindSpore's C++ decoder takes them: read here, decoded there.

`FolderData`'s fast pipeline reads each file's bytes in Python (I/O, which releases the
GIL) and leaves decoding, cropping and resizing to `mindspore.dataset`'s C++ operations
(`RandomCropDecodeResize`, which decodes only the crop of a JPEG, `Decode`). Before a file
goes there, its header is read here (`sniff`, a few hundred bytes, no decoding):

* what the C++ decoder would get wrong or refuses goes through PIL instead (`images.load_image`:
  EXIF rotation, CMYK and 12-bit JPEGs, 16-bit PNGs, every format but JPEG, PNG and BMP)
  and on as an uncompressed BMP, which the C++ decoder reads exactly;
* what is not a picture, is cut short, or declares more pixels than `images.MAX_PIXELS`
  (or a strip longer than `images.MAX_ASPECT` times its width) is a bad sample: the next
  good file of the folder takes its place (MindSpore's "replace" mode for error samples,
  without changing that process-wide setting) and a warning names it, once per file.
"""

from __future__ import annotations

import copy
import io
import logging
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ImageError, printable
from .images import MAX_ASPECT, MAX_PIXELS, load_image

logger = logging.getLogger("network_expansion")

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Sniffed:
    """What a file's header says: its format, size, and whether PIL must decode it (`why`)."""

    format: str
    width: int = 0
    height: int = 0
    why_pil: str | None = None


def sniff(data: bytes) -> Sniffed:
    """The header of an encoded picture (`ImageError` for one that is not a picture or is
    cut short). Reads the header only: no pixel is decoded."""
    if data[:2] == b"\xff\xd8":
        return _sniff_jpeg(data)
    if data[:8] == PNG_SIGNATURE:
        if len(data) < 33 or data[12:16] != b"IHDR":
            raise ImageError("a PNG without its header chunk")
        width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
        if b"IEND" not in data[-12:]:
            raise ImageError("a PNG cut short (no IEND chunk at its end)")
        return Sniffed("png", width, height, "16 bits a sample" if depth == 16 else None)
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return Sniffed("bmp", abs(width), abs(height))
    return Sniffed("other", why_pil="a format other than JPEG, PNG or BMP")


def _sniff_jpeg(data: bytes) -> Sniffed:
    i, size, why = 2, None, None
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise ImageError(f"a JPEG whose markers break off at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if marker == 0xDA:  # the compressed data start: the header is over
            break
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        segment = data[i + 4:i + 2 + length]
        if marker == 0xE1 and segment[:6] == b"Exif\0\0" and _orientation(segment[6:]) not in (None, 1):
            why = "an EXIF orientation to apply"
        elif marker in _SOF and len(segment) >= 6:
            precision, height, width, components = struct.unpack(">BHHB", segment[:6])
            size = (width, height)
            if components == 4:
                why = why or "CMYK"
            elif precision != 8:
                why = why or f"{precision} bits a sample"
        i += 2 + length
    if size is None:
        raise ImageError("a JPEG without a frame header")
    if b"\xff\xd9" not in data[-1024:]:
        raise ImageError("a JPEG cut short (no end-of-image marker)")
    return Sniffed("jpeg", size[0], size[1], why)


def _orientation(tiff: bytes):
    """The orientation tag (0x0112) of an EXIF block's first directory, or None."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return None
    order = "<" if tiff[:2] == b"II" else ">"
    offset = struct.unpack(order + "I", tiff[4:8])[0]
    if offset + 2 > len(tiff):
        return None
    count = struct.unpack(order + "H", tiff[offset:offset + 2])[0]
    for k in range(min(count, 512)):
        entry = tiff[offset + 2 + 12 * k:offset + 14 + 12 * k]
        if len(entry) < 12:
            return None
        if struct.unpack(order + "H", entry[:2])[0] == 0x0112:
            return struct.unpack(order + "H", entry[8:10])[0]
    return None


def as_bmp(image: np.ndarray) -> np.ndarray:
    """RGB uint8 HWC pixels as the bytes of an uncompressed BMP (what the C++ decoder reads
    exactly and fastest)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="BMP")
    return np.frombuffer(buffer.getvalue(), np.uint8)


SKIPPED = -1  # the label of a bad file's place when it is not replaced (`EncodedFiles(replace=False)`)


class EncodedFiles:
    """Random access to `samples` [(path, label)] as (encoded bytes uint8, label int32),
    ready for MindSpore's C++ decoding (a `GeneratorDataset` source). A bad file is named in
    a warning once and `bad` holds it; it is replaced by the next good one (training: every
    batch full), or with `replace=False` (evaluation: every image counted once) it yields a
    1 x 1 picture labelled `SKIPPED`, for the consumer to drop."""

    def __init__(self, samples, replace: bool = True):
        self.samples, self.replace = list(samples), replace
        self.bad = {}              # path -> why
        self.through_pil = {}      # path -> why (decoded by PIL, passed on as BMP)
        self._lock = threading.Lock()

    def __len__(self):
        return len(self.samples)

    def leaving_out(self) -> "EncodedFiles":
        """These files as an evaluation reads them (`replace=False`), sharing what is known of
        them: a bad file found by either is named once."""
        other = copy.copy(self)  # the same `bad`, `through_pil` and lock
        other.replace = False
        return other

    def __getitem__(self, index):
        for k in range(len(self.samples)):
            path, label = self.samples[(index + k) % len(self.samples)]
            try:
                return self.encoded(Path(path)), np.int32(label)
            except (ImageError, OSError) as error:
                self._replaced(path, error)
                if not self.replace:
                    return _PLACEHOLDER, np.int32(SKIPPED)
        raise ImageError("no image of this folder can be read")

    def encoded(self, path: Path) -> np.ndarray:
        """The bytes the C++ decoder gets for `path`: the file's own, or PIL's decoding as BMP."""
        data = path.read_bytes()
        sniffed = sniff(data)
        if sniffed.width and sniffed.height:
            if sniffed.width * sniffed.height > MAX_PIXELS:
                raise ImageError(f"{sniffed.width}x{sniffed.height} pixels, more than the {MAX_PIXELS:,} allowed")
            if max(sniffed.width, sniffed.height) > MAX_ASPECT * min(sniffed.width, sniffed.height):
                raise ImageError(f"{sniffed.width}x{sniffed.height} pixels: more than {MAX_ASPECT} times as long "
                                 f"as it is wide")
        if sniffed.why_pil is None:
            return np.frombuffer(data, np.uint8)
        encoded = as_bmp(load_image(path))
        with self._lock:
            self.through_pil.setdefault(str(path), sniffed.why_pil)
        return encoded

    def _replaced(self, path, error) -> None:
        with self._lock:
            first = str(path) not in self.bad
            self.bad[str(path)] = str(error)
        if first:
            why = str(error).splitlines()[0]
            named = why if why.startswith(printable(path)) else f"{printable(path)}: {printable(why)}"
            instead = "the next image of the folder takes its place" if self.replace else "left out"
            logger.warning("skipped %s; %s", named, instead)


_PLACEHOLDER = as_bmp(np.zeros((1, 1, 3), np.uint8))
