"""Downloads into the cache, against a loopback server: progress, cache, resume, digests."""

import hashlib
import socket

import pytest
from http_server import FileServer

from network_expansion.download import cache_path, fetch
from network_expansion.errors import DownloadError

NAME = "depth_expansion_vit_base_gpu_v180_imagenet2012_research_cv_top1acc81.5.ckpt"
BODY = bytes(range(256)) * 4096 * 3  # 3 MiB: several chunks
DIGEST = hashlib.sha256(BODY).hexdigest()


@pytest.fixture()
def server():
    with FileServer() as s:
        s.files[f"/models/{NAME}"] = BODY
        yield s


def test_download_shows_progress_and_records_the_digest(server, tmp_path, capsys):
    path = fetch(server.url(f"/models/{NAME}"), folder=tmp_path)
    assert path == cache_path(server.url(f"/models/{NAME}"), tmp_path) and path.read_bytes() == BODY
    assert path.parent.parent == tmp_path / "downloads" and path.name == NAME  # a folder of its own for the URL
    assert path.with_name(f"{NAME}.sha256").read_text().strip() == DIGEST
    assert sorted(p.name for p in path.parent.iterdir()) == [NAME, f"{NAME}.lock", f"{NAME}.sha256"]  # no .part
    progress = capsys.readouterr().err
    assert NAME in progress and "3.00M" in progress and "B/s" in progress


def test_a_second_fetch_is_served_from_the_cache(server, tmp_path):
    fetch(server.url(f"/models/{NAME}"), folder=tmp_path, progress=False)
    fetch(server.url(f"/models/{NAME}"), folder=tmp_path, progress=False)
    assert len(server.requests) == 1


def test_a_cut_connection_is_resumed_where_it_stopped(server, tmp_path):
    server.cut_next[f"/models/{NAME}"] = 1_000_000
    path = fetch(server.url(f"/models/{NAME}"), folder=tmp_path, progress=False)
    assert path.read_bytes() == BODY
    assert [r[1] for r in server.requests] == [None, "bytes=1000000-"]


def test_a_partial_file_from_an_earlier_run_is_resumed_only_with_its_validator(server, tmp_path):
    """A partial file whose start was recorded with the server's ETag asks for the rest of
    that very file (Range with If-Range); one with no record of what it was is started over."""
    url = server.url(f"/models/{NAME}")
    server.cut_next[f"/models/{NAME}"] = 123
    server.requests.clear()
    with pytest.raises(DownloadError):  # cut every time: the partial file and its validator stay
        import network_expansion.download as download
        attempts, download.ATTEMPTS = download.ATTEMPTS, 1
        try:
            fetch(url, folder=tmp_path, progress=False)
        finally:
            download.ATTEMPTS = attempts
    part = cache_path(url, tmp_path).with_name(f"{NAME}.part")
    assert part.read_bytes() == BODY[:123]
    assert fetch(url, folder=tmp_path, progress=False).read_bytes() == BODY
    assert server.requests[-1] == (f"/models/{NAME}", "bytes=123-")
    part.write_bytes(BODY[:77])  # left by something else, nothing recorded about it
    part.with_name(f"{NAME}.part.json").unlink(missing_ok=True)
    cache_path(url, tmp_path).unlink()
    assert fetch(url, folder=tmp_path, progress=False).read_bytes() == BODY
    assert server.requests[-1] == (f"/models/{NAME}", None)


def test_a_digest_mismatch_raises_and_leaves_no_file(server, tmp_path):
    wrong = "0" * 64
    with pytest.raises(DownloadError, match=f"sha256 is {DIGEST}, not the expected {wrong}; the download was deleted"):
        fetch(server.url(f"/models/{NAME}"), folder=tmp_path, sha256=wrong, progress=False)
    left = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert [p.name for p in left] == [f"{NAME}.lock"] and left[0].stat().st_size == 0  # the empty lock only


def test_the_digest_variable_is_checked(server, tmp_path, monkeypatch):
    monkeypatch.setenv("NETWORK_EXPANSION_SHA256", DIGEST.upper())
    assert fetch(server.url(f"/models/{NAME}"), folder=tmp_path, progress=False).read_bytes() == BODY
    monkeypatch.setenv("NETWORK_EXPANSION_SHA256", "1" * 64)
    with pytest.raises(DownloadError, match="not the expected 1111"):
        fetch(server.url(f"/models/{NAME}"), folder=tmp_path / "other", progress=False)


