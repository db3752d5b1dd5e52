"""Weight files, read by their structure before anything trusts them; and written.

A checkpoint from a link is untrusted input. Each reader here walks its format's own
structure and checks every entry before it makes an array: a known type, a shape whose
size is exactly the bytes the file holds for it, names that are text, nothing nested or
declared beyond bounds. So a malformed file is a `CheckpointError`, never a crash in a
parser, and nothing is allocated that the file does not hold (or, for `.npz`, more than
the archive may inflate to):

* `.ckpt` (MindSpore): a sequence of protobuf `Checkpoint.Value` records (a name, dims, a
  type name and the raw bytes; big tensors in consecutive slices of one name) and an
  optional CRC trailer. MindSpore's own `load_checkpoint` is not used to read: 2.10 reads
  the whole file into one protobuf message and refuses one larger than the memory it counts
  as free (`SC_AVPHYS_PAGES`, without the page cache: a good 346 MB file was refused on a
  machine with gigabytes available), and it trusted a malformed file's dims (a 100-byte
  file aborted the process);
* safetensors: the header's length, a JSON header of types, shapes and byte ranges, then
  the data; the ranges are checked against the shapes and each other;
* `.npz` (NumPy): a zip archive of `.npy` members, checked member by member (the sizes the
  archive declares against its own size, each `.npy` header's dtype and shape against the
  member's size; objects never read).

The readers map or stream the file and copy each tensor out once.
"""

from __future__ import annotations

import json
import math
import mmap
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CheckpointError

METADATA_KEY = "network_expansion_metadata"
NAMING_SCHEMES = ("mindspore", "timm")  # the names a weights file may use (weights.py maps them)

# MindSpore's type names in a .ckpt -> NumPy types (BFloat16: the upper half of a float32).
CKPT_TYPES = {"Float32": np.float32, "Float16": np.float16, "Float64": np.float64, "BFloat16": "bfloat16",
              "Int8": np.int8, "UInt8": np.uint8, "Int16": np.int16, "UInt16": np.uint16, "Int32": np.int32,
              "UInt32": np.uint32, "Int64": np.int64, "UInt64": np.uint64, "Bool": np.bool_}
CKPT_STRING = "str"  # a value of append_dict: UTF-32 text
CRC_MARK = b"crc_num"  # MindSpore's optional trailer: the mark, then a 10-byte big-endian CRC32
MAX_NAME_BYTES = 4096
MAX_DIMS = 8


class _Malformed(Exception):
    """What is wrong with the file's structure (becomes a CheckpointError naming the file)."""


@dataclass
class _Entry:
    dims: tuple
    kind: str
    spans: list  # (offset, length) of each slice's content in the file


def read_ckpt(path, only=None) -> tuple:
    """`({name: array}, {name: text})` of a MindSpore `.ckpt`: the tensors (float16 and
    bfloat16 as float32) and the text values (`append_dict` strings); `only`: the tensors of
    these names alone (the whole file's structure is checked all the same). `CheckpointError` for
    anything but a well-formed checkpoint."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            if size == 0:
                raise CheckpointError(path, ["the file is empty (0 bytes)"],
                                      advice="The download or copy was cut: fetch the file again.")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                entries = _ckpt_entries(data, size)
                if only is not None:
                    entries = {name: entry for name, entry in entries.items()
                               if name in only or entry.kind == CKPT_STRING}
                return _ckpt_values(data, entries)
    except _Malformed as error:
        raise CheckpointError(path, [f"not a well-formed MindSpore checkpoint: {error}"],
                              advice="The file is damaged, encrypted, or not a .ckpt: fetch it again, or "
                                     "convert it with MindSpore first.") from None
    except OSError as error:
        raise CheckpointError(path, [f"cannot be read here ({error.strerror or error})"], readable=False,
                              advice="Check that the file can be read (permissions, disk).") from None


def _ckpt_entries(data, size: int) -> dict:
    """{name: _Entry} after checking the whole file's structure; no tensor is copied."""
    end = size
    if size >= 17 and data[size - 17:size - 10] == CRC_MARK:
        end = size - 17
        expected = int.from_bytes(data[size - 10:size], "big")
        if zlib.crc32(memoryview(data)[:end]) != expected:
            raise _Malformed("its CRC32 does not match its content")
    entries, last = {}, None
    position = 0
    while position < end:
        key, position = _varint(data, position, end)
        if key != (1 << 3 | 2):  # Checkpoint.value, length-delimited
            raise _Malformed(f"unexpected field {key >> 3} (wire type {key & 7}) at byte {position}")
        length, position = _varint(data, position, end)
        if length > end - position:
            raise _Malformed(f"a record at byte {position} claims {length} bytes, {end - position} remain")
        name, dims, kind, span = _ckpt_value(data, position, position + length)
        position += length
        entry = entries.get(name)
        if entry is None:
            entries[name] = _Entry(dims, kind, [span])
        elif name == last and entry.dims == dims and entry.kind == kind:
            entry.spans.append(span)  # a tensor written in slices
        else:
            raise _Malformed(f"{name!r} appears twice")
        last = name
    for name, entry in entries.items():
        _check_entry(name, entry)
    return entries


