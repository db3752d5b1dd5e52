"""Files written whole or not at all.

Every file the package writes (weights, training checkpoints, per-class CSVs, exported
graphs, download records) goes through `atomic_write`: it is written under a temporary
name beside its destination and renamed into place only when complete, so a crash, a
signal or a full disk never leaves half a file where a reader would trust it. What a
failed write leaves behind is removed, including the `<name>.tmp` that MindSpore's
`save_checkpoint` makes of its own, and the leftovers of a process that was killed
(SIGKILL leaves no chance to clean up) are removed by the next write to the same place.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from .errors import OutputError

MARK = ".partial"


@contextlib.contextmanager
def atomic_write(path, *, advice: str = ""):
    """Yield a temporary path beside `path`; rename it to `path` when the block succeeds.

    The temporary name keeps `path`'s suffix (writers that pick a format by suffix still
    work). Raises `OutputError` naming `path` when the folder cannot be made or the file
    cannot be written (full disk, no permission, a file where a folder should be); nothing
    is left half-written and an existing `path` is untouched.
    """
    path = Path(path)
    prefix = f".{path.stem}."
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_leftovers_of_dead_writers(path.parent, prefix)
    except OSError as error:
        raise _cannot_write(path, error, advice) from None
    temporary = path.with_name(f"{prefix}{os.getpid()}{MARK}{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    except OSError as error:
        raise _cannot_write(path, error, advice) from None
    finally:
        for leftover in path.parent.glob(f"{prefix}{os.getpid()}{MARK}*"):
            leftover.unlink(missing_ok=True)


def write_text(path, text: str, *, advice: str = "") -> Path:
    """`text` into `path`, whole or not at all."""
    with atomic_write(path, advice=advice) as temporary:
        temporary.write_text(text)
    return Path(path)


def check_writable_folder(folder, *, what: str = "") -> Path:
    """Make `folder` if need be and prove a file can be created in it; `OutputError` if not."""
    import tempfile

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise _cannot_write(folder, error, "give a folder you can write to", what=what) from None
    return folder


def _remove_leftovers_of_dead_writers(folder: Path, prefix: str) -> None:
    for leftover in folder.glob(f"{prefix}*{MARK}*"):
        pid = leftover.name[len(prefix):].split(MARK, 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


ADVICE_BY_ERRNO = {
    errno.ENOSPC: "free some space, or write elsewhere",
    errno.EFBIG: "the file is larger than this process may write (ulimit -f): raise the limit, or write elsewhere",
    errno.EACCES: "you may not write there: choose another place",
    errno.EPERM: "you may not write there: choose another place",
    errno.EROFS: "the file system is read-only: choose another place",
    errno.ENOTDIR: "a file stands where a folder should be: choose another place",
    errno.EEXIST: "a file stands where a folder should be: choose another place",
    errno.EISDIR: "a folder stands there: give a file name",
}


def _cannot_write(path: Path, error: OSError, advice: str, what: str = "") -> OutputError:
    reason = error.strerror or str(error)
    hint = ADVICE_BY_ERRNO.get(error.errno, "choose another place")
    return OutputError(f"{what + ' ' if what else ''}{path}: cannot write there ({reason}); {hint}"
                       + (f". {advice}" if advice else ""))
