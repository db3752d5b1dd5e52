"""Untrusted files and links, as an attacker would make them (issue 36): every class ends in
the package's own exception, in bounded time and memory, writing nothing outside the cache.

Files are generated here; servers run on loopback (`http_server.FileServer`).
"""

import hashlib
import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, cost, random_state, tiny_shapes, write_ckpt
from http_server import FileServer
from PIL import Image

import network_expansion as ne
from network_expansion import download, formats
from network_expansion.download import cache_path, fetch
from network_expansion.errors import CardError, CheckpointError, ConfigError, DownloadError, ImageError

# -- .ckpt: MindSpore's protobuf, malformed ------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _record(name: str, dims, kind: str, content: bytes) -> bytes:
    tensor = b"".join(_varint(1 << 3) + _varint(d) for d in dims) + _field(2, kind.encode()) + _field(3, content)
    return _field(1, _field(1, name.encode()) + _field(2, tensor))


@pytest.mark.parametrize("content,problem", [
    (_record("w", [2, 2], "Float32", b"\0" * 64), "has dims [2, 2] of Float32 (16 bytes) but 64 bytes"),  # longer
    (_record("w", [64, 64], "Float32", b"\0" * 16), "has dims [64, 64] of Float32 (16384 bytes) but 16 bytes"),
    (_record("w", [1 << 40, 1 << 40], "Float32", b"\0" * 4), "has dims"),
    (_record("w", [4], "Complex128", b"\0" * 64), "unknown type"),
    (_record("w", [4], "Float32", b"\0" * 16)[:-5], "remain"),
    (_record("w", [4], "Float32", b"\0" * 16) * 2, "has dims [4] of Float32 (16 bytes) but 32 bytes"),  # two slices
    (_record("w", [1], "Float32", b"\0" * 4) + _record("v", [1], "Float32", b"\0" * 4)
     + _record("w", [1], "Float32", b"\0" * 4), "'w' appears twice"),
    (b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "runs past"),
    (b"\x12\x05hello", "unexpected field 2"),
    (_record("w", [4], "Float32", b"\0" * 16) + b"crc_num" + (12345).to_bytes(10, "big"), "CRC32 does not match"),
])
def test_a_malformed_ckpt_is_refused_before_anything_is_allocated(tmp_path, content, problem):
    """The file MindSpore 2.10's own `load_checkpoint` aborted on (`free(): invalid next
    size`, content longer than its dims) and its neighbours: a CheckpointError naming the
    problem, a few kilobytes and milliseconds spent."""
    _refused_cheaply(tmp_path / "hostile.ckpt", content, "not a well-formed MindSpore checkpoint", problem)


def _refused_cheaply(path, content: bytes, kind: str, problem: str) -> None:
    """`content`, written to `path`, is refused as `kind` naming `problem`, within a second
    of this thread's CPU and 4 MB traced."""
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=kind) as caught, cost() as spent:
        ne.weights.read_weights(path)
    assert problem in str(caught.value) and spent.seconds < 1 and spent.peak < 4 << 20


def test_the_ckpt_reader_reads_mindsporess_own_files_slices_and_texts(tmp_path):
    """MindSpore writes a tensor of more than 512 MiB as consecutive records of one name:
    read as one (made by hand here: a 1 MiB tensor in two slices), beside a text value."""
    full = np.arange(1 << 18, dtype=np.float32)
    halves = [full[:1 << 17].tobytes(), full[1 << 17:].tobytes()]
    path = tmp_path / "sliced.ckpt"
    path.write_bytes(b"".join(_record("big", [1 << 18], "Float32", h) for h in halves)
                     + _field(1, _field(1, b"note") + _field(2, _varint(1 << 3) + _varint(0) + _field(2, b"str")
                                                             + _field(3, "hi".encode("utf-32-le")))))
    arrays, texts = formats.read_ckpt(path)
    assert np.array_equal(arrays["big"], full) and texts == {"note": "hi"}


# -- safetensors and .npz ------------------------------------------------------------------

def _safetensors(header: dict, data: bytes = b"", length=None) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


