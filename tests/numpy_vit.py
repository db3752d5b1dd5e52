"""A NumPy forward pass of the released architecture, written from the paper's equations
and the zoo's code, independent of the package: the reference our network must match."""

import math

import numpy as np


def layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def gelu(x, approximate):
    if approximate:
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def dense(x, params, name):
    return x @ params[f"{name}.weight"].T + params[f"{name}.bias"]


def forward(params, images, *, patch_size, num_heads, gelu_approximate, layer_norm_eps, features=False):
    """Logits (or, with `features`, all final tokens) for NCHW `images`, from `{name: array}`."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    b, c, h, w = images.shape
    # A stride-p convolution, written as one: out[b, d, i, j] = sum_{c,y,x} W[d,c,y,x] img[...]
    width = p["stem.patch_to_embedding.dense.weight"].shape[0]
    conv_weight = p["stem.patch_to_embedding.dense.weight"].reshape(width, c, patch_size, patch_size)
    rows, cols = h // patch_size, w // patch_size
    tokens = np.zeros((b, rows * cols, width))
    for i in range(rows):
        for j in range(cols):
            patch = images[:, :, i * patch_size:(i + 1) * patch_size, j * patch_size:(j + 1) * patch_size]
            tokens[:, i * cols + j] = np.einsum("bcyx,dcyx->bd", patch, conv_weight)
    tokens += p["stem.patch_to_embedding.dense.bias"]
    cls = np.broadcast_to(p["cls"], (b, 1, width))
    x = np.concatenate([cls, tokens], axis=1) + p["pos_embedding"]
    depth = 1 + max(int(k.split(".")[2]) for k in p if k.startswith("body.layers."))
    head_dim = width // num_heads
    for i in range(depth):
        pre = f"body.layers.{i}"
        y = layer_norm(x, p[f"{pre}.0.cell.0.gamma"], p[f"{pre}.0.cell.0.beta"], layer_norm_eps)
        q, k, v = (dense(y, p, f"{pre}.0.cell.1.to_{n}").reshape(b, -1, num_heads, head_dim).transpose(0, 2, 1, 3)
                   for n in "qkv")
        attention = softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_dim))
        mixed = (attention @ v).transpose(0, 2, 1, 3).reshape(b, -1, width)
        x = x + dense(mixed, p, f"{pre}.0.cell.1.to_out")
        y = layer_norm(x, p[f"{pre}.1.cell.0.gamma"], p[f"{pre}.1.cell.0.beta"], layer_norm_eps)
        hidden = gelu(dense(y, p, f"{pre}.1.cell.1.ff1.dense"), gelu_approximate)
        x = x + dense(hidden, p, f"{pre}.1.cell.1.ff2.dense")
    x = layer_norm(x, p["norm.gamma"], p["norm.beta"], layer_norm_eps)
    if features:
        return x
    return dense(x[:, 0], p, "head.0")
