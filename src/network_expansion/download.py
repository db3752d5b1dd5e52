"""Download a file into the cache: safe by construction, bounded in time and size, verified.

Layout of the cache folder (`cache_dir()`), one folder per URL:

    downloads/<digest of the URL>/<file name>          a complete, verified download
    downloads/<digest of the URL>/<file name>.sha256   its digest, recorded when it was downloaded (checked on every use)
    downloads/<digest of the URL>/<file name>.part     an interrupted download, resumed by the next attempt
    downloads/<digest of the URL>/<file name>.part.json  what the server said that file was (ETag, Last-Modified)
    downloads/<digest of the URL>/<file name>.lock     held while a process downloads it (others wait, then reuse it)

The folder is named by a digest of the whole URL, so two URLs never share a file; the file
name is the URL's last segment, decoded and reduced to letters, digits and `._-`, so no URL
can name a path outside its folder. A file only ever appears under its final name once it
is complete and its digest matches, so a crash or Ctrl-C never leaves half a checkpoint
where a loader would trust it. An interrupted download resumes only with a validator (the
server's ETag or Last-Modified, sent back as `If-Range`): a file that changed on the server
starts over, never spliced. Every request has a timeout, a transfer that stays below a
minimum rate for a while is ended (a server that drips a byte a second never trips a
timeout), and a body larger than its Content-Length, than `max_bytes` or than the disk's
free space is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .atomic import write_text
from .errors import ConfigError, DownloadError, NetworkExpansionError, printable

logger = logging.getLogger(__name__)

CACHE_VARIABLE = "NETWORK_EXPANSION_CACHE"
SHA256_VARIABLE = "NETWORK_EXPANSION_SHA256"
TIMEOUT_VARIABLE = "NETWORK_EXPANSION_TIMEOUT"    # seconds a connection or a read may wait
MIN_RATE_VARIABLE = "NETWORK_EXPANSION_MIN_RATE"  # bytes per second a transfer must keep up
TIMEOUT_SECONDS = 30.0
MIN_RATE = 1024           # bytes per second, averaged over RATE_WINDOW seconds (curl's speed-limit / speed-time)
RATE_WINDOW = 60.0
MAX_BYTES = 16 << 30      # what any one download may be, unless the caller knows better
CHUNK = 1 << 16
ATTEMPTS = 4


def cache_dir(folder=None) -> Path:
    """`folder`, else $NETWORK_EXPANSION_CACHE, else $XDG_CACHE_HOME (or ~/.cache)/network_expansion."""
    given = folder if folder is not None else os.environ.get(CACHE_VARIABLE)
    try:
        if given:
            return Path(given).expanduser()
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(base).expanduser() / "network_expansion"
    except RuntimeError as error:  # "~someone" of no such user, or no home at all
        raise ConfigError(f"cache folder {given or '~/.cache'}: {error}; set ${CACHE_VARIABLE} to a folder "
                          f"you can write to") from None


def cache_path(url: str, folder=None) -> Path:
    """Where `url`'s download is kept (and where a copy placed by hand is used from)."""
    digest = hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return cache_dir(folder) / "downloads" / digest / file_name_of(url)


def file_name_of(url: str) -> str:
    """The URL's last path segment, decoded and reduced to a safe file name (letters,
    digits, `._-`); `DownloadError` if it names no file (`.../`, `/..`)."""
    path = urllib.parse.urlsplit(url).path
    segment = path.rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", urllib.parse.unquote(segment)).lstrip(".")[-120:]
    if not name.strip("_") or path.endswith("/"):
        raise DownloadError(f"{_shown(url)} names no file (its path ends in {path[-3:] or '/'!r}); give the URL of "
                            f"the file itself, e.g. https://host/path/weights.ckpt")
    return name


