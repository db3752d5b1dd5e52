"""Running a network as a compiled graph, around three of MindSpore's habits.

* on the CPU, MindSpore 2.10 hands each op and graph run to a queue thread that the
  caller waits on, both spinning: they take a share of the two cores that the kernels'
  thread pool splits each MatMul over, and a MatMul split in two waits for its slower
  half (a ViT-B forward + backward at depth 4: 3.0 s with the queue, 2.1 s without;
  docs/performance.md). `compiled` switches the queue off on the CPU;
* `ms.jit(network.construct)` is cached by the bound method: after the blocks change
  (network expansion) it would silently run the graph of the old depth, so
  `compiled_forward` compiles a fresh function each time it is called;
* a graph is specialised to its input shape: a short last batch would compile the whole
  network again, so `pad_batch` pads it to the usual size (keep the first outputs);
* a graph is specialised to the Parameters it reads: a model and its EMA, two networks of
  one shape, would need two compiled forwards; `SharedForward` compiles one for both;
* a graph input that the graph does not use makes every run slower, in proportion to the
  graph's kernels (`benchmarks/unused_input.py`: 400 small MatMuls 9.9 -> 19.0 ms a run;
  the demo's train step 69 -> 78 ms): a compiled function takes only what it reads (the
  Trainer's step takes the gate value only while there are gates to set);
* MindSpore's CPU kernels run one op at a time (a LayerNorm trained about 10 times
  PyTorch's time, a GELU about 3 times: `benchmarks/kernel_peer.py`); its graph kernel fusion
  (AKG) compiles chains of them into one kernel, but only when asked, and its OpenMP threads
  spin between kernels and slow the MatMuls that follow. `compiled(..., fuse=True)` asks
  for it; `compiled_for` for the networks large enough to gain
  (`VisionTransformer.fuses_kernels`);
* a fused graph's kernels split their work over two sets of threads, MindSpore's kernel
  pool (the MatMuls) and OpenMP's team (AKG's kernels), one more thread than cores, and the
  scheduler does not always put the halves of one kernel on different cores:
  `bind_kernel_threads` gives each its own core (a ViT-B train step about 3% faster here).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import sys
from pathlib import Path

import numpy as np

HOST_BLOCKING = "MS_DEV_HOST_BLOCKING_RUN"
FUSION_FLAGS = "MS_DEV_GRAPH_KERNEL_FLAGS"  # read by MindSpore at every compile
KERNEL_CACHE = "MS_COMPILER_CACHE_PATH"  # where AKG's compiled kernels go (else the working folder)
OPENMP_WAIT = "OMP_WAIT_POLICY"  # read by OpenMP once, when MindSpore loads it
BIND_THREADS = "NETWORK_EXPANSION_BIND_THREADS"  # "0": leave MindSpore's threads to the scheduler
# the folder AKG reads its tuned tilings from (else the working folder: it prints "Please set tiling
# repo path ..." to stdout for each kernel and compiles without them)
AKG_TRUSTED = "AKG_WHITE_LIST_PATH"
# the logs MindSpore 2.10's AKG writes into the working folder at each kernel it compiles
AKG_LOGS = ("dsa_transfrom.log", "scalar_transform.log")


def quiet_openmp() -> None:
    """OpenMP threads that sleep when idle (`OMP_WAIT_POLICY=PASSIVE`), unless the process
    says otherwise. OpenMP reads it once, when MindSpore is imported, so the package sets it
    first thing (`network_expansion/__init__.py`); with MindSpore imported before the
    package and no such setting, `fusion_available()` is False."""
    if "mindspore" not in sys.modules:
        os.environ.setdefault(OPENMP_WAIT, "PASSIVE")


def fusion_available(warn: bool = True) -> bool:
    """Whether MindSpore's graph kernel fusion can run here and pays: on the CPU (GPU and
    Ascend keep MindSpore's defaults), AKG shipped with MindSpore and able to load (it
    imports `decorator`, a dependency of this package), OpenMP's idle threads passive
    (spinning, they took the cores from the MatMuls: a ViT-B forward + backward at depth 4
    1.30 s fused against 1.26 s not; passive, 1.06 to 1.11 s), and a folder for its
    kernels. `warn`: say once in the log why not, where the user can change it."""
    reason = _why_not_fused()
    if reason and warn and not reason.startswith("("):
        _warn_once(reason)
    return reason is None


@functools.lru_cache(maxsize=None)
def _why_not_fused() -> str | None:
    """None, or why graphs do not fuse (in brackets: nothing the user would change)."""
    import mindspore as ms

    if ms.get_context("device_target") != "CPU":
        return "(not the CPU)"
    if importlib.util.find_spec("decorator") is None:
        return "(no decorator module)"
    if not (Path(ms.__file__).parent / "lib" / "plugin" / "cpu" / "libakg.so").exists():
        return "(no AKG in this MindSpore)"
    if os.environ.get(OPENMP_WAIT, "").upper() != "PASSIVE":
        return (f"kernel fusion is off: OpenMP's idle threads spin ({OPENMP_WAIT} was not PASSIVE when "
                f"MindSpore loaded OpenMP) and would make fused graphs slower; import network_expansion first "
                f"(before mindspore: it sets {OPENMP_WAIT}=PASSIVE), or set it yourself (about 14% faster ViT-B "
                f"training here)")
    try:
        kernel_cache().mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return (f"kernel fusion is off: cannot keep the fused kernels in {kernel_cache()} "
                f"({error.strerror or error}); set $NETWORK_EXPANSION_CACHE to a folder you can write")
    return None


@functools.lru_cache(maxsize=None)
def _warn_once(reason: str) -> None:
    logging.getLogger(__name__).warning(reason)


@functools.lru_cache(maxsize=None)
def kernel_cache() -> Path:
    """Where the fused kernels are kept between runs (AKG compiles each new one in about a
    second): `<cache_dir()>/kernels/mindspore-<version>`, fixed for the process at its first
    use (MindSpore keeps loading kernels from the folder it first used: a graph compiled
    after the folder moved cannot find its kernels)."""
    import mindspore as ms

    from .download import cache_dir

    return cache_dir() / "kernels" / f"mindspore-{ms.__version__}"


def akg_folder() -> str:
    """The folder of AKG's own configuration (its tuned tilings), inside MindSpore's wheel."""
    import mindspore as ms

    return str(Path(ms.__file__).resolve().parent / "_akg" / "akg" / "config")


@contextlib.contextmanager
def _fusing():
    """Graph kernel fusion for what compiles inside (MindSpore reads the flags at each
    compile, so other graphs of the process keep theirs), its kernels in `kernel_cache()`,
    and AKG's logs out of the working folder. Flags or a cache path the process set itself
    are left as they are."""
    if FUSION_FLAGS in os.environ:
        yield
        return
    strays = [name for name in AKG_LOGS if not os.path.exists(name)]
    settings = {FUSION_FLAGS: "--opt_level=1", KERNEL_CACHE: str(kernel_cache()), AKG_TRUSTED: akg_folder()}
    added = [name for name in settings if name not in os.environ]
    os.environ.update({name: settings[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            del os.environ[name]
        for name in strays:
            with contextlib.suppress(FileNotFoundError):
                os.remove(name)


def run_on_calling_thread() -> None:
    """On the CPU, run MindSpore's ops and graphs on the calling thread, without the queue
    thread of its asynchronous pipeline (process-wide; PyNative is faster too: a ViT-B
    forward at depth 4 1.70 -> 1.47 s). On GPU and Ascend the queue lets the host run
    ahead of the device, so it stays. MindSpore versions without the switch get
    `MS_DEV_HOST_BLOCKING_RUN=1`, which only counts before MindSpore's runtime starts."""
    import mindspore as ms

    if ms.get_context("device_target") != "CPU":
        return
    try:
        try:
            from mindspore.graph.api import _pynative_executor
        except ImportError:  # MindSpore before 2.9
            from mindspore.common.api import _pynative_executor

        _pynative_executor.disable_frontend_and_bprop_pipeline()
    except (ImportError, AttributeError):
        os.environ.setdefault(HOST_BLOCKING, "1")


