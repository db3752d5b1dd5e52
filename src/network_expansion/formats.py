"""Weight files, read by their structure before anything trusts them; and written.

A checkpoint from a link is untrusted input. The `.ckpt` reader here walks MindSpore's
checkpoint format itself (a sequence of protobuf `Checkpoint.Value` records: a name, dims,
a type name and the raw bytes; big tensors in consecutive slices of one name; an optional
CRC trailer) and checks every entry before it makes an array: a known type, dims whose
product times the item size is exactly the content's length, a name that is UTF-8 text.
So a malformed file is a `CheckpointError`, and nothing is allocated that the file does not
hold.

MindSpore's own `load_checkpoint` is not used to read: MindSpore 2.10 reads the whole file
into one protobuf message first and refuses a file larger than the memory it counts as
free (`SC_AVPHYS_PAGES`, which leaves the page cache out, so a good 346 MB checkpoint was
refused on a machine with gigabytes available), and its parser trusted the dims of a
malformed file. This reader maps the file and copies each tensor out once.
"""

from __future__ import annotations

import json
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
    try:
        metadata = json.loads(str(text))
    except json.JSONDecodeError as error:
        raise CheckpointError(path, [f"its metadata is not JSON ({error})"]) from None
    return metadata if isinstance(metadata, dict) else {"": metadata}


def _read_ckpt_file(path: Path):
    arrays, texts = read_ckpt(path)
    return arrays, _metadata(texts.get(METADATA_KEY), path)


def _write_ckpt_file(state: dict, path: Path, metadata: str) -> None:
    import mindspore as ms

    ms.save_checkpoint([{"name": n, "data": ms.Tensor(v)} for n, v in state.items()], str(path),
                       append_dict={METADATA_KEY: metadata})


def _read_npz(path: Path):
    with np.load(path, allow_pickle=False) as archive:  # no pickles: a file may not run code
        state = {name: archive[name] for name in archive.files}
    metadata = state.pop(METADATA_KEY, None)
    return state, _metadata(metadata, path)


def _write_npz(state: dict, path: Path, metadata: str) -> None:
    np.savez(path, **state, **{METADATA_KEY: np.array(metadata)})


def _read_safetensors(path: Path):
    from safetensors import safe_open

    state = {}
    with safe_open(str(path), framework="np") as f:  # validates the header
        metadata = f.metadata() or {}
        for name in f.keys():
            try:
                state[name] = f.get_tensor(name)
            except TypeError:  # bfloat16: NumPy has no such type
                state[name] = _bfloat16_tensor(path, name)
    return state, _metadata(metadata.get(METADATA_KEY), path)


def _bfloat16_tensor(path: Path, name: str) -> np.ndarray:
    with open(path, "rb") as f:
        header_length = int.from_bytes(f.read(8), "little")
        entry = json.loads(f.read(header_length))[name]
        start, end = entry["data_offsets"]
        f.seek(8 + header_length + start)
        raw = np.frombuffer(f.read(end - start), dtype="<u2")
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(entry["shape"])


def _write_safetensors(state: dict, path: Path, metadata: str) -> None:
    from safetensors.numpy import save_file

    save_file(state, str(path), metadata={"format": "pt", METADATA_KEY: metadata})


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
