"""A NumPy forward pass of the released architecture, written from the paper's equations
and the two codes it can come from (the MindSpore model zoo's `vit.py`, timm's
`vision_transformer.py`), independent of the package: the reference our network must match.

`forward(params, images, names='mindspore' | 'timm', ...)` reads the weights under either
naming scheme directly, as the source code does, so that the package's name maps (q/k/v
split, patch-embedding layout) are checked, not reused.
"""

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


def dense(x, params, name, weight="weight", bias="bias"):
    return x @ params[f"{name}.{weight}"].T + params[f"{name}.{bias}"]


def convolve_patches(images, conv_weight, bias):
    """A stride-p convolution: out[b, i*cols+j, d] = sum_{c,y,x} W[d,c,y,x] img[b,c,i*p+y,j*p+x]."""
    b, _, h, w = images.shape
    p = conv_weight.shape[-1]
    rows, cols = h // p, w // p
    tokens = np.zeros((b, rows * cols, conv_weight.shape[0]))
    for i in range(rows):
        for j in range(cols):
            patch = images[:, :, i * p:(i + 1) * p, j * p:(j + 1) * p]
            tokens[:, i * cols + j] = np.einsum("bcyx,dcyx->bd", patch, conv_weight)
    return tokens + bias


class MindSporeNames:
    """The model zoo's ViT: patch Dense over (c, row, col), separate to_q/to_k/to_v."""

    def __init__(self, p, num_heads):
        self.p, self.heads = p, num_heads
        self.depth = 1 + max(int(k.split(".")[2]) for k in p if k.startswith("body.layers."))

    def embed(self, images):
        w = self.p["stem.patch_to_embedding.dense.weight"]
        patch = int(round((w.shape[1] / images.shape[1]) ** 0.5))
        conv = w.reshape(w.shape[0], images.shape[1], patch, patch)
        return convolve_patches(images, conv, self.p["stem.patch_to_embedding.dense.bias"]), \
            self.p["cls"], self.p["pos_embedding"]

    def norm(self, i, which):
        pre = f"body.layers.{i}.{0 if which == 1 else 1}.cell.0"
        return self.p[f"{pre}.gamma"], self.p[f"{pre}.beta"]

    def qkv(self, i, y):
        b, n, d = y.shape
        return [dense(y, self.p, f"body.layers.{i}.0.cell.1.to_{x}").reshape(b, n, self.heads, -1)
                .transpose(0, 2, 1, 3) for x in "qkv"]

    def out(self, i, mixed):
        return dense(mixed, self.p, f"body.layers.{i}.0.cell.1.to_out")

    def mlp(self, i, y, approximate):
        hidden = gelu(dense(y, self.p, f"body.layers.{i}.1.cell.1.ff1.dense"), approximate)
        return dense(hidden, self.p, f"body.layers.{i}.1.cell.1.ff2.dense")

    def final(self, x, eps):
        x = layer_norm(x, self.p["norm.gamma"], self.p["norm.beta"], eps)
        return x, (lambda pooled: dense(pooled, self.p, "head.0"))


class TimmNames:
    """timm's VisionTransformer: Conv2d patch embedding, fused qkv (`reshape(B, N, 3, H, hd)`)."""

    def __init__(self, p, num_heads):
        self.p, self.heads = p, num_heads
        self.depth = 1 + max(int(k.split(".")[1]) for k in p if k.startswith("blocks."))

    def embed(self, images):
        return convolve_patches(images, self.p["patch_embed.proj.weight"], self.p["patch_embed.proj.bias"]), \
            self.p["cls_token"], self.p["pos_embed"]

    def norm(self, i, which):
        return self.p[f"blocks.{i}.norm{which}.weight"], self.p[f"blocks.{i}.norm{which}.bias"]

    def qkv(self, i, y):
        b, n, d = y.shape
        qkv = dense(y, self.p, f"blocks.{i}.attn.qkv").reshape(b, n, 3, self.heads, d // self.heads)
        qkv = qkv.transpose(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def out(self, i, mixed):
        return dense(mixed, self.p, f"blocks.{i}.attn.proj")

    def mlp(self, i, y, approximate):
        return dense(gelu(dense(y, self.p, f"blocks.{i}.mlp.fc1"), approximate), self.p, f"blocks.{i}.mlp.fc2")

    def final(self, x, eps):
        x = layer_norm(x, self.p["norm.weight"], self.p["norm.bias"], eps)
        return x, (lambda pooled: dense(pooled, self.p, "head"))


def forward(params, images, *, num_heads, gelu_approximate, layer_norm_eps, features=False,
            names="mindspore"):
    """Logits (or, with `features`, all final tokens) for NCHW `images`, from `{name: array}`."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    net = (TimmNames if names == "timm" else MindSporeNames)(p, num_heads)
    images = np.asarray(images, np.float64)
    tokens, cls, positions = net.embed(images)
    b, _, width = tokens.shape
    x = np.concatenate([np.broadcast_to(cls, (b, 1, width)), tokens], axis=1) + positions
    for i in range(net.depth):
        y = layer_norm(x, *net.norm(i, 1), layer_norm_eps)
        q, k, v = net.qkv(i, y)
        attention = softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1]))
        x = x + net.out(i, (attention @ v).transpose(0, 2, 1, 3).reshape(b, -1, width))
        x = x + net.mlp(i, layer_norm(x, *net.norm(i, 2), layer_norm_eps), gelu_approximate)
    x, head = net.final(x, layer_norm_eps)
    return x if features else head(x[:, 0])