def sha256_of(path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, *, folder=None, sha256: str | None = None, progress: bool = True, check=None,
          timeout: float | None = None, min_rate: float | None = None, max_bytes: int | None = None) -> Path:
    """The cached copy of `url`, downloading it first if needed.

    `sha256` (else $NETWORK_EXPANSION_SHA256) is the digest the file must have (checked
    before any request for its form). Whatever it is, the digest of each download is
    recorded beside the file, and a cached file that no longer matches its record (or
    `sha256`) is moved aside, never deleted, and fetched again. `check(path)` (for weights:
    that the file reads as weights) must pass before a download is renamed into place;
    what fails it is not kept. `timeout` (else $NETWORK_EXPANSION_TIMEOUT, else 30 s) bounds
    each connection and read; `min_rate` (else $NETWORK_EXPANSION_MIN_RATE, else 1024)
    bytes per second, over a minute, is the slowest transfer kept going; `max_bytes` the
    largest file accepted (else 16 GiB).

    Raises:
        DownloadError: the URL names no file, cannot be reached, answers with an error, too
            slowly, with too much or something that fails `check`, or the file does not match
            `sha256`. The message names the URL, where a copy can be placed by hand, and the
            variables to set.
        ConfigError: a `sha256` that is not 64 hexadecimal digits, a bad timeout or rate.
    """
    expected = _expected_digest(sha256)
    limits = _Limits.of(timeout, min_rate, max_bytes)
    url = _ascii_url(url)
    target = cache_path(url, folder)
    record = target.with_name(target.name + ".sha256")
    moved = None
    try:
        if target.is_file():
            good, moved = _cached_copy_is_good(target, record, expected)
            if good:
                return target
        target.parent.mkdir(parents=True, exist_ok=True)
        # Two processes (two notebooks, msrun workers on one host) fetch one file: the second
        # waits for the first, then finds the file complete.
        with _locked(target.with_name(target.name + ".lock")):
            if target.is_file():
                good, moved = _cached_copy_is_good(target, record, expected)
                if good:
                    return target
            try:
                return _download_verified(url, target, record, expected, progress, check, limits)
            except DownloadError as error:
                raise error.kept_aside(moved) from None
    except NetworkExpansionError:
        raise
    except OSError as error:  # the cache folder is a file, cannot be written, the disk is full
        raise DownloadError(f"cannot use the cache folder {target.parent} ({error.strerror or error}); set "
                            f"${CACHE_VARIABLE} to a folder you can write to") from None


def _expected_digest(sha256):
    expected = (sha256 or os.environ.get(SHA256_VARIABLE) or "").strip().lower() or None
    if expected is not None and not re.fullmatch(r"[0-9a-f]{64}", expected):
        where = "sha256=" if sha256 else f"${SHA256_VARIABLE}"
        raise ConfigError(f"{where} is {expected[:80]!r}: expected 64 hexadecimal digits (a SHA-256 digest)")
    return expected


class _Limits:
    def __init__(self, timeout: float, min_rate: float, max_bytes: int):
        self.timeout, self.min_rate, self.max_bytes = timeout, min_rate, max_bytes

    @classmethod
    def of(cls, timeout, min_rate, max_bytes) -> "_Limits":
        def number(value, variable, default, what):
            if value is None:
                value = os.environ.get(variable) or default
            try:
                value = float(value)
            except (TypeError, ValueError):
                value = -1.0
            if not value >= 0 or value != value or value == float("inf"):
                raise ConfigError(f"{what} is {value!r} (${variable} or the argument): expected a number >= 0")
            return value
        timeout = number(timeout, TIMEOUT_VARIABLE, TIMEOUT_SECONDS, "the download timeout") or TIMEOUT_SECONDS
        min_rate = number(min_rate, MIN_RATE_VARIABLE, MIN_RATE, "the download's minimum rate")
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1):
            raise ConfigError(f"max_bytes is {max_bytes!r}: expected a whole number >= 1")
        return cls(timeout, min_rate, max_bytes or MAX_BYTES)


