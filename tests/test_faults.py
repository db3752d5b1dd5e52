"""Faults and hostile input: each case ends in a specific package exception or a one-line
command-line error with exit code 2, changes nothing on disk that it should not, and
leaves nothing half-written. Signals and a full disk are real: a child process gets a real
signal; a file-size limit (RLIMIT_FSIZE) makes the disk "full" for a child process.

The cases are the ones a hostile trial tried (issue 11), the ones that broke and the ones
that held, grouped by where the input enters.
"""

import json
import resource
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, cost, noise_folder, parameters_of, run_command, tiny_config, write_ckpt
from http_server import FileServer
from PIL import Image

import network_expansion as ne
from network_expansion.download import cache_path, fetch
from network_expansion import TrainConfig
from network_expansion.training_checkpoint import read_training_state
from network_expansion.errors import (CardError, CheckpointError, ConfigError, DownloadError, ImageError,
                                      OutputError)


def _one_line_error(code, err, *needles):
    """Exit code 2 and one error line (progress bars may share stderr), no traceback."""
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("network-expansion")]
    assert len(lines) == 1 and "error: " in lines[0], err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)


def _files(folder: Path) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# -- images ------------------------------------------------------------------------------

def _png_claiming(width, height) -> bytes:
    """A valid 1x1 PNG whose header claims `width` x `height` pixels."""
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[ihdr + 17:ihdr + 21] = zlib.crc32(bytes(data[ihdr:ihdr + 17])).to_bytes(4, "big")
    return bytes(data)


@pytest.mark.parametrize("content,message", [
    (b"", "the file is empty"),
    (b"plain text, not a picture", "not an image Pillow can read"),
    ("truncated", "the image data is damaged"),
    ("bomb", "decompression bomb"),
])
def test_a_bad_image_file_raises_image_error_naming_it_quickly_and_cheaply(tmp_path, content, message):
    path = tmp_path / "bad.png"
    if content == "truncated":
        Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 90).save(path)
        content = path.read_bytes()[:60]
    elif content == "bomb":
        content = _png_claiming(30000, 30000)
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message) as caught, cost() as spent:
        ne.images.load_image(path)
    assert str(path) in str(caught.value) and spent.seconds < 1 and spent.peak < 8 * 2**20


@pytest.mark.parametrize("array,message", [
    (np.zeros((0, 0, 3), np.uint8), "holds no pixels"),
    (np.zeros((3, 32, 32), np.uint8), "looks channels-first"),
    (np.full((4, 4, 3), 2.0, np.float32), "outside \\[0, 1\\]"),
    (np.zeros((4, 4, 3), np.int64), "dtype int64"),
])
def test_an_unusable_array_raises_image_error(array, message):
    with pytest.raises(ImageError, match=message):
        ne.images.load_image(array)


def test_a_missing_path_or_folder_raises_image_error(tmp_path):
    from conftest import color_rigged_network

    with pytest.raises(ImageError, match="no such file"):
        ne.images.load_image(tmp_path / "missing.jpg")
    classifier = ne.Classifier(color_rigged_network(), batch_size=2)
    with pytest.raises(ImageError, match="no such folder"):
        classifier.predict_folder(tmp_path / "missing")
    with pytest.raises(ConfigError, match="topk must be a whole number >= 1"):
        classifier.predict(np.zeros((8, 8, 3), np.uint8), topk=0)
    with pytest.raises(ConfigError, match="batch_size must be a whole number >= 1, got 0"):
        ne.Classifier(color_rigged_network(), batch_size=0)


# -- checkpoints ---------------------------------------------------------------------------

@pytest.fixture()
def tiny_state():
    return parameters_of(ne.VisionTransformer(tiny_config()))


@pytest.mark.parametrize("damage,message", [
    (lambda s: s.pop("cls"), "missing: cls"),
    (lambda s: s.update(extra=np.zeros(3, np.float32)), "unexpected: extra"),
    (lambda s: s.update(cls=np.zeros((1, 1, 7), np.float32)), "wrong shape: cls"),
    (lambda s: s["cls"].__setitem__((0, 0, 0), np.nan), "not finite: cls"),
    (lambda s: s.update(cls=np.zeros((1, 1, 32), np.int32)), "not floating point: cls holds int32"),
])
def test_a_checkpoint_that_does_not_fit_is_refused_and_the_network_is_unchanged(tmp_path, tiny_state, damage,
                                                                                 message):
    damage(tiny_state)
    path = write_ckpt(tmp_path / "w.ckpt", tiny_state)
    network = ne.VisionTransformer(tiny_config())
    before = parameters_of(network)
    with pytest.raises(CheckpointError, match=message):
        ne.load_pretrained(network, path)
    after = parameters_of(network)
    assert all(np.array_equal(before[n], after[n]) for n in before)