@pytest.mark.parametrize("content,problem", [
    (_safetensors({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 64]}}, b"\0" * 64), "16 bytes) but 64"),
    (_safetensors({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 4), "byte range"),
    (_safetensors({"w": {"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4), "unknown type"),
    (_safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                   "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12), "overlap"),
    (_safetensors({}, length=1 << 40), "its header claims"),
    (struct.pack("<Q", 20000 * 2) + b"[" * 20000 + b"]" * 20000, "nests deeper"),
    (_safetensors({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4), "shape"),
])
def test_a_malformed_safetensors_file_is_refused_by_its_header(tmp_path, content, problem):
    _refused_cheaply(tmp_path / "hostile.safetensors", content, "not a well-formed safetensors file", problem)


def test_a_tiny_file_describing_a_huge_network_builds_nothing(tmp_path):
    """A 96 KB safetensors file whose `cls` says a width of 24,000 (and a patch embedding and
    positions that agree): its shapes describe a 100 GB network, it holds 96 KB. Refused
    before any network is built, in a few megabytes."""
    width = 24_000
    tensors = {"cls": (1, 1, width), "pos_embedding": (1, 2, width), "stem.patch_to_embedding.dense.weight": (width, 3),
               "body.layers.0.0.cell.0.gamma": (width,)}
    header, offset = {}, 0
    for name, shape in tensors.items():
        size = int(np.prod(shape)) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    path = tmp_path / "huge.safetensors"
    path.write_bytes(_safetensors(header, b"\0" * offset))
    assert path.stat().st_size < 1 << 20
    with pytest.raises(CheckpointError, match=r"describe a network of [\d,]+ parameters.*but it holds") as caught, \
            cost() as spent:
        ne.create_network("NetworkExpansion", pretrained=str(path), num_heads=1)
    assert "nothing was built" in str(caught.value) and spent.peak < 16 << 20


@pytest.mark.parametrize("case,problem", [("bomb", "decompression bomb"), ("object", "objects are never read"),
                                          ("not-npy", "not a stored or deflated .npy"),
                                          ("lying-header", "a header for")])
def test_a_hostile_npz_is_refused_before_it_inflates(tmp_path, case, problem):
    """A 2 MB .npz that inflated to 2.3 GB in 24 s, pickled objects, members that are not
    arrays, a header that lies about the member's size."""
    import zipfile

    path = tmp_path / "hostile.npz"
    if case == "bomb":
        np.savez_compressed(path, w=np.zeros(400 << 20, np.uint8))
    elif case == "object":
        np.savez(path, w=np.array([{"evil": 1}, None], dtype=object))
    else:
        with zipfile.ZipFile(path, "w") as archive:
            if case == "not-npy":
                archive.writestr("w.pkl", b"\x80\x04N.")
            else:
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.zeros((1000, 1000), np.float32))
                archive.writestr("w.npy", buffer.getvalue()[:500])
    with pytest.raises(CheckpointError, match=problem), cost() as spent:
        ne.weights.read_weights(path)
    assert spent.seconds < 2 and spent.peak < 16 << 20


def test_deeply_nested_metadata_is_refused_without_recursing(tmp_path):
    state = random_state(tiny_shapes())
    path = tmp_path / "nested.ckpt"
    import mindspore as ms

    ms.save_checkpoint([{"name": n, "data": ms.Tensor(v)} for n, v in state.items()], str(path),
                       append_dict={formats.METADATA_KEY: "[" * 100_000 + "]" * 100_000})
    with pytest.raises(CheckpointError, match="nests deeper than"):
        ne.weights.read_weights(path)


# -- downloads -----------------------------------------------------------------------------

@pytest.fixture()
def checkpoint_bytes(tmp_path):
    return write_ckpt(tmp_path / "src.ckpt", random_state(tiny_shapes())).read_bytes()


@pytest.mark.parametrize("tail", ["/w/..%2Fvictim%2Fmodel.ckpt", "/w/%2Ftmp%2Fvictim%2Fmodel.ckpt",
                                  "/w/%2E%2E%2F%2E%2E%2Fmodel.ckpt", "/w/..%5Cvictim%5Cmodel.ckpt",
                                  "/w/model.ckpt%00.txt.ckpt"])
def test_no_url_writes_outside_its_cache_folder(tmp_path, checkpoint_bytes, tail):
    """Encoded separators, parent folders and absolute paths in a URL's last segment name
    a file in the URL's own folder of the cache, reduced to safe characters: the download,
    its digest record and its lock land there, and nothing else is read or written."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "model.ckpt").write_bytes(b"the victim's own file")
    cache = tmp_path / "cache"
    with FileServer() as server:
        server.files[tail] = checkpoint_bytes  # the server sees the path as sent: still encoded
        path = fetch(server.url(tail), folder=cache, progress=False)
    assert path.read_bytes() == checkpoint_bytes
    assert path.parent.parent == cache / "downloads" and "/" not in path.name and not path.name.startswith(".")
    assert (victim / "model.ckpt").read_bytes() == b"the victim's own file" and len(list(victim.iterdir())) == 1
    assert all(p.resolve().is_relative_to(cache.resolve()) for p in cache.rglob("*"))


def test_two_urls_of_one_file_name_never_share_a_download(tmp_path):
    with FileServer() as server:
        server.files["/a/model.ckpt"] = b"A" * 100
        server.files["/b/model.ckpt"] = b"B" * 100
        first = fetch(server.url("/a/model.ckpt"), folder=tmp_path, progress=False)
        second = fetch(server.url("/b/model.ckpt"), folder=tmp_path, progress=False)
        assert fetch(server.url("/a/model.ckpt"), folder=tmp_path, progress=False) == first
    assert first != second and first.read_bytes() == b"A" * 100 and second.read_bytes() == b"B" * 100
    assert [r[0] for r in server.requests] == ["/a/model.ckpt", "/b/model.ckpt"]  # the third from the cache


def test_a_partial_file_of_a_changed_file_is_not_spliced(tmp_path, checkpoint_bytes):
    """Half of one checkpoint, then the server's file changed (another of the same size):
    the resume sends the first file's ETag (If-Range), the server sends the new file whole,
    and the download is the new file, not halves of two."""
    other = write_ckpt(tmp_path / "other.ckpt", random_state(tiny_shapes(), seed=9)).read_bytes()
    assert len(other) == len(checkpoint_bytes) and other != checkpoint_bytes
    with FileServer() as server:
        server.files["/w/model.ckpt"] = checkpoint_bytes
        server.cut_next["/w/model.ckpt"] = len(checkpoint_bytes) // 2
        attempts, download.ATTEMPTS = download.ATTEMPTS, 1
        try:
            with pytest.raises(DownloadError):
                fetch(server.url("/w/model.ckpt"), folder=tmp_path / "cache", progress=False)
        finally:
            download.ATTEMPTS = attempts
        server.files["/w/model.ckpt"] = other
        path = fetch(server.url("/w/model.ckpt"), folder=tmp_path / "cache", progress=False)
        last = server.requests[-1]
    assert path.read_bytes() == other
    assert last[1] == f"bytes={len(checkpoint_bytes) // 2}-"  # a resume was asked for, and refused by the server


@pytest.mark.parametrize("how,options,message", [
    ("drip", {"min_rate": 1000}, "below the minimum of 1000 bytes/s"),
    ("silent", {"timeout": 1}, "timed out"),
    ("endless", {"max_bytes": 1 << 20}, "more than the 1048576 bytes allowed"),
])
def test_a_stalling_dripping_or_endless_server_is_given_up_in_bounded_time(tmp_path, monkeypatch, how, options,
                                                                         message):
    """A server that drips a byte every 0.2 s never trips a read timeout: the transfer's rate
    (over a window, 1 s here) ends it; a silent one trips the timeout; an endless body the
    size cap. Nothing but the URL's own partial file (resumable, in its cache folder) is kept,
    and of an endless body not even that."""
    import time

    monkeypatch.setattr(download, "RATE_WINDOW", 1.0)
    with FileServer() as server:
        server.files["/w/model.ckpt"] = b"x" * 100_000
        server.misbehave["/w/model.ckpt"] = how
        started = time.monotonic()
        with pytest.raises(DownloadError, match=message):
            fetch(server.url("/w/model.ckpt"), folder=tmp_path, progress=False, **options)
        assert time.monotonic() - started < 10
    kept = sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".lock"))
    assert kept == ([] if how == "endless" else ["model.ckpt.part", "model.ckpt.part.json"])


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/model.ckpt"])
def test_a_redirect_leaves_http_never(tmp_path, location):
    with FileServer() as server:
        server.files["/w/model.ckpt"] = b"x"
        server.misbehave["/w/model.ckpt"] = f"redirect:{location}"
        with pytest.raises(DownloadError, match="(?i)redirect"):
            fetch(server.url("/w/model.ckpt"), folder=tmp_path, progress=False)
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".lock")]


def test_timm_tensors_of_shapes_no_name_map_fits_are_reported_not_raised(tmp_path):
    """A timm file whose fused q/k/v has rows no third divides, or a 2-D patch embedding:
    they map to nothing and the load lists them (unexpected, missing), no traceback."""
    from network_expansion.formats import write_safetensors

    write_safetensors({"cls_token": np.zeros((1, 1, 8), np.float32), "blocks.0.attn.qkv.weight": np.zeros((10, 8),
                       np.float32), "patch_embed.proj.weight": np.zeros((8, 3), np.float32)}, tmp_path / "t.safetensors",
                      {})
    weights = ne.weights.read_weights(tmp_path / "t.safetensors")
    assert "blocks.0.attn.qkv.weight" in weights.state and "patch_embed.proj.weight" in weights.state


def test_a_malformed_digest_is_refused_before_any_request(tmp_path):
    with FileServer() as server:
        server.files["/w/model.ckpt"] = b"x"
        for digest in ("abc", "0" * 63 + "g", "0" * 65):
            with pytest.raises(ConfigError, match="expected 64 hexadecimal digits"):
                fetch(server.url("/w/model.ckpt"), folder=tmp_path, sha256=digest, progress=False)
    assert server.requests == []


def test_odd_headers_urls_and_cache_paths_are_clean_errors_or_work(tmp_path, checkpoint_bytes):
    with FileServer() as server:
        server.files["/w/model.ckpt"] = checkpoint_bytes
        server.misbehave["/w/model.ckpt"] = "bad-length"  # Content-Length: abc
        assert fetch(server.url("/w/model.ckpt"), folder=tmp_path, progress=False).read_bytes() == checkpoint_bytes
        server.files["/w/mod%C3%A8le.ckpt"] = checkpoint_bytes
        path = fetch(server.url("/w/modèle.ckpt"), folder=tmp_path, progress=False)  # not ASCII: encoded
        assert path.read_bytes() == checkpoint_bytes
    with pytest.raises(ConfigError, match="no-such-user-here"):
        fetch("http://127.0.0.1:9/w/model.ckpt", folder="~no-such-user-here/cache", progress=False)
    with pytest.raises(DownloadError, match="not a URL that can be fetched"):
        fetch("http://[::1/w/model.ckpt", folder=tmp_path, progress=False)


# -- pictures ------------------------------------------------------------------------------

def _png(width, height, text_chunk=None) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG")
    data = buffer.getvalue()
    if text_chunk is not None:
        chunk = b"zTXt" + text_chunk
        data = data[:33] + struct.pack(">I", len(text_chunk)) + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]
    return data


@pytest.mark.parametrize("name,content,message", [
    ("strip.png", _png(1, 60000), "more than 100 times as long as it is wide"),
    ("text.png", _png(8, 8, b"k\0\0" + zlib.compress(b"a" * (64 << 20))), "cannot be decoded"),
    ("bad.ppm", b"P6\n99999999999999999999 1\n255\n" + b"\0" * 10, "bad.ppm"),
    ("bad.ppm", b"P6\n-3 4\n255\n", "bad.ppm"),
])
def test_a_hostile_picture_is_an_image_error_naming_it_in_bounded_memory(tmp_path, name, content, message):
    """A 254-byte 1 x 60000 PNG strip (resized for the network: 256 x 15.4 million pixels,
    12 GB), a text chunk over Pillow's limit and damaged PPM headers (Pillow's ValueError)."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message) as caught, cost() as spent:
        ne.images.load_image(path)
    assert name in str(caught.value) and spent.peak < 64 << 20


def test_arrays_are_held_to_the_same_limits():
    with pytest.raises(ImageError, match="more than 100 times"):
        ne.images.load_image(np.zeros((1, 5000, 3), np.uint8))
    with pytest.raises(ImageError, match="above the limit"):
        ne.images.load_image(np.zeros((20, 20, 3), np.uint8), max_pixels=100)


def test_names_with_control_characters_cannot_forge_output_lines(tmp_path, capsys):
    """A file named with a newline and a terminal escape: the command prints it escaped (one
    line per result, no escape sequence), and a bad file among good ones ends nothing."""
    from conftest import color_image, color_rigged_network, run_command

    weights = ne.save_weights(color_rigged_network(), tmp_path / "rig.ckpt")
    folder = tmp_path / "pictures"
    folder.mkdir()
    Image.fromarray(color_image(0)).save(folder / "good.png")
    forged = folder / "evil\nforged: 100.00%  cat (0)\x1b[2J.png"
    Image.fromarray(color_image(1)).save(forged, format="PNG")
    (folder / "broken\x1b]0;pwned\x07.png").write_bytes(_png(1, 60000))
    code, out, err = run_command(["predict", str(folder), "--weights", str(weights), "--topk", "1"], capsys)
    assert code == 1  # one picture was refused, the others classified
    assert "\x1b" not in out + err and "\x07" not in out + err
    assert "evil\\nforged" in out and not any(line.startswith("forged") for line in out.splitlines())
    assert "broken\\x1b]0;pwned\\x07.png" in err and "good.png" in out


# -- the hub door --------------------------------------------------------------------------

SHADOWED = """
import importlib.util, json, sys
sys.path.insert(0, sys.argv[2])
import hub_conf                       # another hub model's, imported first by name
import network_expansion              # another copy of the package, imported first
assert hub_conf.create_network("x") == "EVIL" and network_expansion.ORIGIN == "elsewhere"
spec = importlib.util.spec_from_file_location("mindspore_hub_conf", sys.argv[1] + "/mindspore_hub_conf.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)     # what the hub client does with the folder it downloaded
network = module.create_network("networkexpansion", depth=1, width=32, num_heads=2, mlp_width=64, image_size=32,
                                patch_size=8, num_classes=3)
print(json.dumps({"class": type(network).__name__, "file": sys.modules[type(network).__module__].__file__}))
"""


def test_the_hub_door_builds_with_the_code_beside_its_card(tmp_path):
    """A `hub_conf` module and a `network_expansion` package imported earlier from elsewhere
    (another hub model's, another version) do not replace the downloaded folder's code."""
    import shutil

    other = tmp_path / "elsewhere"
    (other / "network_expansion").mkdir(parents=True)
    (other / "hub_conf.py").write_text("def create_network(name, *a, **k):\n    return 'EVIL'\n")
    (other / "network_expansion" / "__init__.py").write_text("ORIGIN = 'elsewhere'\n"
                                                            "def create_network(*a, **k):\n    return 'EVIL'\n")
    folder = tmp_path / "NetworkExpansion"
    folder.mkdir()
    for name in ("hub_conf.py", "mindspore_hub_conf.py"):
        shutil.copy(REPO / name, folder / name)
    for name in ("src", "assets"):
        shutil.copytree(REPO / name, folder / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    result = subprocess.run([sys.executable, "-c", SHADOWED, str(folder), str(other)], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    built = json.loads(result.stdout.splitlines()[-1])
    assert built["class"] == "VisionTransformer" and built["file"].startswith(str(folder / "src"))
    assert "already imported from" in result.stderr  # and it says which copy it used


# -- cards ---------------------------------------------------------------------------------

@pytest.mark.parametrize("replace,value,problem", [
    ("update-time: 2023-3-8", "update-time: 2023-13-45", None),                     # a date is text to a card
    ("model-version: 1.0", "model-version: !!int abc", "cannot be read"),
    ("model-version: 1.0", "model-version: " + "9" * 4301, "cannot be read"),
    ("model-version: 1.0", "model-version: " + "[" * 20000 + "]" * 20000, "nest 20000 deep"),
])
def test_a_hostile_card_is_a_list_of_problems_in_bounded_time(tmp_path, replace, value, problem):
    shipped = (REPO / "assets" / "noahsark" / "gpu" / "1.8" / "networkexpansion_v1.0_imagenet2012.md").read_text()
    path = tmp_path / "card.md"
    path.write_text(shipped.replace(replace, value))
    with cost() as spent:
        problems = ne.validate_card(path)
    assert spent.seconds < 1
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems
        with pytest.raises(CardError):
            ne.load_card(path)


# -- full disks ----------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_a_full_disk_under_safetensors_and_npz_is_one_clean_error(tmp_path, suffix):
    """Writes that fill the disk (a file-size limit makes it full for a child process): one
    OutputError line, no SafetensorError, no 'Exception ignored' traceback, no file left."""
    import resource

    code = ("import sys; sys.path.insert(0, 'tests')\n"
            "import network_expansion as ne\n"
            "from conftest import tiny_config\n"
            "try:\n"
            f"    ne.save_weights(ne.VisionTransformer(tiny_config(depth=4)), 'w{suffix}')\n"
            "except ne.OutputError as error:\n"
            "    print('OutputError:', error)\n")
    (tmp_path / "tests").symlink_to(REPO / "tests")

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            preexec_fn=limit)
    assert "OutputError:" in result.stdout, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tests"]


def test_a_urls_cache_folder_is_named_by_a_digest_of_the_whole_url():
    url = "https://example.com/a/model.ckpt"
    assert cache_path(url, "/c").parent.name == hashlib.sha256(url.encode()).hexdigest()[:16]
    assert Path(cache_path(url, "/c")).name == "model.ckpt"