def _ascii_url(url) -> str:
    """`url` as a request can carry it: an http(s) URL, its host in IDNA and the rest
    percent-encoded where it is not ASCII."""
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        raise DownloadError(f"{_shown(str(url))}: not an http(s) URL")
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname.encode("idna").decode("ascii") if parts.hostname else ""
        port = parts.port
    except (ValueError, UnicodeError) as error:
        raise DownloadError(f"{_shown(url)} is not a URL that can be fetched ({error})") from None
    if not host or parts.username:
        reason = "a user name in it" if host else "no host"
        raise DownloadError(f"{_shown(url)} is not a URL that can be fetched ({reason})")
    safe = "/%:@&=+$,;~!*'()"
    return urllib.parse.urlunsplit((parts.scheme, host + (f":{port}" if port else ""),
                                    urllib.parse.quote(parts.path, safe=safe),
                                    urllib.parse.quote(parts.query, safe=safe + "?"), ""))


def _shown(text: str) -> str:
    """A URL or name as it can be printed: control characters escaped, at most 300 long."""
    return printable(text[:300])


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


def _download_verified(url: str, target: Path, record: Path, expected, progress: bool, check, limits) -> Path:
    part = target.with_name(target.name + ".part")
    for attempt in range(1, ATTEMPTS + 1):
        resumed = part.is_file() and part.stat().st_size > 0
        try:
            _download(url, part, progress, limits)
        except _TooMuch as error:
            _forget(part)
            raise DownloadError(f"{_shown(url)} is too large to download here: {error}; nothing was kept") from None
        except (urllib.error.URLError, _TooSlow, TimeoutError) as error:  # refused, unknown, silent, dripping
            raise _unreachable(url, target, error) from None
        except (OSError, http.client.HTTPException, _Incomplete) as error:  # cut mid-way: resumed
            if attempt == ATTEMPTS:
                raise _unreachable(url, target, error) from None
            time.sleep(0.2 * attempt)
            continue
        problem = _check(check, url, part)
        if problem is None:
            break
        _forget(part)  # garbage: what the server sent, or a stale partial file it was appended to
        if resumed and attempt < ATTEMPTS:
            continue  # the old .part may have been the garbage: once more from the start
        raise DownloadError(f"{_shown(url)} sent something that is not what was asked for; nothing was kept. Check "
                            f"the link (a login or error page?), or download the file by hand. What it sent: {problem}")
    else:
        raise DownloadError(f"{_shown(url)}: the download failed {ATTEMPTS} times; try again later")
    found = sha256_of(part)
    if expected and found != expected:
        _forget(part)
        raise DownloadError(
            f"{_shown(url)} downloaded, but its sha256 is {found}, not the expected {expected}; the download "
            f"was deleted. Check the digest you passed (sha256= or ${SHA256_VARIABLE}) or the link.")
    write_text(record, found + "\n")
    os.replace(part, target)
    _meta(part).unlink(missing_ok=True)
    return target


def _forget(part: Path) -> None:
    part.unlink(missing_ok=True)
    _meta(part).unlink(missing_ok=True)


