"""The attention branch's forms in training: ViT-B's shapes at batch 8, forward + backward
(the branch's output and every gradient returned), compiled as the package compiles
(`tune_cpu()`, then `graphs.compiled`), the forms taking turns call by call.

    .venv/bin/python benchmarks/investigations/attention_forms.py [--rounds 30]

* package: `cpu_forms._attention` (separate q, k, v projections, each moved to the heads'
  layout with its own transpose);
* q/k/v fused, split: the three weights concatenated, one 768 -> 2304 product, split into
  q, k, v, each to the heads' layout as the package does;
* q/k/v fused, one transpose: the product viewed (batch, tokens, 3, heads, 64) and moved
  to (3, batch, heads, tokens, 64) at once, timm's layout;
* projections through `_Affine`: the four Dense products with the package's written-out
  backward (the bias gradient as a sum, the input gradient against the transposed weight);
* both: q/k/v fused and split, every product through `_Affine`.

Prints each form's median milliseconds, its largest difference from the package's outputs,
and the paired difference from the package's form (per round: the drift falls on all).
"""

from __future__ import annotations

import argparse
import statistics
import time

from network_expansion.tuning import tune_cpu

tune_cpu(kernel_fusion=True, bind_threads=False)  # before MindSpore: fused, as the package compiles ViT-B

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
from mindspore import ops  # noqa: E402

from network_expansion.graphs import compiled  # noqa: E402
from network_expansion.cpu_forms import LARGE, _affine, _attention, _layer_norm  # noqa: E402

BATCH, TOKENS, WIDTH, HEADS = 8, 197, 768, 12
# heads, epsilon, tanh GELU, MLP narrows, MLP widens, dropout, attention dropout, training, large from, fused
FORM = (HEADS, 1e-6, True, False, True, 0.0, 0.0, True, LARGE, True)


def package(tokens, gain, shift, wq, bq, wk, bk, wv, bv, wo, bo):
    return _attention(tokens, gain, shift, (wq, bq, wk, bk, wv, bv, wo, bo), None, FORM)


def _heads(flat):  # (batch * tokens, width) -> (batch, heads, tokens, width / heads)
    return flat.reshape(BATCH, TOKENS, HEADS, WIDTH // HEADS).transpose(0, 2, 1, 3)


def _mix(q, k, v, wo, bo, dense):
    weights = ops.softmax(ops.BatchMatMul(transpose_b=True)(q * (WIDTH // HEADS) ** -0.5, k), axis=-1)
    mixed = ops.BatchMatMul()(weights, v).transpose(0, 2, 1, 3).reshape(-1, WIDTH)
    return dense(mixed, wo, bo).reshape(BATCH, TOKENS, WIDTH)


def _dense(x, weight, bias):
    return ops.BiasAdd()(ops.MatMul(transpose_b=True)(x, weight), bias)


def _through_affine(x, weight, bias):
    return _affine(x, weight, bias, False, LARGE, True)


def fused_split(tokens, gain, shift, wq, bq, wk, bk, wv, bv, wo, bo):
    x = _layer_norm(tokens.reshape(-1, WIDTH), gain, shift, 1e-6, True, LARGE, True)
    q, k, v = ops.split(_dense(x, ops.concat((wq, wk, wv)), ops.concat((bq, bk, bv))), WIDTH, axis=1)
    return _mix(_heads(q), _heads(k), _heads(v), wo, bo, _dense)


def fused_split_affine(tokens, gain, shift, wq, bq, wk, bk, wv, bv, wo, bo):
    x = _layer_norm(tokens.reshape(-1, WIDTH), gain, shift, 1e-6, True, LARGE, True)
    q, k, v = ops.split(_through_affine(x, ops.concat((wq, wk, wv)), ops.concat((bq, bk, bv))), WIDTH, axis=1)
    return _mix(_heads(q), _heads(k), _heads(v), wo, bo, _through_affine)


def fused_one_transpose(tokens, gain, shift, wq, bq, wk, bk, wv, bv, wo, bo):
    x = _layer_norm(tokens.reshape(-1, WIDTH), gain, shift, 1e-6, True, LARGE, True)
    qkv = _dense(x, ops.concat((wq, wk, wv)), ops.concat((bq, bk, bv)))
    qkv = qkv.reshape(BATCH, TOKENS, 3, HEADS, WIDTH // HEADS).transpose(2, 0, 3, 1, 4)
    return _mix(qkv[0], qkv[1], qkv[2], wo, bo, _dense)


def affine_projections(tokens, gain, shift, wq, bq, wk, bk, wv, bv, wo, bo):
    x = _layer_norm(tokens.reshape(-1, WIDTH), gain, shift, 1e-6, True, LARGE, True)
    q, k, v = (_heads(_through_affine(x, w, b)) for w, b in ((wq, bq), (wk, bk), (wv, bv)))
    return _mix(q, k, v, wo, bo, _through_affine)


FORMS = {"package": package, "q/k/v fused, split": fused_split,
         "q/k/v fused, one transpose": fused_one_transpose, "projections through _Affine": affine_projections,
         "q/k/v fused, split, through _Affine": fused_split_affine}


def trained(branch):
    """The branch's output and the gradients of its sum with respect to every input, compiled."""
    def total(tokens, gain, shift, wq, bq, wk, bk, wv, bv, wo, bo):
        return branch(tokens, gain, shift, wq, bq, wk, bk, wv, bv, wo, bo).sum()

    gradients = ms.value_and_grad(total, grad_position=tuple(range(11)))

    def step(tokens, gain, shift, wq, bq, wk, bk, wv, bv, wo, bo):
        return gradients(tokens, gain, shift, wq, bq, wk, bk, wv, bv, wo, bo)
    return compiled(step)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    def tensor(*shape, scale=0.05, offset=0.0):
        return ms.Tensor((rng.standard_normal(shape) * scale + offset).astype(np.float32))

    inputs = [tensor(BATCH, TOKENS, WIDTH, scale=1.0), tensor(WIDTH, offset=1.0), tensor(WIDTH)]
    for _ in range(4):
        inputs += [tensor(WIDTH, WIDTH), tensor(WIDTH)]
    steps = {name: trained(branch) for name, branch in FORMS.items()}
    reference, errors = None, {}
    for name, step in steps.items():  # compile, and check
        loss, gradients = step(*inputs)
        values = [loss.asnumpy()] + [g.asnumpy() for g in gradients]
        reference = reference or values
        errors[name] = max(float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12)) for a, b in zip(values, reference))
    seconds = {name: [] for name in steps}
    names = list(steps)
    for round_number in range(args.rounds):
        turn = round_number % len(names)
        for name in names[turn:] + names[:turn]:
            start = time.perf_counter()
            loss, _ = steps[name](*inputs)
            loss.asnumpy()
            seconds[name].append(1e3 * (time.perf_counter() - start))
    print(f"\nattention branch, ViT-B at batch 8, forward + backward, {args.rounds} rounds\n")
    print("| form | ms (median) | largest relative difference | paired difference from the package's (median, quartiles) |")
    print("|---|---:|---:|---:|")
    for name, times in seconds.items():
        paired = [a - b for a, b in zip(times, seconds["package"])]
        low, middle, high = statistics.quantiles(paired, n=4)
        print(f"| {name} | {statistics.median(times):.1f} | {errors[name]:.1e} | "
              f"{middle:+.1f} ({low:+.1f} to {high:+.1f}) |")


if __name__ == "__main__":
    main()