def compiled(function, fuse: bool = False):
    """`ms.jit(function)`, after `run_on_calling_thread`; `fuse`: with graph kernel fusion
    where it is available (`fusion_available`): the same numbers to float rounding, a ViT-B
    train step 14% faster here (docs/performance.md)."""
    import mindspore as ms

    run_on_calling_thread()
    graph = ms.jit(_graph_cell()(function).construct)
    if not (fuse and fusion_available()):
        return graph

    first = True

    @functools.wraps(function)
    def fused(*args):
        nonlocal first
        with _fusing():  # every call: a call with new shapes compiles again
            outputs = graph(*args)
        if first:  # OpenMP starts its team at the first fused kernel that runs
            first = False
            bind_kernel_threads()
        return outputs
    return fused


@functools.lru_cache(maxsize=None)
def _graph_cell():
    from mindspore import nn

    class Graph(nn.Cell):
        """A function as a Cell, so that `ms.jit` compiles it as one: each `compiled` call
        makes a new function (a network that grew must not run an old graph), and MindSpore
        warns each time a plain function of the same name compiles again, not a Cell."""

        def __init__(self, function):
            super().__init__(auto_prefix=False)
            self.function = function

        def construct(self, *args):
            return self.function(*args)
    return Graph


def bind_kernel_threads() -> dict | None:
    """Give each thread that runs a part of a CPU kernel a core of its own; returns the
    binding ({thread id: core}), or None where nothing was bound.

    MindSpore 2.10 runs a graph's kernels on its pool's first thread (`ActorThread_0`),
    which splits a MatMul with the pool's other threads (`KernelThread_k`) and an AKG
    kernel with its OpenMP team (threads it starts, named after it: `ActorThread_0` again).
    On two cores that is three busy threads, and when the scheduler put a kernel's two halves
    on one core the kernel took twice as long: a ViT-B train step ran 3.09 s free, 3.03 s
    bound, and 3.38 s with both halves of AKG's kernels forced onto one core
    (docs/performance.md, "Each half of a kernel on its own core"). So the pool's threads
    take one core each in order, and OpenMP's k-th thread the k-th core, as its master (the
    pool's first thread) holds the first.

    Binds nothing where the layout is not that one (an `ActorThread_1`, more threads than
    the pool of a machine with these cores has), in an `msrun` job (its processes share
    the cores), on fewer than two cores, or with `NETWORK_EXPANSION_BIND_THREADS=0`."""
    if os.environ.get(BIND_THREADS, "1") == "0" or "MS_ROLE" in os.environ \
            or not hasattr(os, "sched_setaffinity") or not os.path.isdir("/proc/self/task"):
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