def _ckpt_value(data, start: int, end: int):
    """(name, dims, type name, (offset, length) of the content) of one Checkpoint.Value."""
    name = tensor = None
    for field, value in _fields(data, start, end):
        if field == 1:
            name = _text(data, value, "a name")
        elif field == 2:
            tensor = value
        elif field == 3:
            raise _Malformed("a map parameter (MapTensor), which this package does not read")
    if name is None or tensor is None:
        raise _Malformed(f"a record at byte {start} has {'no name' if name is None else 'no tensor'}")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise _Malformed(f"a name of {len(name.encode())} bytes")
    dims, kind, content = [], None, None
    for field, value in _fields(data, *tensor):
        if field == 1:
            if isinstance(value, int):
                dims.append(value)
            else:  # packed
                position, stop = value
                while position < stop:
                    dim, position = _varint(data, position, stop)
                    dims.append(dim)
        elif field == 2:
            kind = _text(data, value, "a type name")
        elif field == 3:
            content = (value[0], value[1] - value[0])
    if kind is None or content is None:
        raise _Malformed(f"{name!r} has no {'type' if kind is None else 'content'}")
    return name, tuple(dims), kind, content


def _check_entry(name: str, entry: _Entry) -> None:
    if entry.kind != CKPT_STRING and entry.kind not in CKPT_TYPES:
        raise _Malformed(f"{name!r} has the unknown type {entry.kind[:40]!r}")
    if len(entry.dims) > MAX_DIMS or any(d >= 1 << 62 for d in entry.dims):
        raise _Malformed(f"{name!r} has dims {entry.dims[:MAX_DIMS + 1]}")
    length = sum(span[1] for span in entry.spans)
    if entry.kind == CKPT_STRING:
        if length % 4:
            raise _Malformed(f"the text {name!r} is {length} bytes, not a whole number of UTF-32 characters")
        return
    itemsize = 2 if entry.kind == "BFloat16" else np.dtype(CKPT_TYPES[entry.kind]).itemsize
    count = _count(entry.dims, length // itemsize)
    if count * itemsize != length:
        raise _Malformed(f"{name!r} has dims {list(entry.dims)} of {entry.kind} ({count * itemsize} bytes) "
                         f"but {length} bytes of content")


def _count(dims: tuple, held: int) -> int:
    """Elements of a tensor of `dims` (MindSpore writes a scalar's dims as [] or [0])."""
    if dims == (0,) and held == 1:
        return 1
    count = 1
    for dim in dims:
        count *= dim
    return count


def _ckpt_values(data, entries: dict) -> tuple:
    arrays, texts = {}, {}
    for name, entry in entries.items():
        raw = b"".join(data[offset:offset + length] for offset, length in entry.spans) \
            if len(entry.spans) > 1 else None
        offset, length = entry.spans[0]
        buffer, start = (raw, 0) if raw is not None else (data, offset)
        total = sum(span[1] for span in entry.spans)
        if entry.kind == CKPT_STRING:
            texts[name] = bytes(buffer[start:start + total]).decode("utf-32-le", errors="replace").rstrip("\0")
            continue
        if entry.kind == "BFloat16":
            halves = np.frombuffer(buffer, "<u2", total // 2, start)
            array = (halves.astype(np.uint32) << 16).view(np.float32)
        else:
            kind = np.dtype(CKPT_TYPES[entry.kind]).newbyteorder("<")
            array = np.frombuffer(buffer, kind, total // kind.itemsize, start).copy()
            if array.dtype == np.float16:
                array = array.astype(np.float32)
        shape = () if entry.dims == (0,) and array.size == 1 else entry.dims
        arrays[name] = array.reshape(shape)
    return arrays, texts


def _fields(data, start: int, end: int):
    """(field number, value) of a protobuf message's fields: an int for a varint, (start,
    end) for a length-delimited field; fixed-width fields are skipped."""
    position = start
    while position < end:
        key, position = _varint(data, position, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(data, position, end)
        elif wire == 2:
            length, position = _varint(data, position, end)
            if length > end - position:
                raise _Malformed(f"a field at byte {position} claims {length} bytes, {end - position} remain")
            value, position = (position, position + length), position + length
        elif wire in (1, 5):
            position += 8 if wire == 1 else 4
            if position > end:
                raise _Malformed("a fixed-width field runs past its record")
            continue
        else:
            raise _Malformed(f"wire type {wire} at byte {position}")
        yield field, value


def _varint(data, position: int, end: int):
    value = shift = 0
    while True:
        if position >= end or shift > 63:
            raise _Malformed(f"a number at byte {position} runs past its record")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def _text(data, span, what: str) -> str:
    try:
        return bytes(data[span[0]:span[1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed(f"{what} that is not UTF-8 text") from None


def _metadata(text, path) -> dict:
    """The package's metadata (JSON text: architecture, class names), or {} without any."""
    if text is None:
        return {}
    text = str(text)
    if _nesting(text.encode("utf-8", "replace")) > MAX_NESTING:
        raise CheckpointError(path, [f"its metadata nests deeper than {MAX_NESTING} levels"])
    try:
        metadata = json.loads(text)
    except (json.JSONDecodeError, ValueError, RecursionError) as error:
        raise CheckpointError(path, [f"its metadata is not JSON ({error})"]) from None
    return metadata if isinstance(metadata, dict) else {"": metadata}


def _nesting(text: bytes) -> int:
    """How deep `[` and `{` nest in JSON text (brackets inside strings counted too: an
    over-estimate that never lets a deep one through), in one pass, without recursion."""
    depth = deepest = 0
    for byte in text:
        if byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _read_ckpt_file(path: Path):
    arrays, texts = read_ckpt(path)
    return arrays, _metadata(texts.get(METADATA_KEY), path)


def _write_ckpt_file(state: dict, path: Path, metadata: str) -> None:
    import mindspore as ms

    ms.save_checkpoint([{"name": n, "data": ms.Tensor(v)} for n, v in state.items()], str(path),
                       append_dict={METADATA_KEY: metadata})


# -- safetensors -------------------------------------------------------------------------

# safetensors' type names -> NumPy types (BF16: the upper half of a float32)
SAFETENSORS_TYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": "bfloat16", "I64": np.int64,
                     "I32": np.int32, "I16": np.int16, "I8": np.int8, "U64": np.uint64, "U32": np.uint32,
                     "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_}
MAX_HEADER_BYTES = 1 << 24  # a header of names, shapes and offsets; ViT-B's is 20 KB
MAX_NESTING = 16            # JSON nesting a header or metadata may have (theirs: 3)


def read_safetensors(path) -> tuple:
    """`({name: array}, {metadata key: text})` of a safetensors file, after checking its
    whole header: a JSON object of known types, shapes and byte ranges inside the file, each
    range exactly its shape's size, none overlapping. `CheckpointError` otherwise."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            if size < 8:
                raise _Malformed(f"{size} bytes: shorter than a safetensors header's length")
            f.seek(0)
            length = int.from_bytes(f.read(8), "little")
            if length > MAX_HEADER_BYTES or 8 + length > size:
                raise _Malformed(f"its header claims {length} bytes ({size} in the file, at most "
                                 f"{MAX_HEADER_BYTES} allowed)")
            header = f.read(length)
            entries, metadata = _safetensors_header(header, size - 8 - length)
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _safetensors_values(data, 8 + length, entries), metadata
    except _Malformed as error:
        raise CheckpointError(path, [f"not a well-formed safetensors file: {error}"],
                              advice="The file is damaged or not a .safetensors file: fetch it again.") from None
    except OSError as error:
        raise CheckpointError(path, [f"cannot be read here ({error.strerror or error})"], readable=False,
                              advice="Check that the file can be read (permissions, disk).") from None


def _safetensors_header(header: bytes, data_size: int):
    if _nesting(header) > MAX_NESTING:
        raise _Malformed(f"its header nests deeper than {MAX_NESTING} levels")
    try:
        parsed = json.loads(header.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise _Malformed(f"its header is not JSON ({str(error)[:100]})") from None
    if not isinstance(parsed, dict):
        raise _Malformed("its header is not a JSON object")
    metadata = parsed.pop("__metadata__", {}) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _Malformed("its __metadata__ is not an object of texts")
    entries = []
    for name, info in parsed.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise _Malformed(f"the entry {name[:80]!r} is not {{dtype, shape, data_offsets}}")
        kind, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if kind not in SAFETENSORS_TYPES:
            raise _Malformed(f"{name[:80]!r} has the unknown type {str(kind)[:40]!r}")
        if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(_whole(d) for d in shape):
            raise _Malformed(f"{name[:80]!r} has the shape {str(shape)[:80]}")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_whole(o) for o in offsets) \
                or not offsets[0] <= offsets[1] <= data_size:
            raise _Malformed(f"{name[:80]!r} has the byte range {str(offsets)[:80]} in {data_size} bytes of data")
        itemsize = 2 if kind == "BF16" else np.dtype(SAFETENSORS_TYPES[kind]).itemsize
        if math.prod(shape) * itemsize != offsets[1] - offsets[0]:
            raise _Malformed(f"{name[:80]!r} has the shape {shape} of {kind} ({math.prod(shape) * itemsize} bytes) "
                             f"but {offsets[1] - offsets[0]} bytes of data")
        entries.append((offsets[0], offsets[1], name, kind, tuple(shape)))
    entries.sort()
    for (_, end, name, _, _), (start, _, other, _, _) in zip(entries, entries[1:]):
        if start < end:
            raise _Malformed(f"the data of {name[:80]!r} and {other[:80]!r} overlap")
    return entries, metadata


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 62


def _safetensors_values(data, base: int, entries) -> dict:
    arrays = {}
    for start, end, name, kind, shape in entries:
        if kind == "BF16":
            halves = np.frombuffer(data, "<u2", (end - start) // 2, base + start)
            arrays[name] = (halves.astype(np.uint32) << 16).view(np.float32).reshape(shape)
        else:
            dtype = np.dtype(SAFETENSORS_TYPES[kind]).newbyteorder("<")
            arrays[name] = np.frombuffer(data, dtype, (end - start) // dtype.itemsize, base + start).copy().reshape(shape)
    return arrays


def write_safetensors(state: dict, path, metadata: dict) -> None:
    """`{name: array}` and `{key: text}` as a safetensors file (the format's own layout: the
    header's length, the JSON header padded to 8 bytes, then the data; written with plain
    file writes, so a full disk is an `OSError` like any other)."""
    names = {np.dtype(v).newbyteorder("<"): k for k, v in SAFETENSORS_TYPES.items() if v != "bfloat16"}
    header, offset, arrays = {"__metadata__": dict(metadata)}, 0, []
    for name, value in state.items():
        array = np.ascontiguousarray(value)
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        if array.dtype not in names:
            raise CheckpointError(path, [f"{name}: safetensors has no type for {array.dtype}"])
        header[name] = {"dtype": names[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
        arrays.append(array)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for array in arrays:
            f.write(array.tobytes())


def _read_safetensors(path: Path):
    arrays, metadata = read_safetensors(path)
    return arrays, _metadata(metadata.get(METADATA_KEY), path)


def _write_safetensors(state: dict, path: Path, metadata: str) -> None:
    write_safetensors(state, path, {"format": "pt", METADATA_KEY: metadata})


# -- .npz --------------------------------------------------------------------------------

MAX_ENTRIES = 100_000
# what an archive may inflate to: at least this many bytes, else this many times its own size
# (weights compress by a few percent; a zip bomb by a thousand times and more)
INFLATE_FLOOR, INFLATE_RATIO = 64 << 20, 16


def read_npz(path) -> tuple:
    """`({name: array}, metadata text or None)` of a NumPy `.npz`, after checking its zip
    entries: `.npy` members, stored or deflated, declaring together no more than the
    archive may inflate to, each member's header a known dtype (never an object: no
    pickles) and shape whose size is exactly the member's. `CheckpointError` otherwise."""
    import zipfile

    path = Path(path)
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > MAX_ENTRIES:
                raise _Malformed(f"{len(members)} members")
            declared, budget = sum(m.file_size for m in members), max(INFLATE_FLOOR, INFLATE_RATIO * size)
            if declared > budget:
                raise _Malformed(f"its members declare {declared} bytes, {declared / max(size, 1):.0f} times the "
                                 f"archive's {size} (at most {budget} allowed): a decompression bomb?")
            arrays = {}
            for member in members:
                if not member.filename.endswith(".npy") or member.compress_type not in (zipfile.ZIP_STORED,
                                                                                        zipfile.ZIP_DEFLATED):
                    raise _Malformed(f"the member {member.filename[:80]!r} is not a stored or deflated .npy")
                with archive.open(member) as stream:
                    arrays[member.filename[:-4]] = _npy(stream, member.file_size, member.filename)
    except _Malformed as error:
        raise CheckpointError(path, [f"not a well-formed .npz: {error}"],
                              advice="The file is damaged or not a NumPy .npz: fetch it again.") from None
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError, RuntimeError) as error:
        raise CheckpointError(path, [f"not a well-formed .npz: {str(error)[:200]}"],
                              advice="The file is damaged or not a NumPy .npz: fetch it again.") from None
    except OSError as error:
        raise CheckpointError(path, [f"cannot be read here ({error.strerror or error})"], readable=False,
                              advice="Check that the file can be read (permissions, disk).") from None
    metadata = arrays.pop(METADATA_KEY, None)
    return arrays, (str(metadata) if metadata is not None else None)


def _npy(stream, size: int, name: str) -> np.ndarray:
    from numpy.lib import format as npy

    version = npy.read_magic(stream)
    reader = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}.get(version)
    if reader is None:
        raise _Malformed(f"{name[:80]!r}: .npy version {version}")
    shape, fortran, dtype = reader(stream, max_header_size=10_000)
    if dtype.hasobject or dtype.kind not in "biufU" or len(shape) > MAX_DIMS:
        raise _Malformed(f"{name[:80]!r}: an array of {dtype} of shape {shape} (objects are never read: no pickles)")
    header = stream.tell()  # magic, version, length and the header dictionary
    expected = math.prod(shape) * dtype.itemsize
    if header + expected != size:
        raise _Malformed(f"{name[:80]!r}: a header for {expected} bytes of data in a member of {size} bytes")
    data = stream.read(expected)
    if len(data) != expected:
        raise _Malformed(f"{name[:80]!r}: {len(data)} bytes of data, {expected} expected")
    array = np.frombuffer(data, dtype)
    return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)


def _read_npz(path: Path):
    arrays, metadata = read_npz(path)
    return arrays, _metadata(metadata, path)


def _write_npz(state: dict, path: Path, metadata: str) -> None:
    """A NumPy `.npz` (stored members), assembled in memory and written in one go: a full
    disk is then one `OSError` (NumPy's own writer raised it again from its archive's
    finaliser, as an 'Exception ignored' traceback)."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, value in {**state, METADATA_KEY: np.array(metadata)}.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
    with open(path, "wb") as f:
        f.write(buffer.getbuffer())


@dataclass(frozen=True)
class WeightFormat:
    """How one file format is read (`path -> ({name: array}, metadata dict)`) and written
    (`({name: array}, path, metadata JSON text)`)."""

    read: object
    write: object


# The formats, by suffix: one place to add one.
FORMATS = {
    ".ckpt": WeightFormat(read=_read_ckpt_file, write=_write_ckpt_file),
    ".safetensors": WeightFormat(read=_read_safetensors, write=_write_safetensors),
    ".npz": WeightFormat(read=_read_npz, write=_write_npz),
}
