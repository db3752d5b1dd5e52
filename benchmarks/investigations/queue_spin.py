"""MindSpore's asynchronous queue on the CPU halves a graph's MatMuls: the reproduction.

    .venv/bin/python benchmarks/investigations/queue_spin.py [--rounds 5]

A graph of four 1576 x 768 -> 3072 MatMuls (a ViT-B MLP layer at batch 8), run in two
processes that take turns: one as MindSpore 2.10 runs it (graph runs go through a queue
thread, and the queue thread and the waiting caller both spin), one with the queue off
(`_pynative_executor.disable_frontend_and_bprop_pipeline()`, what
`network_expansion.graphs.run_on_calling_thread` does). Prints the median ms of a run
and what the four MatMuls alone cost (about 36 ms each at this machine's MatMul speed).
"""

import argparse
import statistics
import subprocess
import sys
import time

def serve(queue: str):
    """Compile the graph, then time five runs per line read from stdin."""
    import mindspore as ms
    import numpy as np
    from mindspore import ops

    if queue == "off":
        from mindspore.common.api import _pynative_executor

        _pynative_executor.disable_frontend_and_bprop_pipeline()
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((1576, 768), np.float32))
    w = ms.Parameter(ms.Tensor(rng.standard_normal((3072, 768), np.float32) * 0.02), name="w")
    matmul = ops.MatMul(transpose_b=True)

    def four(x):
        return matmul(x, w), matmul(x + 1, w), matmul(x + 2, w), matmul(x + 3, w)

    run = ms.jit(four)
    run(x)[3].asnumpy()
    print("ready", flush=True)
    for _ in sys.stdin:
        start = time.perf_counter()
        for _ in range(5):
            run(x)[3].asnumpy()
        print((time.perf_counter() - start) / 5, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--worker", choices=("on", "off"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return serve(args.worker)
    workers = {}
    for name in ("queue on (MindSpore's default)", "queue off"):
        workers[name] = subprocess.Popen([sys.executable, __file__, "--worker", "off" if "off" in name else "on"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                         text=True)
        assert workers[name].stdout.readline().strip() == "ready"
    seconds = {name: [] for name in workers}
    for round_number in range(args.rounds):
        for name, worker in (list(workers.items())[::-1] if round_number % 2 else workers.items()):
            worker.stdin.write("go\n")
            worker.stdin.flush()
            seconds[name].append(float(worker.stdout.readline()))
    print("| graph of four MatMuls (1576 x 768 -> 3072) | ms per run |\n|---|---:|")
    for name, worker in workers.items():
        print(f"| {name} | {1e3 * statistics.median(seconds[name]):.1f} |")
        worker.stdin.close()
        worker.wait()


if __name__ == "__main__":
    main()
