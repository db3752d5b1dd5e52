"""Tuning a process for MindSpore's CPU kernels: one explicit call, `tune_cpu()`.

What it changes is the whole process's, so nothing in the package does it unless asked: the
command line and the benchmarks ask (they are the whole process); a notebook or a service
asks by calling `network_expansion.tune_cpu()` first, before MindSpore is imported. Each
part was measured on this 2-core CPU (docs/log/performance.md):

* OpenMP's idle threads sleep (`OMP_WAIT_POLICY=PASSIVE`): spinning, they took the cores
  from the MatMuls that follow. OpenMP reads it once, when MindSpore is imported;
* MindSpore's ops and graphs run on the calling thread, without the queue thread of its
  asynchronous pipeline (on the CPU both spun and halved a split MatMul's speed:
  benchmarks/investigations/queue_spin.py);
* kernel fusion (MindSpore's AKG, shipped in its wheel, off by default; `MS_DEV_GRAPH_KERNEL_FLAGS`,
  read at every compile): a ViT-B train step 14% faster, at a longer compile; for networks
  as small as the demo's it costs compile time and saves nothing, so the command line asks
  for it from ViT-B's sizes on (`cpu_forms.fusion_pays`). Its kernels are kept in the
  package's cache and AKG reads its tuned tilings from its own folder; AKG writes a log
  (`dsa_transfrom.log`) into the working folder, which the command line removes after it;
* each half of a kernel on its own core: after the first fused graph ran, MindSpore's
  kernel pool and OpenMP's team are bound one thread per core (the scheduler sometimes put
  a kernel's two halves on one core: about 3% of a ViT-B step). Not in `msrun` jobs (their
  processes share the cores) nor for two processes computing at once on the same cores
  (`bind_threads=False`: bound they ran 3 to 5% slower).

    >>> import network_expansion as ne
    >>> tuning = ne.tune_cpu()          # first thing, before importing mindspore
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

OPENMP_WAIT = "OMP_WAIT_POLICY"  # read by OpenMP once, when MindSpore loads it
FUSION_FLAGS = "MS_DEV_GRAPH_KERNEL_FLAGS"  # read by MindSpore at every compile
KERNEL_CACHE = "MS_COMPILER_CACHE_PATH"  # where AKG's compiled kernels go (else the working folder)
# the folder AKG reads its tuned tilings from (else the working folder: it printed "Please set
# tiling repo path ..." to stdout for each kernel and compiled without them)
AKG_TRUSTED = "AKG_WHITE_LIST_PATH"
HOST_BLOCKING = "MS_DEV_HOST_BLOCKING_RUN"  # the queue's switch in MindSpore versions without the call


@dataclass
class Tuning:
    """What `tune_cpu` changed in this process (and why not, where it could not)."""

    environment: dict = field(default_factory=dict)  # variables it set
    calling_thread: bool = False                     # MindSpore's queue thread switched off
    kernel_fusion: bool = False
    bind_threads: bool = False                       # MindSpore's kernel threads bound after the first fused graph
    notes: list = field(default_factory=list)        # why a part was left out


_TUNING = Tuning()


def tune_cpu(*, kernel_fusion: bool = True, bind_threads: bool = True) -> Tuning:
    """Tune this process for MindSpore's CPU kernels (see the module's docstring); call it
    first, before MindSpore is imported. Returns what it changed; calling it again changes
    only what is asked anew (e.g. `kernel_fusion=True` once the command knows its network).
    On GPU and Ascend it changes nothing (MindSpore's defaults are theirs)."""
    if OPENMP_WAIT not in os.environ and "mindspore" not in sys.modules:
        _set(OPENMP_WAIT, "PASSIVE")
    import mindspore as ms

    if ms.get_context("device_target") != "CPU":
        _note("not the CPU: nothing to tune")
        return _TUNING
    _run_on_calling_thread()
    if kernel_fusion and not _TUNING.kernel_fusion:
        reason = _why_not_fused()
        if reason:
            _note(reason)
        else:
            kernel_cache().mkdir(parents=True, exist_ok=True)
            _set(FUSION_FLAGS, "--opt_level=1")
            _set(KERNEL_CACHE, str(kernel_cache()))
            _set(AKG_TRUSTED, str(_akg_folder()))
            _TUNING.kernel_fusion = True
    _TUNING.bind_threads = bool(bind_threads) and "MS_ROLE" not in os.environ  # msrun's processes share the cores
    return _TUNING


def current() -> Tuning:
    """What `tune_cpu` has changed in this process so far."""
    return _TUNING


def kernel_fusion_on() -> bool:
    """Whether graphs compiled now fuse kernels (`tune_cpu`, or the flags set by hand)."""
    return "opt_level" in os.environ.get(FUSION_FLAGS, "") and "opt_level=0" not in os.environ.get(FUSION_FLAGS, "")


@contextlib.contextmanager
def fusion_paused():
    """Compile without kernel fusion inside the block (the flags are read at every compile),
    and as before after it: an exported graph must hold MindSpore's plain operators (the ONNX
    converter has none for a fused graph's `Rsqrt`; a MindIR's server fuses at its own compile)."""
    flags = os.environ.pop(FUSION_FLAGS, None)
    try:
        yield
    finally:
        if flags is not None:
            os.environ[FUSION_FLAGS] = flags


def _set(name: str, value: str) -> None:
    if name in os.environ:  # what the user set stays
        return
    os.environ[name] = value
    _TUNING.environment[name] = value


def _note(reason: str) -> None:
    if reason not in _TUNING.notes:
        _TUNING.notes.append(reason)
        logger.warning("tune_cpu: %s", reason)


def _why_not_fused() -> str | None:
    """None, or why kernel fusion cannot run here or would not pay."""
    import mindspore as ms

    if importlib.util.find_spec("decorator") is None:
        return "kernel fusion left off: AKG needs the decorator module (pip install decorator)"
    if not (Path(ms.__file__).parent / "lib" / "plugin" / "cpu" / "libakg.so").exists():
        return "kernel fusion left off: this MindSpore has no AKG"
    if os.environ.get(OPENMP_WAIT, "").upper() != "PASSIVE":
        return (f"kernel fusion left off: OpenMP's idle threads spin ({OPENMP_WAIT} was not PASSIVE when "
                f"MindSpore loaded OpenMP), which makes fused graphs slower; call tune_cpu() before importing "
                f"mindspore, or set {OPENMP_WAIT}=PASSIVE yourself")
    try:
        kernel_cache().mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return (f"kernel fusion left off: cannot keep the fused kernels in {kernel_cache()} "
                f"({error.strerror or error}); set $NETWORK_EXPANSION_CACHE to a folder you can write")
    return None


@functools.lru_cache(maxsize=None)
def kernel_cache() -> Path:
    """Where the fused kernels are kept between runs (AKG compiles each new one in about a
    second): `<cache_dir()>/kernels/mindspore-<version>`, fixed for the process at its first
    use (MindSpore keeps loading kernels from the folder it first used)."""
    import mindspore as ms

    from .download import cache_dir

    return cache_dir() / "kernels" / f"mindspore-{ms.__version__}"


def _akg_folder() -> Path:
    """The folder of AKG's own configuration (its tuned tilings), inside MindSpore's wheel."""
    import mindspore as ms

    return Path(ms.__file__).resolve().parent / "_akg" / "akg" / "config"


def _run_on_calling_thread() -> None:
    """MindSpore's ops and graphs on the calling thread, without its queue thread (process-wide).
    MindSpore versions without the switch get `MS_DEV_HOST_BLOCKING_RUN=1`, which counts only
    before MindSpore's runtime starts."""
    if _TUNING.calling_thread:
        return
    try:
        try:
            from mindspore.graph.api import _pynative_executor
        except ImportError:  # MindSpore before 2.9
            from mindspore.common.api import _pynative_executor
        _pynative_executor.disable_frontend_and_bprop_pipeline()
    except (ImportError, AttributeError):
        _set(HOST_BLOCKING, "1")
    _TUNING.calling_thread = True


# -- each half of a kernel on its own core -------------------------------------------------

def bind_after_first_fused_graph() -> None:
    """Called by the package's graphs after each one's first call: binds MindSpore's kernel
    threads once, when `tune_cpu` asked for it and graphs fuse (OpenMP starts its team at
    the first fused kernel that runs)."""
    if _TUNING.bind_threads and kernel_fusion_on():
        _TUNING.bind_threads = False  # once
        bind_kernel_threads()


def bind_kernel_threads() -> dict | None:
    """Give each thread that runs a part of a CPU kernel a core of its own; returns the
    binding ({thread id: core}), or None where nothing was bound.

    MindSpore 2.10 runs a graph's kernels on its pool's first thread (`ActorThread_0`),
    which splits a MatMul with the pool's other threads (`KernelThread_k`) and an AKG
    kernel with its OpenMP team (threads it starts, named after it: `ActorThread_0` again).
    On two cores that is three busy threads; the pool's threads take one core each in
    order, and OpenMP's k-th thread the k-th core, as its master (the pool's first thread)
    holds the first. Binds nothing where the layout is not that one or on fewer than two cores."""
    if not hasattr(os, "sched_setaffinity") or not os.path.isdir("/proc/self/task"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    plan = binding_plan(_threads(), cores)
    if plan is None:
        return None
    for thread, core in plan.items():
        try:
            os.sched_setaffinity(thread, {core})
        except OSError:  # the thread ended meanwhile
            pass
    return plan


def binding_plan(threads: list, cores: list) -> dict | None:
    """`bind_kernel_threads`' rule: {thread id: core} for `threads` ([(thread id, name)],
    in the order they started) on `cores`, or None for a layout it does not know."""
    if len(cores) < 2:
        return None
    actors = [thread for thread, name in threads if name.startswith("ActorThread_")]
    kernel_threads = [thread for thread, name in threads if name.startswith("KernelThread_")]
    if not actors or any(name.startswith("ActorThread_") and name != "ActorThread_0" for _, name in threads):
        return None
    pool, team = [actors[0]] + kernel_threads, actors[1:]
    if len(pool) > len(cores) or len(team) >= len(cores):
        return None
    plan = {thread: cores[k] for k, thread in enumerate(pool)}
    plan.update({thread: cores[k + 1] for k, thread in enumerate(team)})
    return plan


def _threads() -> list:
    """This process's threads, [(thread id, name)], in the order they started."""
    threads = []
    for entry in sorted(os.listdir("/proc/self/task"), key=int):
        try:
            with open(f"/proc/self/task/{entry}/comm") as comm:
                threads.append((int(entry), comm.read().strip()))
        except OSError:  # ended meanwhile
            pass
    return threads
