"""The training recipe: every knob of a run (`TrainConfig`), soft targets with label
smoothing, mixup and cutmix, the warm-up cosine learning rate, and AdamW's parameter groups.

It follows DeiT and the authors' code: AdamW without weight decay on biases, LayerNorm
parameters, cls token and position embedding (the model says which: `no_weight_decay()`);
cosine learning rate with linear warm-up; label smoothing; optional mixup/cutmix, gradient
clipping and layer-wise learning-rate decay (`layer_of()`); an EMA of the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import nn, ops
from mindspore.nn.learning_rate_schedule import LearningRateSchedule

from . import cpu_forms
from .config import TrainConfig
from .errors import ConfigError
from .graphs import assign

_CHOOSE = object()  # the forms `cpu_forms.choose()` gives (the default)



DYNAMIC_SCALE = 2.0 ** 16  # where a dynamic loss scale starts (PyTorch's GradScaler's too)
SCALE_WINDOW = 2000        # finite steps after which it doubles; an overflow halves it


def loss_scaler(config: TrainConfig):
    """MindSpore's loss scaler for `config`: a fixed `loss_scale` if given, else a dynamic one
    under float16 (whose range needs it), else None (float32, bfloat16: no scaling)."""
    from mindspore.amp import DynamicLossScaler, StaticLossScaler

    if config.loss_scale is not None:
        return StaticLossScaler(float(config.loss_scale))
    if config.precision == "float16":
        return DynamicLossScaler(DYNAMIC_SCALE, 2, SCALE_WINDOW)
    return None


def soft_cross_entropy(logits, targets):
    """The training loss: cross entropy against soft targets (`soft_targets`), batch mean."""
    return -(targets * ops.log_softmax(logits, -1)).sum(-1).mean()


@dataclass(frozen=True)
class BatchTargets:
    """The soft targets of an epoch's batches, `(images, labels, batch index) -> (inputs,
    targets)` (`soft_targets`, drawn from (seed, epoch, index): the same batch, the same mix,
    wherever and whenever it is made). The data run it where they make batches
    (`datasets.batched`: in the pipeline's workers)."""

    num_classes: int
    config: TrainConfig
    epoch: int

    def __call__(self, images, labels, index: int):
        rng = np.random.default_rng([self.config.seed, self.epoch, int(index), 2])
        return soft_targets(labels, self.num_classes, self.config, rng, images)


def soft_targets(labels, num_classes: int, config: TrainConfig, rng, images):
    """Label smoothing, then mixup or cutmix (half the batches each when both are on)."""
    smooth = config.label_smoothing
    targets = np.full((len(labels), num_classes), smooth / num_classes, np.float32)
    targets[np.arange(len(labels)), labels] += 1.0 - smooth
    use_mixup, use_cutmix = config.mixup > 0, config.cutmix > 0
    if not (use_mixup or use_cutmix):
        return images, targets
    if use_mixup and use_cutmix:
        use_mixup = rng.random() < 0.5
        use_cutmix = not use_mixup
    if use_mixup:
        lam = float(rng.beta(config.mixup, config.mixup))
        mixed = images[::-1] - images  # lam x + (1 - lam) x', in one new array
        mixed *= np.float32(1 - lam)
        mixed += images
        images = mixed
    else:
        lam = float(rng.beta(config.cutmix, config.cutmix))
        h, w = images.shape[2:]
        cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = rng.integers(h), rng.integers(w)
        top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        images = images.copy()
        images[:, :, top:bottom, left:right] = images[::-1, :, top:bottom, left:right]
        lam = 1 - (bottom - top) * (right - left) / (h * w)
    return np.ascontiguousarray(images, dtype=np.float32), lam * targets + (1 - lam) * targets[::-1]


# -- optimisation --------------------------------------------------------------------

class WarmupCosine(LearningRateSchedule):
    """Linear warm-up to `peak`, then cosine down to `floor`, as a function of the step."""

    def __init__(self, peak: float, floor: float, warmup_steps: int, total_steps: int,
                 scale: float = 1.0, offset: int = 0):
        super().__init__()
        self.peak, self.floor, self.scale = float(peak), float(floor), float(scale)
        self.warmup, self.total, self.offset = int(warmup_steps), int(total_steps), int(offset)

    def value(self, step: int) -> float:
        """The same function in Python (for logs and tests)."""
        step = step - self.offset
        if step < self.warmup:
            return self.scale * self.peak * (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.scale * (self.floor + 0.5 * (self.peak - self.floor) * (1 + math.cos(math.pi * progress)))

    def construct(self, global_step):
        step = global_step.astype(ms.float32) - self.offset
        warm = self.peak * (step + 1.0) / max(1, self.warmup)
        progress = ops.clamp((step - self.warmup) / max(1, self.total - self.warmup), 0.0, 1.0)
        cosine = self.floor + 0.5 * (self.peak - self.floor) * (1.0 + ops.cos(math.pi * progress))
        return self.scale * ops.select(step < self.warmup, warm, cosine)


class AdamW(nn.AdamWeightDecay):
    """PyTorch's AdamW (bias-corrected, decoupled weight decay) on MindSpore's fused kernels.

    MindSpore's `nn.AdamWeightDecay` has no bias correction: its first update moves a weight
    by about 3x the learning rate (`0.1 g / sqrt(0.001 g^2)`), and the moments take about a
    thousand steps to settle; so does every restart of the moments at a growth, at the peak
    learning rate. Here the `AdamWeightDecay` kernel is given `lr * c` with
    `c = sqrt(1 - b2^t) / (1 - b1^t)`, `eps * sqrt(1 - b2^t)` and `weight_decay / c`, which is
    PyTorch's update exactly. With the CPU's forms (`forms`, `cpu_forms.choose()` by
    default), a large tensor (`CPUForms.large`) takes MindSpore's `Adam` kernel instead (given
    `b1^t`, `b2^t` and the same epsilon, it corrects the bias itself), after the decay as its
    own multiply (`w (1 - lr wd)`, PyTorch's order): on the CPU the `Adam` kernel runs
    faster than `AdamWeightDecay` on large tensors (docs/log/performance.md), and small
    tensors keep the one kernel, where launches cost more than the arithmetic. `t` counts the steps of each
    parameter's own moments: `born[i]` is the global step at which those of parameter `i`
    started (a growth that carries moments has two cohorts). `bias_correction=False` is
    MindSpore's optimizer as it is.
    """

    def __init__(self, param_groups, schedule, born, beta1=0.9, beta2=0.999, eps=1e-8, bias_correction=True,
                 forms=_CHOOSE):
        super().__init__(param_groups, learning_rate=schedule, beta1=beta1, beta2=beta2, eps=eps)
        self.bias_correction = bool(bias_correction)
        self.adam = ops.Adam()
        forms = cpu_forms.choose() if forms is _CHOOSE else forms
        self.large = tuple(forms is not None and forms.large(p.shape) for p in self.parameters)  # by the Adam kernel
        self.born = tuple(int(b) for b in born)
        if len(self.born) != len(self.parameters):
            raise ConfigError(f"{len(self.born)} birth steps for {len(self.parameters)} parameters")
        # The learning rates, decays and corrections are computed once per distinct
        # (schedule, decay, cohort), a handful of scalars, not once per tensor.
        schedules, combos, self.cohorts = [], [], tuple(sorted(set(self.born)))
        self.combo_of = ()
        for learning_rate, decay, born_at in zip(self.learning_rate, self.weight_decay, self.born):
            if all(learning_rate is not s for s in schedules):
                schedules.append(learning_rate)
            key = (next(i for i, s in enumerate(schedules) if s is learning_rate),
                   float(decay.asnumpy()) if isinstance(decay, ms.Tensor) else float(decay),
                   self.cohorts.index(born_at))
            if key not in combos:
                combos.append(key)
            self.combo_of += (combos.index(key),)
        self.schedules = nn.CellList(schedules, auto_prefix=False)
        self.combos = tuple(combos)
        # One fused update per run of consecutive parameters that share a combination: a
        # per-parameter tuple of learning rates, built in the graph, costs the compiler
        # quadratic time in the number of parameters (14.5 s for 200 of them; 1.0 s by runs).
        # build_optimizer orders the parameters so that every combination is one run.
        self.runs = ()
        for index, combo in enumerate(self.combo_of):
            if self.runs and self.runs[-1][2] == combo:
                self.runs = self.runs[:-1] + ((self.runs[-1][0], index + 1, combo),)
            else:
                self.runs += ((index, index + 1, combo),)

    def construct(self, gradients):
        step = self.global_step.astype(ms.float32).reshape(())
        rates = ()
        for schedule in self.schedules:
            rates += (schedule(self.global_step).reshape(()),)
        scales, epsilons, powers = (), (), ()
        for born_at in self.cohorts:
            if self.bias_correction:
                t = ops.maximum(step - born_at + 1.0, 1.0)  # >= 1: a step before `born` is no step
                power1, power2 = ops.pow(self.beta1.reshape(()), t), ops.pow(self.beta2.reshape(()), t)
            else:  # b^t = 0: every correction below is exactly 1
                power1 = power2 = ms.Tensor(0.0, ms.float32)
            root = ops.sqrt(1.0 - power2)
            scales += (root / (1.0 - power1),)
            epsilons += (self.eps.reshape(()) * root,)
            powers += ((power1, power2),)
        done = ()
        for start, end, combo in self.runs:
            schedule, decay, cohort = self.combos[combo]
            update = ops.partial(_fused_update, self.fused_opt, self.adam, self.beta1, self.beta2, epsilons[cohort],
                                 rates[schedule], scales[cohort], ms.Tensor(decay, ms.float32), powers[cohort][0],
                                 powers[cohort][1])
            done += self.hyper_map(update, self._parameters[start:end], self.moments1[start:end],
                                   self.moments2[start:end], gradients[start:end], self.decay_flags[start:end],
                                   self.large[start:end])
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        return done

    def born_by_name(self) -> dict:
        """`{parameter name: the step its moments started}` (for a checkpoint)."""
        return {p.name: b for p, b in zip(self.parameters, self.born)}

    # -- the moments: the only code that reads or writes them ------------------------------

    def moments(self) -> dict:
        """`{id(parameter): (m, v, the step they started)}` as arrays: what a growth carries
        (`expansion.grow(moments=...)`)."""
        return {id(p): (m.asnumpy(), v.asnumpy(), b)
                for p, m, v, b in zip(self.parameters, self.moments1, self.moments2, self.born)}

    def take_moments(self, moments: dict, step: int | None = None, rest_zero: bool = False) -> None:
        """Write `moments` (`{id(parameter): (m, v, ...)}` of this optimizer's parameters) in
        place, where the compiled graphs read them; `rest_zero`: the others' moments to zero
        (a prepared optimizer whose graphs ran on zeros); `step`: the step count too."""
        for parameter, m1, m2 in zip(self.parameters, self.moments1, self.moments2):
            carried = moments.get(id(parameter))
            if carried is not None:
                assign(m1, carried[0])
                assign(m2, carried[1])
            elif rest_zero:
                assign(m1, np.zeros(m1.shape, np.float32))
                assign(m2, np.zeros(m2.shape, np.float32))
        if step is not None:
            assign(self.global_step, np.array([step], np.int32))

    def state(self) -> list:
        """The moments as checkpoint entries (`{"name", "data"}`)."""
        return [{"name": m.name, "data": m.value()} for m in list(self.moments1) + list(self.moments2)]

    def load_state(self, arrays: dict) -> None:
        """The moments from a checkpoint's `{name: array}` (`state`'s names)."""
        for moment in list(self.moments1) + list(self.moments2):
            assign(moment, arrays[moment.name])


_fused_update = ops.MultitypeFuncGraph("fused_update")


@_fused_update.register("Function", "Function", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                        "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Bool", "Bool")
def _fused_update_one(adam_weight_decay, adam, beta1, beta2, eps, lr, scale, decay, power1, power2,
                      parameter, m, v, gradient, decays, large):
    gradient = ops.cast(gradient, parameter.dtype)
    if large:  # PyTorch's order: the decay, then Adam's step (the kernel corrects the bias by the powers)
        if decays:  # after the gradient: free to run at any time, the decayed copies of every weight were
            # computed early and held through the forward and backward (330 MiB more at ViT-B's peak)
            ops.assign(parameter, ops.depend(parameter, gradient) * (1.0 - lr * decay))
        adam(parameter, m, v, power1, power2, lr, beta1, beta2, eps, gradient)
    else:
        adam_weight_decay(parameter, m, v, lr * scale, beta1, beta2, eps,
                          decay / scale if decays else ops.zeros_like(decay), gradient)
    return True


@dataclass(frozen=True)
class Optimization:
    """What `build_optimizer` builds: the AdamW, the unscaled learning-rate schedule (for
    logs) and each parameter's layer-wise scale of it."""

    optimizer: AdamW
    lr_schedule: WarmupCosine
    lr_scales: dict


def build_optimizer(model, config: TrainConfig, steps_per_epoch: int, final_depth: int,
                    offset: int = 0, born: dict | None = None, first=None, forms=_CHOOSE) -> Optimization:
    """AdamW with parameter groups by weight decay and (optionally) layer-wise lr scale; the
    model says which parameters are exempt from decay and which layer each belongs to.
    `born`: `{parameter name: the step its moments started}` for moments carried over
    (the others start at `offset`). With `config.width_lr == 'scaled'` and `first` (the
    `ViTConfig` training started at), a matrix whose input grew by a width growth learns at
    lr * old / new input width (muP's rule for Adam)."""
    total = config.epochs * steps_per_epoch
    warmup = 0 if (config.restart_lr and offset) else config.warmup_epochs * steps_per_epoch
    decay = config.weight_decay * (model.depth / final_depth if config.scale_weight_decay else 1.0)
    groups = {}
    exempt, classifier, layer_of = model.no_weight_decay(), model.classifier_names(), model.layer_of()
    width_scale = {}
    if config.width_lr == "scaled" and first is not None:
        inputs = {"read": first.width / model.config.width, "heads_in": first.width / model.config.width,
                  "hidden_in": first.mlp_width / model.config.mlp_width}
        width_scale = {p.name: inputs[axes[1]] for p, axes in model.width_roles() if len(axes) == 2 and axes[1] in inputs}
    born = born or {}
    for parameter in model.trainable_params():
        name = parameter.name
        if config.freeze_backbone and name not in classifier:
            continue
        scale = config.layer_decay ** (model.depth + 1 - layer_of[name]) if config.layer_decay else 1.0
        scale *= width_scale.get(name, 1.0)
        # the moments' birth is part of the key: every group is one run of AdamW's updates
        key = (name in exempt, round(scale, 8), born.get(name, offset))
        groups.setdefault(key, []).append(parameter)
    if not groups:
        raise ConfigError("nothing to train: the backbone is frozen and the network has no head")
    offset_for_lr = offset if config.restart_lr else 0
    length = total - offset_for_lr
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1], kv[0][2]))
    schedules = {}  # one schedule per scale, shared by the groups (of different births) that have it
    param_groups = [{"params": params, "weight_decay": 0.0 if exempt else decay,
                     "lr": schedules.setdefault(scale, WarmupCosine(config.lr, config.min_lr, warmup, length, scale,
                                                                    offset_for_lr))}
                    for (exempt, scale, _), params in ordered]
    births = [born_at for (_, _, born_at), params in ordered for _ in params]
    schedule = WarmupCosine(config.lr, config.min_lr, warmup, length, 1.0, offset_for_lr)
    optimizer = AdamW(param_groups, schedule, births, bias_correction=config.bias_correction, forms=forms)
    return Optimization(optimizer=optimizer, lr_schedule=schedule,
                        lr_scales={p.name: scale for (_, scale, _), params in groups.items() for p in params})
