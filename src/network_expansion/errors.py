"""The exceptions this package raises.

Every error a user can cause (a wrong name, a malformed card, a checkpoint that does
not fit) has its own class here, so that callers can catch exactly what they expect.
They all derive from `NetworkExpansionError`; the ones about a bad value also derive
from `ValueError`, so code written against the plain built-in keeps working.
"""


def printable(text) -> str:
    """`text` with its control characters escaped (`\\x1b`, `\\n`, ...): a file, class or URL
    name from outside, printed on a terminal, can forge no line and send no escape sequence."""
    return "".join(character if character.isprintable() or character == " " else
                   character.encode("unicode_escape").decode("ascii") for character in str(text))


class NetworkExpansionError(Exception):
    """Base class of every error raised on purpose by `network_expansion`."""


class UnknownModelError(NetworkExpansionError, ValueError):
    """A model name that neither the card nor the aliases know."""


class ConfigError(NetworkExpansionError, ValueError):
    """A model configuration (or a keyword overriding one) that cannot be built."""


class CardError(NetworkExpansionError, ValueError):
    """A hub card that cannot be read or does not follow the hub's rules.

    `problems` holds every problem found, not just the first.
    """

    def __init__(self, path, problems):
        self.path = printable(path)
        self.problems = [printable(problem) for problem in problems]
        listing = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"hub card {self.path} has {len(self.problems)} problem(s):\n{listing}")


class DownloadError(NetworkExpansionError, OSError):
    """A file that cannot be downloaded, or whose download does not match its digest.

    When the file could be placed by hand instead, `target` is where, and the message ends
    with how to pass a local file; `advise` rewrites that ending for the door the user came
    through (`--weights PATH` on the command line, `weights=` for a `Classifier`, ...).
    """

    target = None   # where the cache expects the file
    reason = ""     # the first line: what went wrong

    @classmethod
    def offline(cls, reason: str, target, how: str = "pretrained='/path/to/{name}'") -> "DownloadError":
        """`reason`, then where to place the file and how to pass one (`{name}`: its file name)."""
        from pathlib import Path

        target = Path(target)
        error = cls(f"{reason}\n"
                    f"  Without internet: download it elsewhere and place it at {target}\n"
                    f"  (or set $NETWORK_EXPANSION_CACHE to the folder that holds it), or pass the file's "
                    f"path: {how.format(name=target.name)}")
        error.target, error.reason = target, reason
        return error

    def advise(self, how: str) -> "DownloadError":
        """This error, ending with `how` a local file is passed (`{name}`: the file name)."""
        return self if self.target is None else DownloadError.offline(self.reason, self.target, how)

    def kept_aside(self, path) -> "DownloadError":
        """This error, also saying where the cached file that failed its digest was moved."""
        if path is None:
            return self
        reason = (f"{self.reason or str(self).splitlines()[0]} The cached file that did not match its digest "
                  f"was kept at {path}: if it is the right file, correct the digest and move it back.")
        if self.target is None:
            return DownloadError(reason)
        return DownloadError.offline(reason, self.target)


class CheckpointError(NetworkExpansionError, ValueError):
    """A checkpoint that cannot be read, or does not fit the network.

    `problems` holds every problem found (missing, unexpected, misshaped, non-finite
    parameters), not just the first. `readable` is False when the file could not be read
    here at all (no permission, an I/O error, no memory): nothing is known about its content,
    so it may well be good.
    """

    def __init__(self, source, problems, advice: str = "", *, readable: bool = True):
        self.source = printable(source)
        self.problems = [printable(problem) for problem in problems]
        self.readable = readable
        listing = "\n".join(f"  - {problem}" for problem in self.problems)
        advice = f"\n{advice}" if advice else ""
        super().__init__(f"checkpoint {self.source}: {len(self.problems)} problem(s):\n"
                         f"{listing}{advice}")


class OutputError(NetworkExpansionError, OSError):
    """A file or folder that cannot be written: a full disk, no permission, a path under a
    regular file. Nothing half-written is left, and the file that was there is untouched."""


class ImageError(NetworkExpansionError, ValueError):
    """An input that is not a usable image; the message names the file and the problem."""


class PrecisionError(NetworkExpansionError, ValueError):
    """A numeric precision the device cannot run."""


class DataError(NetworkExpansionError, ValueError):
    """A dataset that cannot be used as asked: too few images for a batch, class folders
    that cannot be matched to the network's outputs, a malformed label map."""


class TrainingDiverged(NetworkExpansionError, FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


class JobLost(NetworkExpansionError, RuntimeError):
    """A process of a data-parallel job stopped answering (killed, out of memory, its node
    lost): the job ends instead of waiting in a collective; resume from the last checkpoint."""


class ExportError(NetworkExpansionError, RuntimeError):
    """MindSpore could not export the network in the asked format."""