def test_a_corrupted_cache_file_is_detected_moved_aside_and_fetched_again(server, tmp_path, caplog):
    path = fetch(server.url(f"/models/{NAME}"), folder=tmp_path, progress=False)
    damaged = bytearray(path.read_bytes())
    damaged[1000] ^= 0xFF
    path.write_bytes(bytes(damaged))
    assert fetch(server.url(f"/models/{NAME}"), folder=tmp_path, progress=False).read_bytes() == BODY
    assert len(server.requests) == 2
    assert "fetching it again" in caplog.text and "moved aside" in caplog.text
    aside = list(path.parent.glob(f"{NAME}.sha256-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == bytes(damaged)  # kept, not deleted


def test_a_file_placed_by_hand_is_used_without_a_server(tmp_path, monkeypatch):
    monkeypatch.setenv("NETWORK_EXPANSION_CACHE", str(tmp_path))
    url = f"http://127.0.0.1:{_closed_port()}/models/{NAME}"
    placed = cache_path(url)
    placed.parent.mkdir(parents=True)
    placed.write_bytes(BODY)
    assert fetch(url, progress=False) == placed
    assert placed.with_name(f"{NAME}.sha256").read_text().strip() == DIGEST


def test_404_names_the_url_the_cache_path_and_the_variable(server, tmp_path):
    url = server.url("/models/missing.ckpt")
    with pytest.raises(DownloadError) as caught:
        fetch(url, folder=tmp_path, progress=False)
    message = str(caught.value)
    assert f"cannot download {url} (HTTP 404 Not Found)" in message
    assert f"place it at {cache_path(url, tmp_path)}" in message and "$NETWORK_EXPANSION_CACHE" in message
    assert not any(tmp_path.rglob("*.ckpt"))


def test_connection_refused_gives_the_offline_advice(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/{NAME}"
    with pytest.raises(DownloadError, match=r"cannot download .*Connection refused.*\n.*Without internet"):
        fetch(url, folder=tmp_path, progress=False)


@pytest.mark.parametrize("door,advice", [
    ("create_network", "create_network('NetworkExpansion', pretrained='/path/to/{name}')"),
    ("Classifier", "Classifier(weights='/path/to/{name}')"),
    ("command", "--weights /path/to/{name}"),
])
def test_offline_advice_fits_the_door_the_user_came_through(tmp_path, capsys, monkeypatch, door, advice):
    import network_expansion as ne
    from network_expansion.cli import main

    monkeypatch.setenv("NETWORK_EXPANSION_CACHE", str(tmp_path))
    url = f"http://127.0.0.1:{_closed_port()}/{NAME}"
    if door == "command":
        (tmp_path / "cat.jpg").write_bytes(b"not read: the weights fail first")
        assert main(["predict", str(tmp_path / "cat.jpg"), "--weights", url]) == 2
        message = capsys.readouterr().err
        assert message.startswith("network-expansion: error: cannot download") and "Traceback" not in message
    else:
        with pytest.raises(DownloadError) as caught:
            ne.create_network("NetworkExpansion", pretrained=url) if door == "create_network" \
                else ne.Classifier(weights=url)
        message = str(caught.value)
        assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no chained traceback
    assert message.rstrip().endswith(advice.format(name=NAME)), message


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_fetching_one_file_download_it_once(server, tmp_path):
    """Two notebooks (or msrun workers on one host) at once: the second waits on the lock
    beside the cache file, then uses the file the first completed."""
    import subprocess
    import sys
    from pathlib import Path

    server.pause = 1.0
    code = ("import sys; from network_expansion.download import fetch; "
            "print(fetch(sys.argv[1], folder=sys.argv[2], progress=False))")
    url = server.url(f"/models/{NAME}")
    children = [subprocess.Popen([sys.executable, "-c", code, url, str(tmp_path)], stdout=subprocess.PIPE, text=True)
                for _ in range(2)]
    paths = [child.communicate(timeout=120)[0].strip() for child in children]
    assert [child.returncode for child in children] == [0, 0]
    assert paths == [str(cache_path(url, tmp_path))] * 2 and cache_path(url, tmp_path).read_bytes() == BODY
    assert server.requests == [(f"/models/{NAME}", None)]  # one download, not two, not a resumed one
    assert not list(Path(tmp_path).rglob("*.part"))