def compiled_for(network, function):
    """`compiled(function, fuse=...)` for a function that runs `network`: fused where the
    network is large enough to gain (`network.fuses_kernels`) and fusion is available, and
    the network's blocks in the forms that suit the graph (`use_fused_forms`)."""
    fuse = network.fuses_kernels and fusion_available()
    network.use_fused_forms(fuse)
    return compiled(function, fuse=fuse)


def compiled_forward(network):
    """`network`'s forward pass in graph mode, compiled for its current blocks (its kernels
    fused if it is large enough to gain: `network.fuses_kernels`).

    A fresh function each call, on purpose: MindSpore 2.10 caches `ms.jit(network.construct)`
    by the bound method, so after `set_blocks` that would silently run the graph of the old
    depth (checked in tests/test_model.py).
    """
    def forward(images):
        return network(images)

    return compiled_for(network, forward)


class SharedForward:
    """One compiled forward pass for every network of one shape (a model and its EMA).

    A third network of that shape (`structural_copy`: nothing drawn) takes the weights of
    the network to run (`ops.assign` into the buffers its graph reads: a graph that has run
    does not see `Parameter.set_data`) and runs the graph compiled once for it. That halves
    what a trainer compiles to evaluate at every shape (at the demo's depth 12, one forward
    compiles in 3 to 4 s; the copy of its 200 tensors takes about 10 ms) at the cost of one
    more set of weights in memory (a ViT-B's 330 MiB).

        >>> shared = SharedForward(model)
        >>> model_logits = shared.of(model)(images)        # doctest: +SKIP
        >>> ema_logits = shared.of(ema.network)(images)     # doctest: +SKIP

    A network whose gates were folded (`fold_gates` once they reached 1) runs with the
    shared network's gates at 1: the same function.

    The third network is built when first used, of the shape `network` had when this was
    made: a run without evaluation keeps no third set of weights.
    """

    def __init__(self, network):
        self._structure = network.structure()  # the shape now: a later fold_gates does not change it
        self._network = self._forward = None

    @property
    def network(self):
        """The network whose parameters the compiled forward reads (built on first use)."""
        if self._network is None:
            from .model import VisionTransformer

            self._network = VisionTransformer.of_structure(self._structure)
            self._network.set_train(False)
            self._forward = compiled_forward(self._network)
        return self._network

    @property
    def forward(self):
        """The compiled forward of `network` (run `of(...)` first to give it weights)."""
        _ = self.network  # built on first use
        return self._forward

    def of(self, network):
        """The compiled forward, holding `network`'s weights (its current values)."""
        from mindspore import ops

        mine = list(self.network.get_parameters())
        theirs = list(network.get_parameters())
        gates = {id(gate) for gate in self.network.gates}
        if len(theirs) != len(mine) and not network.gates:  # folded: its gates are 1s
            for gate in self.network.gates:
                ops.assign(gate, ops.ones_like(gate))
            mine = [p for p in mine if id(p) not in gates]
        if [tuple(p.shape) for p in mine] != [tuple(p.shape) for p in theirs]:
            from .errors import ConfigError

            raise ConfigError(f"SharedForward was built for a network of another shape "
                             f"({self.network.config}) than {network.config}: build one for it")
        for target, source in zip(mine, theirs):
            ops.assign(target, source)
        return self.forward


def pad_batch(images: np.ndarray, size: int) -> np.ndarray:
    """`images` zero-padded to `size` along the batch axis.

    A compiled graph is specialised to its input shape: feeding a short last batch
    compiles the whole network again. Pad, run, and keep the first `len(images)` outputs.
    """
    if len(images) == size:
        return images
    padded = np.zeros((size,) + images.shape[1:], images.dtype)
    padded[:len(images)] = images
    return padded