def _meta(part: Path) -> Path:
    return part.with_name(part.name + ".json")


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
            raise DownloadError(f"{_shown(url)} was downloaded to {path}, but it cannot be checked here, so it was "
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
    """The transfer ended before the whole file: cut, too slow, or the wrong part of it."""


class _TooMuch(_Incomplete):
    """The file is larger than allowed, or than the disk has room for: not retried."""


class _TooSlow(_Incomplete):
    """The transfer stayed below the minimum rate: not retried."""


def _download(url: str, part: Path, progress: bool, limits: _Limits) -> None:
    """Fetch `url` into `part`, resuming a partial file only where the server says, by a
    validator, that it is still the same file."""
    have = part.stat().st_size if part.is_file() else 0
    validator = _validator(part, url) if have else None
    if have and validator is None:  # nothing says what file the partial one was part of: start over
        _forget(part)
        have = 0
    request = urllib.request.Request(url, headers={"User-Agent": "network-expansion", "Accept-Encoding": "identity"})
    if have:
        request.add_header("Range", f"bytes={have}-")
        request.add_header("If-Range", validator)
    try:
        response = _OPENER.open(request, timeout=limits.timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have and _range_total(error.headers.get("Content-Range")) == have:
            return  # the partial file is the whole file: check it
        if error.code == 416:
            _forget(part)
            raise _Incomplete("the server cannot send the rest: starting over") from None
        raise
    with response:
        append = False
        if have and response.status == 206:
            start = _range_start(response.headers.get("Content-Range"))
            if start == have:
                append = True
            elif start != 0:  # not where we stopped, not the whole file: cannot be joined
                _forget(part)
                raise _Incomplete(f"asked for bytes {have}-, got Content-Range "
                                  f"{response.headers.get('Content-Range')!r}")
        if not append:
            have = 0  # the whole file (the server ignored the range, or the file changed): start over
            _remember(part, url, response.headers)
        length = response.length  # None where Content-Length is missing or malformed
        total = have + length if length is not None else None
        if total is not None and total > limits.max_bytes:
            raise _TooMuch(f"{total} bytes, more than the {limits.max_bytes} allowed")
        if length is not None:
            free = shutil.disk_usage(part.parent).free
            if length > free:
                raise _TooMuch(f"{length} bytes to come, {free} free on the disk of {part.parent}")
        with open(part, "ab" if append else "wb") as out, _progress_bar(total, have, part.name, progress) as bar:
            window_start, window_bytes = time.monotonic(), 0
            while block := response.read1(CHUNK):
                out.write(block)
                bar.update(len(block))
                have += len(block)
                window_bytes += len(block)
                if have > limits.max_bytes:
                    raise _TooMuch(f"more than the {limits.max_bytes} bytes allowed (no Content-Length said how many)")
                elapsed = time.monotonic() - window_start
                if elapsed >= RATE_WINDOW:
                    if window_bytes < limits.min_rate * elapsed:
                        raise _TooSlow(f"{window_bytes} bytes in {elapsed:.0f} s, below the minimum of "
                                          f"{limits.min_rate:.0f} bytes/s (${MIN_RATE_VARIABLE})")
                    window_start, window_bytes = time.monotonic(), 0
    if total is not None and have < total:
        raise _Incomplete(f"got {have} of {total} bytes")


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Follows a redirect to another http(s) URL only (urllib's own also follows ftp)."""

    def redirect_request(self, request, fp, code, message, headers, new_url):
        if urllib.parse.urlsplit(new_url).scheme.lower() not in ("http", "https"):
            raise urllib.error.HTTPError(new_url, code, f"a redirect to {_shown(new_url)}, not an http(s) URL",
                                         headers, fp)
        return super().redirect_request(request, fp, code, message, headers, new_url)


_OPENER = urllib.request.build_opener(_HttpRedirectsOnly)


def _remember(part: Path, url: str, headers) -> None:
    """Keep what the server said the file is (its validators), for a resume to send back."""
    fields = {"url": url, "etag": headers.get("ETag"), "last_modified": headers.get("Last-Modified")}
    if fields["etag"] and fields["etag"].startswith("W/"):
        fields["etag"] = None  # a weak validator may not be used for a range
    write_text(_meta(part), json.dumps(fields))


def _validator(part: Path, url: str):
    """The ETag (else Last-Modified) the server gave when `part` was started, or None."""
    try:
        fields = json.loads(_meta(part).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(fields, dict) or fields.get("url") != url:
        return None
    value = fields.get("etag") or fields.get("last_modified")
    return value if isinstance(value, str) and value.isascii() and "\n" not in value else None


def _range_start(content_range):
    """The first byte of `bytes START-END/TOTAL`, or None if it cannot be read."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", content_range or "")
    return int(match.group(1)) if match else None


def _range_total(content_range):
    """The TOTAL of `bytes */TOTAL` (a 416's answer), or None."""
    match = re.fullmatch(r"\s*bytes\s+\*/(\d+)\s*", content_range or "")
    return int(match.group(1)) if match else None


def _progress_bar(total, initial, name, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=_shown(name.removesuffix(".part")), disable=not enabled, file=sys.stderr)


def _unreachable(url: str, target: Path, error) -> DownloadError:
    if isinstance(error, urllib.error.HTTPError):
        reason = f"HTTP {error.code} {_shown(str(error.reason))}"
    else:
        reason = _shown(str(getattr(error, "reason", None) or error or type(error).__name__))
    return DownloadError.offline(f"cannot download {_shown(url)} ({reason}).", target,
                                 "create_network('NetworkExpansion', pretrained='/path/to/{name}')")
