"""Download a file into the cache: progress bar, resume, digest check, atomic rename.

Layout of the cache folder (`cache_dir()`):

    <file name>            a complete, verified download
    <file name>.sha256     its digest, recorded when it was downloaded (checked on every use)
    <file name>.part       an interrupted download, resumed by the next attempt
    <file name>.lock       held while a process downloads it (others wait, then reuse the file)

A file only ever appears under its final name once it is complete and its digest matches,
so a crash or Ctrl-C never leaves a half-written checkpoint where a loader would trust it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import http.client
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .atomic import write_text
from .errors import DownloadError, NetworkExpansionError

logger = logging.getLogger(__name__)

CACHE_VARIABLE = "NETWORK_EXPANSION_CACHE"
SHA256_VARIABLE = "NETWORK_EXPANSION_SHA256"
CHUNK = 1 << 20
ATTEMPTS = 4
TIMEOUT_SECONDS = 60


def cache_dir(folder=None) -> Path:
    """`folder`, else $NETWORK_EXPANSION_CACHE, else $XDG_CACHE_HOME (or ~/.cache)/network_expansion."""
    if folder is not None:
        return Path(folder).expanduser()
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "network_expansion"


def sha256_of(path, chunk: int = CHUNK) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, *, folder=None, sha256: str | None = None, progress: bool = True, check=None) -> Path:
    """The cached copy of `url`, downloading it first if needed.

    `sha256` (else $NETWORK_EXPANSION_SHA256) is the digest the file must have. Whatever
    it is, the digest of each download is recorded beside the file, and a cached file
    that no longer matches its record (or `sha256`) is moved aside, never deleted (it may
    be a copy placed by hand that cannot be fetched again), and fetched again. `check(path)`
    (for weights: that the file reads as weights) must pass before a download is renamed
    into place; what fails it is not kept.

    Raises:
        DownloadError: the URL names no file, the server cannot be reached, answers with an
            error or with something that fails `check`, or the file does not match `sha256`.
            The message names the URL, the path where the file can be placed by hand, and
            the variables to set.
    """
    expected = (sha256 or os.environ.get(SHA256_VARIABLE) or "").strip().lower() or None
    folder = cache_dir(folder)
    target = folder / file_name_of(url)
    record = target.with_name(target.name + ".sha256")
    moved = None
    try:
        if target.is_file():
            good, moved = _cached_copy_is_good(target, record, expected)
            if good:
                return target
        folder.mkdir(parents=True, exist_ok=True)
        # Two processes (two notebooks, msrun workers on one host) fetch one file: the second
        # waits for the first, then finds the file complete.
        with _locked(target.with_name(target.name + ".lock")):
            if target.is_file():
                good, moved = _cached_copy_is_good(target, record, expected)
                if good:
                    return target
            try:
                return _download_verified(url, target, record, expected, progress, check)
            except DownloadError as error:
                raise error.kept_aside(moved) from None
    except DownloadError:
        raise
    except OSError as error:  # the cache folder is a file, or cannot be written
        raise DownloadError(f"cannot use the cache folder {folder} ({error.strerror or error}); set "
                            f"${CACHE_VARIABLE} to a folder you can write to") from None


def file_name_of(url: str) -> str:
    """The file name a URL ends in; `DownloadError` if it names no file (`.../`, `/..`)."""
    path = urllib.parse.urlsplit(url).path
    name = path.rsplit("/", 1)[-1]
    if not name or name in (".", "..") or path.endswith("/"):
        raise DownloadError(f"{url} names no file (its path ends in {path[-3:] or '/'!r}); give the URL "
                            f"of the file itself, e.g. https://host/path/weights.ckpt")
    return urllib.parse.unquote(name)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on `path` (created if need be) for the block; a no-op without fcntl."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _download_verified(url: str, target: Path, record: Path, expected, progress: bool, check) -> Path:
    part = target.with_name(target.name + ".part")
    for attempt in range(1, ATTEMPTS + 1):
        resumed = part.is_file() and part.stat().st_size > 0
        try:
            _download(url, part, progress)
        except (urllib.error.HTTPError, urllib.error.URLError) as error:
            if isinstance(error, urllib.error.HTTPError) and error.code == 416:
                part.unlink(missing_ok=True)  # our partial file is longer than the file: restart
                continue
            raise _unreachable(url, target, error) from None
        except (OSError, http.client.HTTPException, _Incomplete) as error:  # cut mid-way: resume
            if attempt == ATTEMPTS:
                raise _unreachable(url, target, error) from None
            time.sleep(0.2 * attempt)
            continue
        problem = _check(check, url, part)
        if problem is None:
            break
        part.unlink()  # garbage: what the server sent, or a stale partial file it was appended to
        if resumed and attempt < ATTEMPTS:
            continue  # the old .part may have been the garbage: once more from the start
        raise DownloadError(f"{url} sent something that is not what was asked for; nothing was kept. Check the "
                            f"link (a login or error page?), or download the file by hand. What it sent: {problem}")
    else:
        raise DownloadError(f"{url}: the download failed {ATTEMPTS} times; try again later")
    found = sha256_of(part)
    if expected and found != expected:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{url} downloaded, but its sha256 is {found}, not the expected {expected}; the download "
            f"was deleted. Check the digest you passed (sha256= or ${SHA256_VARIABLE}) or the link.")
    write_text(record, found + "\n")
    os.replace(part, target)
    return target


def _check(check, url: str, path: Path):
    """None if `check(path)` passes, else what it said of the content (with the file's first
    bytes). A check that could not read the file at all (an error whose `readable` is False:
    no memory, an I/O error) says nothing about the content: the download is kept where it
    is, unused, and `DownloadError` says why."""
    if check is None:
        return None
    try:
        check(path)
    except NetworkExpansionError as error:  # the checker raises what the reader raises
        if not getattr(error, "readable", True):
            raise DownloadError(f"{url} was downloaded to {path}, but it cannot be checked here, so it was "
                                f"kept there unused (run again to check it and use it): {error}") from None
        with open(path, "rb") as f:
            head = f.read(40)
        return f"{error} (it begins {head!r})"
    return None


def _cached_copy_is_good(target: Path, record: Path, expected):
    """(the cached file can be used, where it was moved aside if it could not)."""
    recorded = record.read_text().strip() if record.is_file() else None
    if recorded is None and expected is None:
        # Placed by hand (the offline route): trust it, and record it from now on.
        write_text(record, sha256_of(target) + "\n")
        return True, None
    found = sha256_of(target)
    if found == (expected or recorded):
        if recorded != found:
            write_text(record, found + "\n")
        return True, None
    aside = move_aside(target, f"sha256-{found[:16]}")
    record.unlink(missing_ok=True)
    logger.warning("cached %s has sha256 %s, expected %s (%s): moved aside to %s, fetching it again", target,
                   found, expected or recorded, "the digest you passed" if expected else "its digest when it was "
                   "downloaded", aside)
    return False, aside


def move_aside(path: Path, tag: str) -> Path:
    """Rename `path` to `<path>.<tag>` (numbered if taken): kept, but no longer used."""
    aside, number = path.with_name(f"{path.name}.{tag}"), 1
    while aside.exists():
        number += 1
        aside = path.with_name(f"{path.name}.{tag}.{number}")
    os.replace(path, aside)
    return aside


class _Incomplete(Exception):
    """The server closed the connection before sending the whole file, or answered a
    resumed request with the wrong part of it."""


def _download(url: str, part: Path, progress: bool) -> None:
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "network-expansion"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
        append = False
        if have and response.status == 206:
            start = _range_start(response.headers.get("Content-Range"))
            if start == have:
                append = True
            elif start != 0:  # not where we stopped, not the whole file: cannot be joined
                part.unlink(missing_ok=True)
                raise _Incomplete(f"asked for bytes {have}-, got Content-Range "
                                  f"{response.headers.get('Content-Range')!r}")
        if not append:
            have = 0  # the server sent the whole file (ignored the range, or answered from 0): start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if append else "wb") as out, _progress_bar(total, have, part.name, progress) as bar:
            while block := response.read(CHUNK):
                out.write(block)
                bar.update(len(block))
                have += len(block)
    if total is not None and have < total:
        raise _Incomplete(f"got {have} of {total} bytes")


def _range_start(content_range):
    """The first byte of `bytes START-END/TOTAL`, or None if it cannot be read."""
    try:
        return int(content_range.split()[1].split("-")[0])
    except (AttributeError, IndexError, ValueError):
        return None


def _progress_bar(total, initial, name, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name.removesuffix(".part"), disable=not enabled, file=sys.stderr)


def _unreachable(url: str, target: Path, error) -> DownloadError:
    reason = f"HTTP {error.code} {error.reason}" if isinstance(error, urllib.error.HTTPError) else \
        str(getattr(error, "reason", error))
    return DownloadError.offline(f"cannot download {url} ({reason}).", target,
                                 "create_network('NetworkExpansion', pretrained='/path/to/{name}')")