def test_metadata_of_the_wrong_kind_is_refused(tmp_path, tiny_state):
    from safetensors.numpy import save_file

    for metadata, message in ([{"architecture": [1, 2]}, "'architecture' is a list"],
                              [{"class_names": "cat"}, "'class_names' is not a list of strings"]):
        path = tmp_path / "w.safetensors"
        save_file(tiny_state, str(path), metadata={"network_expansion_metadata": json.dumps(metadata)})
        with pytest.raises(CheckpointError, match=message):
            ne.weights.read_weights(path)


@pytest.mark.parametrize("name,content,message", [
    ("w.ckpt", b"\x00garbage" * 10, "not a well-formed MindSpore checkpoint"),
    ("w.safetensors", b"\xff" * 64, "not a well-formed safetensors file: its header claims"),
    ("w.bin", b"anything", "unknown format '.bin'"),
])
def test_a_damaged_or_unknown_checkpoint_file_raises_checkpoint_error(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        ne.weights.read_weights(tmp_path / name)


def test_a_pickled_npz_is_refused(tmp_path):
    np.savez(tmp_path / "w.npz", cls=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(CheckpointError, match=r"not a well-formed .npz: .cls.npy.: an array of object .*no pickles"):
        ne.weights.read_weights(tmp_path / "w.npz")


# -- downloads -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    path = ne.save_weights(ne.VisionTransformer(tiny_config()), tmp_path_factory.mktemp("w") / "tiny.ckpt")
    return path.read_bytes()


@pytest.fixture()
def server(checkpoint_bytes):
    with FileServer() as s:
        s.files["/w/tiny.ckpt"] = checkpoint_bytes
        yield s


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_wrong_digest_moves_a_hand_placed_file_aside_and_says_where(tmp_path, checkpoint_bytes):
    url = f"http://127.0.0.1:{_closed_port()}/w/tiny.ckpt"
    placed = cache_path(url, tmp_path)
    placed.parent.mkdir(parents=True)
    placed.write_bytes(checkpoint_bytes)
    with pytest.raises(DownloadError, match=r"cannot download.*kept at .*tiny\.ckpt\.sha256-") as caught:
        fetch(url, folder=tmp_path, sha256="0" * 64, progress=False)
    kept = list(placed.parent.glob("tiny.ckpt.sha256-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == checkpoint_bytes  # the only copy survives
    assert str(kept[0]) in str(caught.value)


def test_a_wrong_digest_online_keeps_the_good_cached_copy(server, tmp_path, checkpoint_bytes):
    url = server.url("/w/tiny.ckpt")
    fetch(url, folder=tmp_path, progress=False)
    with pytest.raises(DownloadError, match="not the expected 0000.*kept at"):
        fetch(url, folder=tmp_path, sha256="0" * 64, progress=False)
    assert [p.read_bytes() for p in tmp_path.rglob("tiny.ckpt.sha256-*")] == [checkpoint_bytes]


@pytest.mark.parametrize("how", ["html", "no-length-cut"])
def test_a_download_that_is_not_weights_is_not_cached(server, tmp_path, how):
    if how == "html":
        server.files["/w/tiny.ckpt"] = b"<!DOCTYPE html><html><body>Please log in</body></html>"
    else:
        server.misbehave["/w/tiny.ckpt"] = "no-length"
        server.cut_next["/w/tiny.ckpt"] = 500
    with pytest.raises(DownloadError, match="sent something that is not what was asked for.*nothing was kept"):
        ne.weights.read_weights(server.url("/w/tiny.ckpt"), cache_dir=tmp_path, progress=False)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["tiny.ckpt.lock"]


@pytest.mark.parametrize("how", ["garbage-part", "range-from-zero", "range-elsewhere"])
def test_a_resumed_download_is_joined_only_where_it_fits(server, tmp_path, checkpoint_bytes, how):
    import json
    import hashlib

    url = server.url("/w/tiny.ckpt")
    part = cache_path(url, tmp_path).with_name("tiny.ckpt.part")
    part.parent.mkdir(parents=True)
    etag = '"' + hashlib.sha256(checkpoint_bytes).hexdigest()[:16] + '"'  # the server's: a resume is asked for
    part.with_name("tiny.ckpt.part.json").write_text(json.dumps({"url": url, "etag": etag}))
    if how == "garbage-part":
        part.write_bytes(b"\x00" * 300)  # not the file's first bytes
    else:
        part.write_bytes(checkpoint_bytes[:300])
        server.misbehave["/w/tiny.ckpt"] = how
    weights = ne.weights.read_weights(url, cache_dir=tmp_path, progress=False)
    assert cache_path(url, tmp_path).read_bytes() == checkpoint_bytes and "cls" in weights.state


@pytest.mark.parametrize("url_tail,message", [
    ("/w/", "names no file"),
    ("/w/..", "names no file"),
    ("/w/readme.txt", "names a .txt file, not a checkpoint"),
])
def test_a_url_that_names_no_checkpoint_is_refused_before_downloading(server, tmp_path, url_tail, message):
    with pytest.raises((DownloadError, CheckpointError), match=message):
        ne.weights.read_weights(server.url(url_tail), cache_dir=tmp_path, progress=False)
    assert server.requests == []


def test_a_cache_folder_that_is_a_file_says_so(server, tmp_path, capsys, monkeypatch):
    (tmp_path / "cache").write_text("a file")
    with pytest.raises(DownloadError, match="cannot use the cache folder"):
        fetch(server.url("/w/tiny.ckpt"), folder=tmp_path / "cache", progress=False)
    monkeypatch.setenv("NETWORK_EXPANSION_CACHE", str(tmp_path / "cache"))
    Image.new("RGB", (8, 8)).save(tmp_path / "cat.jpg")
    code, _, err = run_command(["predict", str(tmp_path / "cat.jpg"), "--weights", server.url("/w/tiny.ckpt")],
                               capsys)
    _one_line_error(code, err, "cannot use the cache folder", "NETWORK_EXPANSION_CACHE")


# -- cards ---------------------------------------------------------------------------------

LAUGHS = "---\n" + "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi")) + "---\n"


def test_a_card_with_nested_aliases_is_refused_in_under_a_second_and_a_few_mb(tmp_path):
    path = tmp_path / "laughs.md"
    path.write_text(LAUGHS)
    with cost() as spent:
        problems = ne.validate_card(path)
    assert any("cards may not use aliases" in p for p in problems)
    assert spent.seconds < 1 and spent.peak < 4 * 2**20
    with pytest.raises(CardError, match="aliases"):
        ne.load_card(path)


@pytest.mark.parametrize("header,message", [
    ("model-name: !!python/object/apply:os.system ['echo owned']", "not valid YAML"),
    ("num-classes: -5", "'num-classes' is -5: expected a positive integer"),
    ("input-shape: [0, -1, 3]", "expected a list of positive integers"),
])
def test_hostile_or_impossible_card_values_are_reported(tmp_path, header, message):
    card = (REPO / "assets/noahsark/gpu/1.8/networkexpansion_v1.0_imagenet2012.md").read_text()
    key = header.split(":")[0]
    lines = [line for line in card.splitlines() if not line.startswith(f"{key}:")]
    lines.insert(lines.index("---") + 1, header)
    path = tmp_path / "card.md"
    path.write_text("\n".join(lines) + "\n")
    assert any(message in p for p in ne.validate_card(path)), ne.validate_card(path)


def test_a_huge_or_binary_card_is_refused(tmp_path):
    (tmp_path / "huge.md").write_text("---\nx: 1\n---\n" + "a" * 100_000)
    (tmp_path / "binary.md").write_bytes(b"---\n\xff\xfe\x00---\n")
    assert "larger than 64 KiB" in ne.validate_card(tmp_path / "huge.md")[0]
    assert "not UTF-8" in ne.validate_card(tmp_path / "binary.md")[0]


# -- values on the command line and in the API ---------------------------------------------

@pytest.mark.parametrize("argv,flag,given,accepted", [
    (["predict", "cat.jpg", "--threads", "99"], "--threads", "'99'", "a whole number from 1 to"),
    (["predict", "cat.jpg", "--batch-size", "0"], "--batch-size", "'0'", "a whole number >= 1"),
    (["predict", "cat.jpg", "--topk", "0"], "--topk", "'0'", "a whole number >= 1"),
    (["evaluate", "val", "--batch-size", "0"], "--batch-size", "'0'", "a whole number >= 1"),
    (["evaluate", "val", "--workers", "-1"], "--workers", "'-1'", "a whole number >= 1"),
    (["train", "--data", "d", "--schedule", "2y32"], "--schedule", "'2y32'", "stages separated by commas"),
    (["train", "--data", "d", "--schedule", "12,6"], "--schedule", "(12, 6)", "grow from stage to stage"),
    (["train", "--data", "d", "--epochs", "0"], "--epochs", "'0'", "a whole number >= 1"),
    (["train", "--data", "d", "--lr", "-1"], "--lr", "'-1'", "a number > 0"),
    (["train", "--data", "d", "--batch-size", "-4"], "--batch-size", "'-4'", "a whole number >= 1"),
    (["train", "--data", "d", "--ema-decay", "1"], "--ema-decay", "'1'", "a number >= 0 and < 1"),
    (["train", "--data", "d", "--stage-starts", "0,x"], "--stage-starts", "'0,x'", "one start per stage"),
    (["train", "--data", "d", "--growth", "smooth"], "--growth", "'smooth'", "'reference', 'exact'"),
    (["train", "--data", "d", "--growth-gate", "both"], "--growth-gate", "'both'", "'ramp', 'learned'"),
    (["train", "--data", "d", "--growth-ramp", "0"], "--growth-ramp", "'0'", "a whole number >= 1"),
    (["export", "m.mindir", "--batch", "0"], "--batch", "'0'", "a whole number >= 1 or 'dynamic'"),
    (["export", "m.mindir", "--batch", "-2"], "--batch", "'-2'", "a whole number >= 1 or 'dynamic'"),
    (["export", "m.mindir", "--batch", "abc"], "--batch", "'abc'", "a whole number >= 1 or 'dynamic'"),
    (["export", "m.mindir", "--input-size", "0", "0"], "--input-size", "'0'", "a whole number >= 1"),
    (["finetune", "--data", "d", "--layer-decay", "0"], "--layer-decay", "'0'", "a number > 0 and <= 1"),
    (["predict", "cat.jpg", "--precision", "int4"], "--precision", "'int4'", "float32"),
])
def test_a_mistake_on_the_command_line_is_one_line_naming_flag_value_and_what_is_accepted(
        capsys, tmp_path, monkeypatch, argv, flag, given, accepted):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_command(argv, capsys)
    assert out == ""
    _one_line_error(code, err, f"argument {flag}", given, accepted)
    assert _files(tmp_path) == []  # nothing written, no MindSpore rank_0/ analysis files


@pytest.mark.parametrize("fields,message", [
    ({"epochs": 0}, "epochs must be a whole number >= 1"),
    ({"lr": -1.0}, "lr must be a number > 0"),
    ({"ema_decay": 1.0}, "ema_decay must be a number >= 0 and < 1"),
    ({"clip_grad": 0.0}, "clip_grad must be None or a number > 0"),
    ({"expansion_mode": "sideways"}, "expansion_mode must be one of insert, stack"),
    ({"growth_gate": "both"}, "growth_gate must be one of ramp, learned"),
    ({"growth_ramp": 0}, "growth_ramp must be None or a whole number >= 1"),
])
def test_a_training_recipe_that_makes_no_sense_is_refused(fields, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**fields)


def test_export_sizes_that_make_no_sense_are_refused_in_the_api(tmp_path):
    from network_expansion.export import export

    network = ne.VisionTransformer(tiny_config())
    for options in ({"batch": 0}, {"batch": -2}, {"with_preprocess": True, "input_size": (0, 0)}):
        with pytest.raises(ConfigError):
            export(network, tmp_path / "m.mindir", **options)
    assert _files(tmp_path) == []


# -- writing: full disks, forbidden places, existing files ----------------------------------

def _limited(code: str, limit: int, cwd) -> subprocess.CompletedProcess:
    """Run Python `code` in a child whose files may not grow past `limit` bytes (a full disk
    for that process): writes fail with EFBIG instead of killing it with SIGXFSZ."""
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600,
                          preexec_fn=preexec)


def test_save_weights_on_a_full_disk_raises_output_error_and_keeps_the_old_file(tmp_path):
    old = ne.save_weights(ne.VisionTransformer(tiny_config(depth=1)), tmp_path / "w.ckpt")
    before = old.read_bytes()
    code = ("import network_expansion as ne, sys; sys.path.insert(0, 'tests')\n"
            "from conftest import tiny_config\n"
            "try:\n"
            "    ne.save_weights(ne.VisionTransformer(tiny_config(depth=4)), 'w.ckpt')\n"
            "except ne.OutputError as error:\n"
            "    print('OutputError:', error)\n")
    (tmp_path / "tests").symlink_to(REPO / "tests")
    result = _limited(code, len(before) + 1000, tmp_path)
    assert "OutputError:" in result.stdout and "File too large" in result.stdout, result.stderr[-2000:]
    assert (tmp_path / "w.ckpt").read_bytes() == before
    assert _files(tmp_path) == ["tests", "w.ckpt"]  # no temporary left


@pytest.mark.parametrize("where", ["/proc/network_expansion_test/w.ckpt", "FILE/w.ckpt", "DIR"])
def test_writing_where_nothing_can_be_written_is_one_line(tmp_path, capsys, where, checkpoint_bytes):
    (tmp_path / "source.ckpt").write_bytes(checkpoint_bytes)
    (tmp_path / "FILE").write_text("a file")
    (tmp_path / "DIR").mkdir()
    destination = where.replace("FILE", str(tmp_path / "FILE")).replace("DIR", str(tmp_path / "DIR.ckpt"))
    if where == "DIR":
        (tmp_path / "DIR.ckpt").mkdir()
    code, _, err = run_command(["convert", str(tmp_path / "source.ckpt"), destination, "--overwrite"], capsys)
    _one_line_error(code, err, "cannot write there")
    with pytest.raises(OutputError):
        ne.save_weights(ne.VisionTransformer(tiny_config()), destination)
    assert not [p for p in tmp_path.rglob("*") if ".partial" in p.name]


def test_existing_files_are_not_overwritten_without_a_word(tmp_path, capsys, checkpoint_bytes):
    (tmp_path / "source.ckpt").write_bytes(checkpoint_bytes)
    (tmp_path / "out.safetensors").write_text("precious")
    (tmp_path / "model.mindir").write_text("precious too")
    code, _, err = run_command(["convert", str(tmp_path / "source.ckpt"), str(tmp_path / "out.safetensors")], capsys)
    _one_line_error(code, err, "exists; pass --overwrite")
    code, _, err = run_command(["export", str(tmp_path / "model.mindir"), "--weights", str(tmp_path / "source.ckpt")],
                        capsys)
    _one_line_error(code, err, "exists; pass --overwrite")
    assert (tmp_path / "out.safetensors").read_text() == "precious"
    assert (tmp_path / "model.mindir").read_text() == "precious too"


def test_a_csv_into_a_folder_is_refused_and_leaves_no_temporary(tmp_path, capsys):
    from conftest import color_image, color_rigged_network

    for c, name in enumerate(("r", "g", "b")):
        (tmp_path / "tree" / name).mkdir(parents=True)
        Image.fromarray(color_image(c)).save(tmp_path / "tree" / name / "0.png")
    weights = ne.save_weights(color_rigged_network(), tmp_path / "rig.ckpt")
    (tmp_path / "report").mkdir()
    code, _, err = run_command(["evaluate", str(tmp_path / "tree"), "--weights", str(weights), "--csv",
                         str(tmp_path / "report")], capsys)
    _one_line_error(code, err, "is a folder", "give a file name")
    assert not [p for p in tmp_path.rglob("*") if ".partial" in p.name]


def test_a_killed_writers_leftovers_are_removed_by_the_next_write(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / f".w.{dead.pid}.partial.tmp"   # MindSpore's own temporary of a killed save
    leftover.write_bytes(b"\x00" * 1000)
    ne.save_weights(ne.VisionTransformer(tiny_config()), tmp_path / "w.ckpt")
    assert _files(tmp_path) == ["w.ckpt"]


# -- training: signals, a full disk, seeds, a bad output ------------------------------------

TRAIN = ["--schedule", "1,2", "--epochs", "4", "--image-size", "16", "--patch-size", "8", "--width", "16",
         "--num-heads", "2", "--mlp-width", "32", "--batch-size", "4", "--log-every", "1", "--seed", "5"]


def _command(*args):
    return [sys.executable, "-m", "network_expansion", *args]


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    noise_folder(root / "data", per_class=12)
    return root


@pytest.fixture(scope="module")
def reference_run(folder_data):
    """The uninterrupted run every fault is compared with."""
    out = folder_data / "reference"
    result = subprocess.run(_command("train", "--data", str(folder_data / "data"), *TRAIN, "--output", str(out)),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def _weights(path) -> dict:
    return ne.weights.read_weights(path).state


def _same_weights(a, b):
    a, b = _weights(a), _weights(b)
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.slow
def test_the_same_command_with_the_same_seed_trains_the_same_weights(folder_data, reference_run):
    out = folder_data / "again"
    result = subprocess.run(_command("train", "--data", str(folder_data / "data"), *TRAIN, "--output", str(out)),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    _same_weights(out / "model.ckpt", reference_run / "model.ckpt")


def _wait_for(stream, text: str) -> str:
    """Read `stream` (a progress bar's \\r updates included) until `text` has appeared."""
    seen = ""
    while text not in seen:
        character = stream.read(1)
        assert character, f"the run ended before {text!r}: {seen[-2000:]}"
        seen += character
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("number,word", [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "terminated"),
                                         (signal.SIGHUP, "hung up")])
def test_a_real_signal_saves_the_run_and_resume_is_exact(folder_data, reference_run, number, word):
    """The signal comes in the middle of epoch 2, as a user's Ctrl-C (or a dropped ssh
    session's SIGHUP) would. MindSpore turns a Ctrl-C that lands inside a running graph into a
    SIGTERM to the process: saved all the same, reported as terminated (exit 143)."""
    out = folder_data / f"signal-{word}"
    child = subprocess.Popen(_command("train", "--data", str(folder_data / "data"), *TRAIN, "--output", str(out)),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = _wait_for(child.stderr, "epoch 2/4")
    seen += _wait_for(child.stderr, "| 2/6 [")
    child.send_signal(number)
    err = seen + child.stderr.read()
    child.wait(timeout=300)
    expected = {signal.SIGINT: {130: "interrupted", 143: "terminated"}, signal.SIGTERM: {143: "terminated"},
                signal.SIGHUP: {129: "hung up"}}[number]
    assert child.returncode in expected, err[-2000:]
    assert f"{expected[child.returncode]}: saved {out / 'checkpoint.ckpt'} at epoch 2, batch " in err
    state = read_training_state(out / "checkpoint.ckpt")
    assert (state["epoch"], state["depth"]) == (1, 1) and state["position"] >= 2 and not (out / "model.ckpt").exists()
    result = subprocess.run(_command("train", "--data", str(folder_data / "data"), "--resume",
                                     str(out / "checkpoint.ckpt"), "--output", str(out)),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    _same_weights(out / "model.ckpt", reference_run / "model.ckpt")


def test_sigkill_leaves_the_last_checkpoint_intact(folder_data):
    out = folder_data / "killed"
    child = subprocess.Popen(_command("train", "--data", str(folder_data / "data"), *TRAIN, "--output", str(out)),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in child.stdout:
        if line.startswith("epoch 2/4"):
            break
    child.kill()
    child.wait(timeout=60)
    state = read_training_state(out / "checkpoint.ckpt")  # reads whole: not half-written
    assert state["epoch"] in (1, 2)  # epoch 2's line is printed just before its checkpoint is written


@pytest.mark.slow
def test_a_full_disk_stops_training_in_one_line_and_keeps_the_last_checkpoint(folder_data, reference_run):
    """The depth-2 checkpoint after the growth no longer fits; the depth-1 one stays."""
    out = folder_data / "full"
    limit = (reference_run / "checkpoint.ckpt").stat().st_size - 16_000  # a block's weights, EMA, moments: 35 KB
    code = ("import sys; from network_expansion.cli import main; sys.exit(main(sys.argv[1:]))")
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run([sys.executable, "-c", code, "train", "--data", str(folder_data / "data"), *TRAIN,
                             "--output", str(out)], capture_output=True, text=True, timeout=600, preexec_fn=preexec)
    errors = [line for line in result.stderr.splitlines() if line.startswith("network-expansion")]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(errors) == 1 and "checkpoint.ckpt: cannot write there (File too large)" in errors[0]
    assert "The last checkpoint written is intact" in errors[0]
    state = read_training_state(out / "checkpoint.ckpt")
    assert state["depth"] == 1 and state["epoch"] == 2
    assert sorted(p.name for p in out.iterdir()) == [".run.lock", "checkpoint.ckpt", "config.yaml", "log.jsonl"]


def test_an_output_that_cannot_be_written_is_refused_before_training(tmp_path, capsys, folder_data):
    (tmp_path / "file").write_text("not a folder")
    code, _, err = run_command(["train", "--data", str(folder_data / "data"), "--output", str(tmp_path / "file" / "run")],
                        capsys)
    _one_line_error(code, err, "--output ", "cannot write there")
    code, _, err = run_command(["train", "--data", str(folder_data / "data"), "--output", "/proc/network-expansion-run"],
                        capsys)
    _one_line_error(code, err, "--output ", "cannot write there")
