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
from network_expansion import cpu_forms
from network_expansion.cpu_forms import CPUForms
from network_expansion.graphs import compiled_for
from network_expansion.model import VisionTransformer
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


@pytest.mark.parametrize("gelu_approximate,layer_norm_eps,forms", [
    (True, 1e-7, None), (False, 1e-6, None), (True, 1e-7, CPUForms()), (False, 1e-6, CPUForms()),
    (True, 1e-7, CPUForms(large_from=0))])
def test_compiled_gradients_match_central_differences_of_the_numpy_reference(gelu_approximate, layer_norm_eps,
                                                                              forms):
    """In MindSpore's own forms (`forms` None: what GPU and Ascend run) and in the CPU's
    (`cpu_forms.CPUForms`; with `large_from=0`, the large-tensor forms ViT-B's shapes take
    and this tiny one's would not: the blocks' LayerNorms through `_LayerNormBackward`, the
    Dense layers' input gradients against the transposed weight)."""
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

    loss, grads = compiled_for(network, step, forms)(ms.Tensor(images), ms.Tensor(targets))
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
def test_the_cpus_dense_form_trains_with_the_gradients_of_a_dense(mode, in_width, out_width, large):
    """The CPU's form of a Dense layer writes its backward out (`cpu_forms._Affine`; a
    narrowing layer takes another form of the weight gradient, a large weight another form
    of the input gradient): input and parameter gradients equal autodiff's of the same
    `nn.Dense`, compiled and in PyNative mode; evaluation runs MindSpore's ops."""
    rng = np.random.default_rng(6)
    dense = ms.nn.Dense(in_width, out_width)
    tokens = ms.Tensor(rng.standard_normal((10, in_width)).astype(np.float32))
    upstream = ms.Tensor(rng.standard_normal((10, out_width)).astype(np.float32))
    large_from = 0 if large else 10**9

    def through_form(x):
        return (cpu_forms._affine(x, dense.weight, dense.bias, in_width > out_width, large_from, True) * upstream).sum()

    def through_dense(x):
        return (dense(x) * upstream).sum()

    results = []
    for function in (through_form, through_dense):
        gradient = ms.value_and_grad(function, 0, dense.trainable_params())

        def run(x):
            return gradient(x)

        loss, (input_gradient, weight_gradients) = (ms.jit(run) if mode == "graph" else run)(tokens)
        results.append([loss.asnumpy(), input_gradient.asnumpy(), *(g.asnumpy() for g in weight_gradients)])
    for ours, autodiff in zip(*results):
        np.testing.assert_allclose(ours, autodiff, rtol=1e-5, atol=1e-5)
    evaluated = cpu_forms._affine(tokens, dense.weight, dense.bias, in_width > out_width, large_from, False)
    np.testing.assert_allclose(evaluated.asnumpy(), dense(tokens).asnumpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["graph", "pynative"])
def test_the_written_out_layer_norm_backward_is_the_layer_norms_gradient(mode):
    """From `CPUForms.large_from` elements on, a training LayerNorm in the CPU's forms
    differentiates through `cpu_forms._LayerNormBackward`: its output and its gradients for x, the gain and the shift
    equal autodiff's of MindSpore's LayerNorm, on tokens whose mean is far from 0 (the
    residual stream's), compiled and in PyNative mode."""
    rng = np.random.default_rng(7)
    tokens, width = 1100, 64
    assert tokens * width >= cpu_forms.LARGE
    x = ms.Tensor((rng.standard_normal((tokens, width)) * rng.uniform(0.1, 3, (tokens, 1))
                   + rng.uniform(-4, 4, (tokens, 1))).astype(np.float32))
    gain = ms.Tensor((1 + 0.5 * rng.standard_normal(width)).astype(np.float32))
    shift = ms.Tensor((0.5 * rng.standard_normal(width)).astype(np.float32))
    upstream = ms.Tensor(rng.standard_normal((tokens, width)).astype(np.float32))

    def written_out(x, gain, shift):
        return (cpu_forms._layer_norm(x, gain, shift, 1e-6, True, cpu_forms.LARGE, False) * upstream).sum()

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
