"""The gradients the trainer steps with are the true gradients of its loss.

The reference is the independent NumPy forward pass (`numpy_vit.py`) in float64: for every
parameter tensor, the directional derivative of the loss along a random direction, by
central differences, against the package's compiled gradient along the same direction.
"""

import mindspore as ms
import numpy as np
import pytest

import numpy_vit
from conftest import parameters_of, tiny_config
from network_expansion import model
from network_expansion.model import TokenDense, VisionTransformer
from network_expansion.recipe import soft_cross_entropy


def _off_the_defaults(network, seed):
    """Unit-gain weights, LayerNorms and biases moved off 1 and 0: every gradient matters."""
    rng = np.random.default_rng(seed)
    for p in network.get_parameters():
        scale = 1 / np.sqrt(p.shape[-1]) if p.name.endswith(".weight") else 0.5
        values = rng.standard_normal(p.shape) * scale + (1.0 if p.name.endswith(".gamma") else 0.0)
        p.set_data(ms.Tensor(values.astype(np.float32)))


def _numpy_loss(params, images, targets, **reference):
    logits = numpy_vit.forward(params, images, **reference)
    shifted = logits - logits.max(-1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return float(-(targets * log_probabilities).sum(-1).mean())


@pytest.mark.parametrize("gelu_approximate,layer_norm_eps,written_out", [
    (True, 1e-7, False), (False, 1e-6, False), (True, 1e-7, True)])
def test_compiled_gradients_match_central_differences_of_the_numpy_reference(gelu_approximate, layer_norm_eps,
                                                                              written_out, monkeypatch):
    """`written_out`: the backward's forms for large tensors, which ViT-B's shapes take and
    this tiny one's would not (`model.LARGE`: the blocks' LayerNorms through
    `model._LayerNormBackward`, the Dense layers' input gradients against the transposed weight)."""
    if written_out:
        monkeypatch.setattr(model, "LARGE", 0)
    network = VisionTransformer(tiny_config(gelu_approximate=gelu_approximate, layer_norm_eps=layer_norm_eps), seed=3)
    _off_the_defaults(network, seed=4)
    network.set_train(True)  # the trainer's mode (dropout and drop-path are 0)
    rng = np.random.default_rng(5)
    images = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
    targets = np.full((3, 10), 0.01, np.float32)
    targets[np.arange(3), [1, 7, 4]] += 0.9  # label-smoothed, as soft_targets makes them

    parameters = network.trainable_params()
    def loss_of(x, t):
        return soft_cross_entropy(network(x), t)

    gradients = ms.value_and_grad(loss_of, None, parameters)

    def step(x, t):
        return gradients(x, t)

    loss, grads = ms.jit(step)(ms.Tensor(images), ms.Tensor(targets))
    params = {k: v.astype(np.float64) for k, v in parameters_of(network).items()}
    reference = dict(num_heads=4, gelu_approximate=gelu_approximate, layer_norm_eps=layer_norm_eps)
    images64, targets64 = images.astype(np.float64), targets.astype(np.float64)
    assert abs(float(loss.asnumpy()) - _numpy_loss(params, images64, targets64, **reference)) < 1e-5

    checked = 0
    for parameter, grad in zip(parameters, grads):
        direction = rng.standard_normal(parameter.shape)
        step_size = 1e-5
        plus, minus = dict(params), dict(params)
        plus[parameter.name] = params[parameter.name] + step_size * direction
        minus[parameter.name] = params[parameter.name] - step_size * direction
        expected = (_numpy_loss(plus, images64, targets64, **reference)
                    - _numpy_loss(minus, images64, targets64, **reference)) / (2 * step_size)
        got = float((grad.asnumpy().astype(np.float64) * direction).sum())
        assert abs(got - expected) <= 1e-3 * abs(expected) + 1e-5, (parameter.name, got, expected)
        checked += 1
    assert checked == len(params)  # every parameter has a gradient, and each was checked


@pytest.mark.parametrize("mode", ["graph", "pynative"])
@pytest.mark.parametrize("in_width,out_width", [(48, 16), (16, 48)])
@pytest.mark.parametrize("large", [False, True])
def test_a_token_dense_trains_with_the_gradients_of_its_dense(mode, in_width, out_width, large, monkeypatch):
    """TokenDense writes its backward out (`model._Affine`; a narrowing layer takes another
    form of the weight gradient, a large weight another form of the input gradient):
    input and parameter gradients equal autodiff's of the same `nn.Dense`, compiled and in
    PyNative mode; evaluation runs the `nn.Dense` itself."""
    if large:
        monkeypatch.setattr(model, "LARGE", 0)
    rng = np.random.default_rng(6)
    layer = TokenDense(in_width, out_width, rng)
    assert layer.narrows == (in_width > out_width)
    layer.set_train(True)
    tokens = ms.Tensor(rng.standard_normal((2, 5, in_width)).astype(np.float32))
    upstream = ms.Tensor(rng.standard_normal((2, 5, out_width)).astype(np.float32))

    def through_layer(x):
        return (layer(x) * upstream).sum()

    def through_dense(x):
        return (layer.dense(x) * upstream).sum()

    results = []
    for function in (through_layer, through_dense):
        gradient = ms.value_and_grad(function, 0, layer.trainable_params())

        def run(x):
            return gradient(x)

        loss, (input_gradient, weight_gradients) = (ms.jit(run) if mode == "graph" else run)(tokens)
        results.append([loss.asnumpy(), input_gradient.asnumpy(), *(g.asnumpy() for g in weight_gradients)])
    assert [p.name for p in layer.trainable_params()] == ["dense.weight", "dense.bias"]
    for ours, autodiff in zip(*results):
        np.testing.assert_allclose(ours, autodiff, rtol=1e-5, atol=1e-5)
    layer.set_train(False)
    np.testing.assert_array_equal(layer(tokens).asnumpy(), layer.dense(tokens).asnumpy())


@pytest.mark.parametrize("mode", ["graph", "pynative"])
def test_the_written_out_layer_norm_backward_is_the_layer_norms_gradient(mode):
    """From `model.LARGE` elements on a training LayerNorm differentiates through
    `model._LayerNormBackward`: its output and its gradients for x, the gain and the shift
    equal autodiff's of MindSpore's LayerNorm, on tokens whose mean is far from 0 (the
    residual stream's), compiled and in PyNative mode."""
    rng = np.random.default_rng(7)
    tokens, width = 1100, 64
    assert tokens * width >= model.LARGE
    x = ms.Tensor((rng.standard_normal((tokens, width)) * rng.uniform(0.1, 3, (tokens, 1))
                   + rng.uniform(-4, 4, (tokens, 1))).astype(np.float32))
    gain = ms.Tensor((1 + 0.5 * rng.standard_normal(width)).astype(np.float32))
    shift = ms.Tensor((0.5 * rng.standard_normal(width)).astype(np.float32))
    upstream = ms.Tensor(rng.standard_normal((tokens, width)).astype(np.float32))

    def written_out(x, gain, shift):
        return (model._layer_norm(x, gain, shift, 1e-6, True) * upstream).sum()

    def fused(x, gain, shift):
        return (ms.ops.LayerNorm(-1, -1, 1e-6)(x, gain, shift)[0] * upstream).sum()

    results = []
    for function in (written_out, fused):
        gradient = ms.value_and_grad(function, (0, 1, 2))

        def run(x, gain, shift):
            return gradient(x, gain, shift)

        loss, gradients = (ms.jit(run) if mode == "graph" else run)(x, gain, shift)
        results.append([loss.asnumpy(), *(g.asnumpy() for g in gradients)])
    for ours, autodiff in zip(*results):
        np.testing.assert_allclose(ours, autodiff, rtol=1e-4, atol=1e-4 * np.abs(autodiff).max())
    assert np.abs(results[0][1]).max() > 0.1  # the input gradient is not trivially small
