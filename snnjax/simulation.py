"""Running a converted SNN: any Flax Linen ANN with its activation layers swapped by interception.

:func:`spiking_model` wraps an ANN module in a :class:`SpikingNetwork`. Applying it runs the ANN's own
``__call__`` under ``flax.linen.intercept_methods``: every call of a snnjax activation layer
(:class:`~snnjax.layers.ThresholdActivation`, or :class:`~snnjax.layers.Activation` for a calibrated
ReLU) is replaced by the spiking neuron, with the threshold θ read from that layer's ``threshold``
variable, and every ``nn.BatchNorm`` whose statistics were folded away becomes the bias it left. Layers
are found by their class and keyed by their module path, never by name, so the activation may be a
constructor field, created inside ``__call__`` (auto-named or named), sit inside ``nn.Sequential``, in
nested submodules or residual blocks. Activations written as plain functions (``nn.relu(x)``) cannot be
intercepted: use the snnjax layers.

Two simulation modes, same outputs (tested):

* **layer** (default): time is folded into the batch, ``[T, B, ...] → [T·B, ...]``, so every synaptic
  layer runs once on the ANN's own layout (a model may flatten with ``x.reshape((x.shape[0], -1))``);
  each spiking layer unfolds its input to ``[T, B, ...]`` for one ``lax.scan`` over time and folds the
  result back (reshapes that move no data).
* **step**: the whole network advances one timestep at a time inside one ``lax.scan`` whose carry is a
  dict of every spiking layer's membrane (keyed by module path); memory does not grow with T.

Inputs: :func:`spiking_apply` takes static images ``[B, ...]`` (the analog image is the input at every
step, the reference setting); :func:`spiking_apply_sequence` takes an explicit time-major sequence
``[T, B, ...]`` (rate-coded or event inputs). Neither guesses from the shape.
"""

from __future__ import annotations

import dataclasses
import inspect
import operator
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from snnjax.layers import Activation, Conv, ThresholdActivation
from snnjax.low_latency import LOW_LATENCY_NEURONS, NETWORK_PRERUN_NEURONS
from snnjax.models import spiking_max_pool_gate
from snnjax.neurons import NEURONS, if_neuron, if_neuron_with_state, if_step, initial_membrane

__all__ = [
    "ALL_NEURONS",
    "CALIBRATION",
    "CONVERTIBLE_ACTIVATIONS",
    "MATMUL_PRECISIONS",
    "SIMULATION_DTYPES",
    "SIMULATION_MODES",
    "SpikingNetwork",
    "apply_folded",
    "swapping_interceptor",
    "cumulative_mean_logits",
    "inference_kwargs",
    "spiking_apply",
    "spiking_apply_sequence",
    "spiking_model",
]

Variables = Mapping[str, Any]

# The ANN activation layers the converter turns into spiking neurons.
CONVERTIBLE_ACTIVATIONS = (ThresholdActivation, Activation)
SIMULATION_MODES = ("layer", "step")
# Every neuron a SpikingNetwork runs by name: the reference IF, SpikeConverter's two, and the
# training-free low-latency ones of snnjax.low_latency (layer mode only).
ALL_NEURONS = {**NEURONS, **LOW_LATENCY_NEURONS}
# Per-layer corrections that snnjax.calibration writes into the "calibration" variable collection.
CALIBRATION = "calibration"
# Step mode's time scan is unrolled by this many steps. On the 2-core CPU two unrolled timesteps let
# XLA's executor run layer l of step t + 1 beside layer l + 1 of step t (its ops are too small to
# fill both cores alone): ResNet-20, T = 32, batch 64, 1436 → 1230 ms, identical outputs; VGG-16 at
# batch 16 (conv-bound) ±3 %; unrolling 4 was slower than 2 (benchmarks/results/README.md).
# Accelerators: not measured, left rolled.
STEP_UNROLL = {"cpu": 2, "default": 1}
SIMULATION_DTYPES = ("float32", "bfloat16")  # dtypes convert.py simulates in (config.snn_dtype)
MATMUL_PRECISIONS = ("default", "high", "highest")  # jax.default_matmul_precision values


def inference_kwargs(module: nn.Module) -> dict[str, Any]:
    """``{"train": False}`` if ``module.__call__`` takes ``train`` (snnjax's models), else ``{}``."""
    parameters = inspect.signature(type(module).__call__).parameters
    return {"train": False} if "train" in parameters else {}


def _path(module: nn.Module) -> str:
    return "/".join(module.path)


def _threshold(module: nn.Module, dtype) -> jax.Array:
    """θ of an activation layer, from its ``threshold`` variable (the SNN's, i.e. after conversion)."""
    if not module.has_variable("params", "threshold"):
        raise ValueError(
            f"activation layer {_path(module)!r} has no 'threshold' variable: convert the ANN variables "
            "with snnjax.ann_to_snn_variables (a plain-ReLU ANN needs snnjax.calibrate_thresholds first)."
        )
    return module.get_variable("params", "threshold").astype(dtype)


def _folded_batchnorm(module: nn.Module) -> bool:
    """Whether ``module`` is a BatchNorm whose statistics were folded into the layer before it."""
    return (
        isinstance(module, nn.BatchNorm)
        and not module.is_initializing()
        and not module.has_variable("batch_stats", "mean")
        and not module.has_variable("params", "scale")
        and module.has_variable("params", "bias")
    )


def _folded_bias(module: nn.Module, x: jax.Array) -> jax.Array:
    """What a folded BatchNorm leaves: ``x + b`` (as :class:`~snnjax.layers.FoldedBatchNorm`)."""
    bias = module.get_variable("params", "bias")
    return x + jnp.broadcast_to(bias.astype(x.dtype), x.shape)


def swapping_interceptor(spike: Callable[[nn.Module, jax.Array], jax.Array] | None):
    """The interceptor that makes an ANN the SNN.

    Every activation layer call becomes ``spike(layer, x)`` (``spike=None``: the layer runs as it is),
    and every folded BatchNorm adds the bias it left.
    """

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "__call__":
            if spike is not None and isinstance(module, CONVERTIBLE_ACTIVATIONS):
                return spike(module, args[0])
            if _folded_batchnorm(module):
                return _folded_bias(module, args[0])
        return next_fun(*args, **kwargs)

    return interceptor


def apply_folded(model: nn.Module, variables: Variables, inputs: jax.Array) -> Any:
    """The ANN's outputs with folded variables: each folded BatchNorm adds the bias it left.

    Args:
      model: the ANN.
      variables: its variables after :func:`snnjax.fold_batchnorm`.
      inputs: ``[B, ...]``.
    """
    with nn.intercept_methods(swapping_interceptor(None)):
        return model.apply(variables, inputs, **inference_kwargs(model))


def _unfold_time(fn: Callable[[jax.Array], jax.Array], num_steps: int) -> Callable[[jax.Array], jax.Array]:
    """``fn`` over time-major ``[T, B, ...]`` applied to a time-folded ``[T·B, ...]`` array."""

    def folded(x):
        y = fn(x.reshape(num_steps, -1, *x.shape[1:]))
        return y.reshape(y.shape[0] * y.shape[1], *y.shape[2:])

    return folded


@dataclasses.dataclass(frozen=True)
class SpikingNetwork:
    """An ANN module run as an SNN (see the module docstring). Build it with :func:`spiking_model`.

    Its variables are the ANN's variables after :func:`snnjax.ann_to_snn_variables` (same tree, each
    activation's ``threshold`` holding θ; BatchNorm folded or not).

    Attributes:
      ann: the ANN, an unbound Flax Linen module.
      v0: initial membrane as a fraction of θ.
      neuron: a key of :data:`ALL_NEURONS`.
      mode: ``"layer"`` or ``"step"``.
      per_channel: the thresholds are per channel (informational: θ's shape comes from the variables).
      fold_bn: the variables have BatchNorm folded (informational: folded layers are recognised by
        their variables).
      surrogate: the IF neuron's surrogate derivative (see :mod:`snnjax.surrogates`); None = the exact
        step function, whose gradient with respect to the input is zero.
      neuron_options: keyword options of a low-latency neuron, as ``(name, value)`` pairs (a dict is
        accepted and stored sorted): ``max_spikes`` (burst, group), ``prerun`` (cos, cos_network, srp).
    """

    ann: nn.Module
    v0: float = 0.5
    neuron: str = "if"
    mode: str = "layer"
    per_channel: bool = False
    fold_bn: bool = False
    surrogate: Callable[[jax.Array], jax.Array] | None = None
    neuron_options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        if isinstance(self.neuron_options, Mapping):  # hashable, so the model can be a static jit argument
            object.__setattr__(self, "neuron_options", tuple(sorted(self.neuron_options.items())))
        if self.mode not in SIMULATION_MODES:
            raise ValueError(
                f"simulation mode {self.mode!r} is unknown; allowed: {', '.join(SIMULATION_MODES)}."
            )
        if self.neuron not in ALL_NEURONS:
            raise ValueError(f"neuron {self.neuron!r} is unknown; allowed: {', '.join(ALL_NEURONS)}.")
        if self.mode == "step" and self.neuron != "if":
            raise ValueError(
                f"step mode runs the IF neuron only; neuron {self.neuron!r} needs mode='layer' "
                "(it sees a layer's whole window: integrate_then_fire, the pre-run of cos/srp)."
            )
        if self.surrogate is not None and self.neuron != "if":
            raise ValueError(
                f"a surrogate gradient is defined for the 'if' neuron only, not {self.neuron!r}."
            )
        allowed = set(inspect.signature(ALL_NEURONS[self.neuron]).parameters) - {"z", "threshold", "v0"}
        unknown = sorted(set(dict(self.neuron_options)) - allowed)
        if unknown:
            raise ValueError(
                f"neuron_options {unknown} do not apply to neuron {self.neuron!r}; it takes "
                f"{sorted(allowed) or 'none'}."
            )

    def neuron_option(self, name: str) -> Any:
        """A neuron option as the neuron runs it: the given value, else the neuron function's default."""
        options = dict(self.neuron_options)
        if name in options:
            return options[name]
        return inspect.signature(ALL_NEURONS[self.neuron]).parameters[name].default

    @property
    def prerun_steps(self) -> int:
        """Network-wide pre-run steps before the readout window (cos_network, srp; else 0)."""
        if self.neuron not in NETWORK_PRERUN_NEURONS:
            return 0
        return int(self.neuron_option("prerun"))

    def simulated_steps(self, num_steps: int) -> int:
        """Steps :func:`spiking_apply` simulates for a readout of ``num_steps`` steps.

        ``ρ + T`` with a network-wide pre-run; ``max(T, ρ)`` for the reference COS schedule, whose
        layers pre-run on the first ρ steps of their input (a shorter readout is the causal prefix);
        else T.
        """
        if self.neuron == "cos":
            return max(num_steps, int(self.neuron_option("prerun")))
        return self.prerun_steps + num_steps

    def clone(self, **updates: Any) -> SpikingNetwork:
        """A copy with fields replaced; other names are the ANN's fields (e.g. ``pooling="max_gate"``)."""
        own = {f.name for f in dataclasses.fields(self)}
        ann_updates = {k: v for k, v in updates.items() if k not in own}
        updates = {k: v for k, v in updates.items() if k in own}
        if ann_updates:
            updates["ann"] = updates.get("ann", self.ann).clone(**ann_updates)
        return dataclasses.replace(self, **updates)

    def init(self, rngs, images: jax.Array, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The variable tree, as the ANN's ``init`` on ``images [B, ...]`` (the SNN's tree is the ANN's)."""
        return self.ann.init(rngs, images, *args, **kwargs)

    def _neuron(self, module: nn.Module, z: jax.Array, theta: jax.Array) -> jax.Array:
        """The spiking layer ``module`` over its input currents ``z [T, B, ...]``."""
        if module.has_variable(CALIBRATION, "membrane") or _has_bias_correction(module):
            if self.neuron != "if":
                raise ValueError(
                    f"activation layer {_path(module)!r} carries calibration corrections, which are "
                    f"defined for the 'if' neuron, not {self.neuron!r}."
                )
            z = _bias_corrected(module, z)
            start = initial_membrane(z.shape[1:], jnp.broadcast_to(theta, z.shape[1:]), self.v0, z.dtype)
            if module.has_variable(CALIBRATION, "membrane"):
                offset = module.get_variable(CALIBRATION, "membrane").astype(z.dtype)
                start = start + jnp.broadcast_to(offset, start.shape)
            return if_neuron_with_state(z, theta, membrane=start, surrogate=self.surrogate)[0]
        if self.surrogate is not None:
            return if_neuron(z, theta, self.v0, surrogate=self.surrogate)
        return ALL_NEURONS[self.neuron](z, theta, v0=self.v0, **dict(self.neuron_options))

    def _layer_mode(self, variables, inputs, args, kwargs, record):
        num_steps, batch = inputs.shape[0], inputs.shape[1]
        ann = self.ann
        if getattr(ann, "pooling", None) == "max_gate":  # snnjax ConvNet's spiking max-pool gate
            ann = ann.clone(pooling=_unfold_time(spiking_max_pool_gate, num_steps))
        found = []

        def spike(module, x):
            z = x.reshape(num_steps, -1, *x.shape[1:])
            y = self._neuron(module, z, _threshold(module, z.dtype))
            found.append(_path(module))
            if record is not None:
                record[_path(module)] = (z, y)
            return y.reshape(x.shape)

        flat = inputs.reshape(num_steps * batch, *inputs.shape[2:])
        with nn.intercept_methods(swapping_interceptor(spike)):
            outputs = ann.apply(variables, flat, *args, **kwargs)
        _check_found(found, self.ann)
        return jax.tree.map(lambda y: y.reshape(num_steps, batch, *y.shape[1:]), outputs)

    def _one_step(self, variables, membranes, x, args, kwargs):
        """One timestep of the whole network: ``(membranes, x [B, ...]) -> (membranes, outputs)``."""
        new_membranes: dict[str, jax.Array] = {}

        def spike(module, z):
            key = _path(module)
            if module.has_variable(CALIBRATION, "membrane") or _has_bias_correction(module):
                raise ValueError(
                    f"activation layer {key!r} carries calibration corrections: run the calibrated SNN "
                    "in layer mode."
                )
            while key in new_membranes:  # a layer called twice per step keeps two membranes
                key += "#"
            theta = jnp.broadcast_to(_threshold(module, z.dtype), z.shape)
            membrane = (
                initial_membrane(z.shape, theta, self.v0, z.dtype) if membranes is None else membranes[key]
            )
            new_membranes[key], output = if_step(membrane, z, theta, surrogate=self.surrogate)
            return output

        with nn.intercept_methods(swapping_interceptor(spike)):
            outputs = self.ann.apply(variables, x, *args, **kwargs)
        _check_found(list(new_membranes), self.ann)
        return new_membranes, outputs

    def _step_mode(self, variables, step_input, num_steps, args, kwargs):
        """``step_input(t)`` gives the input of step t (a traced index inside the scan)."""
        membranes, first = self._one_step(variables, None, step_input(0), args, kwargs)

        def step(carry, t):
            return self._one_step(variables, carry, step_input(t), args, kwargs)

        unroll = STEP_UNROLL.get(jax.default_backend(), STEP_UNROLL["default"])
        _, later = jax.lax.scan(step, membranes, jnp.arange(1, num_steps), unroll=unroll)
        return jax.tree.map(lambda a, b: jnp.concatenate([a[None], b], axis=0), first, later)

    def apply(self, variables: Variables, inputs: jax.Array, *args: Any, **kwargs: Any) -> Any:
        """Runs the SNN on a time-major input sequence.

        Args:
          variables: the SNN variables.
          inputs: ``[T, B, ...]``, the input of every step.
          *args: passed to the ANN's ``__call__`` after the input (e.g. ``train=False``).
          **kwargs: likewise.

        Returns:
          The ANN's outputs with a leading time axis, e.g. logits ``[T, B, classes]``.
        """
        if self.mode == "step":
            return self._step_mode(variables, lambda t: inputs[t], inputs.shape[0], args, kwargs)
        return self._layer_mode(variables, inputs, args, kwargs, None)

    def apply_recorded(
        self, variables: Variables, inputs: jax.Array, *args: Any, **kwargs: Any
    ) -> tuple[Any, dict[str, tuple[jax.Array, jax.Array]]]:
        """Layer-mode :meth:`apply` that also returns every spiking layer's input and output.

        Returns:
          ``(outputs, {module path: (z [T, B, ...], y [T, B, ...])})``, layers in call order.
        """
        record: dict[str, tuple[jax.Array, jax.Array]] = {}
        outputs = dataclasses.replace(self, mode="layer")._layer_mode(variables, inputs, args, kwargs, record)
        return outputs, record


def _has_bias_correction(module: nn.Module) -> bool:
    return module.has_variable(CALIBRATION, "bias") or module.has_variable(CALIBRATION, "step_bias")


def _bias_corrected(module: nn.Module, z: jax.Array) -> jax.Array:
    """``z [T, B, ..., C]`` minus the layer's calibrated bias.

    ``bias [C]`` applies at every step, ``step_bias [T_cal, C]`` at steps ``t < T_cal`` (none after).
    """
    if module.has_variable(CALIBRATION, "bias"):
        z = z - jnp.broadcast_to(module.get_variable(CALIBRATION, "bias").astype(z.dtype), z.shape)
    if module.has_variable(CALIBRATION, "step_bias"):
        step_bias = module.get_variable(CALIBRATION, "step_bias").astype(z.dtype)[: z.shape[0]]
        step_bias = jnp.pad(step_bias, ((0, z.shape[0] - step_bias.shape[0]), (0, 0)))
        shape = (z.shape[0],) + (1,) * (z.ndim - 2) + (z.shape[-1],)
        z = z - jnp.broadcast_to(step_bias.reshape(shape), z.shape)
    return z


def _check_found(found: list[str], ann: nn.Module) -> None:
    if not found:
        known = ", ".join(cls.__name__ for cls in CONVERTIBLE_ACTIVATIONS)
        raise ValueError(
            f"{type(ann).__name__} calls no snnjax activation layer ({known}): there is nothing to turn "
            "into spiking neurons. Write the activations as those layers (a plain nn.relu call cannot be "
            "intercepted)."
        )


def _check_activation_field(ann_model: nn.Module) -> None:
    """snnjax-style models take an activation factory: refuse one the converter does not know."""
    activation = getattr(ann_model, "activation", None)
    if activation is None:
        return
    layer = getattr(activation, "func", activation)
    if layer not in CONVERTIBLE_ACTIVATIONS:
        known = ", ".join(cls.__name__ for cls in CONVERTIBLE_ACTIVATIONS)
        raise ValueError(
            f"The model's activation {activation!r} is not one the converter knows ({known}, or a "
            "functools.partial of one); refusing to convert rather than skipping it."
        )


def spiking_model(
    ann_model: nn.Module,
    *,
    v0: float = 0.5,
    fold_bn: bool = False,
    per_channel: bool = False,
    mode: str = "layer",
    neuron: str = "if",
    surrogate: Callable[[jax.Array], jax.Array] | None = None,
    neuron_options: Mapping[str, Any] | None = None,
) -> SpikingNetwork:
    """The SNN of ``ann_model``: the same module, its activation layers run as spiking neurons.

    Args:
      ann_model: any unbound Flax Linen module whose activations are snnjax activation layers.
      v0: initial membrane fraction (½ for QCFS, ``shift2`` for SlipReLU).
      fold_bn: the variables will have BatchNorm folded (``ann_to_snn_variables(..., fold_bn=True)``).
      per_channel: thresholds are per channel.
      mode: ``"layer"`` or ``"step"`` simulation (see :func:`spiking_apply`); same outputs.
      neuron: a key of :data:`ALL_NEURONS`: ``"if"`` (reference IF), ``"integrate_then_fire"`` or
        ``"signed_if"`` (SpikeConverter), or a low-latency neuron of :mod:`snnjax.low_latency`
        (``"burst"``, ``"group"``, ``"cos"``, ``"cos_network"``, ``"srp"``; layer mode).
      surrogate: opt-in surrogate derivative of the IF neuron's spike (:mod:`snnjax.surrogates`), for
        fine-tuning the SNN with ``jax.grad``; the default (None) is the exact neuron, whose gradient
        with respect to its input is zero.
      neuron_options: the low-latency neuron's options, e.g. ``{"max_spikes": 2}`` (burst, group) or
        ``{"prerun": 4}`` (cos, cos_network, srp).

    Returns:
      A :class:`SpikingNetwork` for :func:`spiking_apply`.

    Raises:
      ValueError: for an unknown mode or neuron, a neuron that step mode cannot run, or a model
        whose ``activation`` field is not a :data:`CONVERTIBLE_ACTIVATIONS` layer.
    """
    _check_activation_field(ann_model)
    return SpikingNetwork(
        ann_model,
        v0=v0,
        neuron=neuron,
        mode=mode,
        per_channel=per_channel,
        fold_bn=fold_bn,
        surrogate=surrogate,
        neuron_options=dict(neuron_options or {}),
    )


def _static_int(value: Any, name: str) -> int:
    """A Python int from an int-like static value (NumPy ints included); a clear error for tracers."""
    if isinstance(value, jax.core.Tracer):
        raise ValueError(
            f"{name} is a traced value; it sets array shapes, so it must be static: pass a Python int "
            "(e.g. with jax.jit(..., static_argnames=...))."
        )
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}.")
    return operator.index(value)


def spiking_apply(
    snn_model: SpikingNetwork,
    snn_variables: Variables,
    images: jax.Array,
    num_steps: int,
    *args: Any,
    **kwargs: Any,
) -> jax.Array:
    """Runs the SNN for ``num_steps`` steps on static images and returns the outputs of every step.

    The image is the analog input of the first layer at every step; the last layer stays analog.
    Layer mode: each synaptic layer runs once on the time-batched ``T·B`` batch and each spiking layer
    is one ``lax.scan`` over time. Step mode: the whole network advances one timestep at a time inside
    one ``lax.scan`` whose carry holds every membrane potential. Both give the same outputs. For an
    input that changes over time use :func:`spiking_apply_sequence`.

    Args:
      snn_model: from :func:`spiking_model`.
      snn_variables: from :func:`ann_to_snn_variables`.
      images: static input ``[B, ...]``, the same at every step (e.g. ``[B, H, W, C]``). Images of a
        higher rank than the model's first convolution reads (e.g. a time-major sequence) are
        refused: pass a sequence to :func:`spiking_apply_sequence`.
      num_steps: T ≥ 1, a static int (Python or NumPy).
      *args: passed to the ANN's ``__call__`` (default: ``train=False`` when it takes ``train``).
      **kwargs: likewise.

    A neuron with a network-wide pre-run (``cos_network``, ``srp``) runs ``ρ + T`` steps and returns
    the last T (see :meth:`SpikingNetwork.simulated_steps`); the total latency of every neuron is
    :func:`snnjax.low_latency.total_latency`.

    Returns:
      Per-step outputs of the readout window, e.g. logits ``[T, B, num_classes]`` (average them over t
      for the prediction at t; see :func:`cumulative_mean_logits`).

    Raises:
      ValueError: for T < 1, a traced T, or images of a higher rank than the first convolution reads.
    """
    num_steps = _static_int(num_steps, "num_steps (T)")
    if num_steps < 1:
        raise ValueError(f"num_steps (T) must be a positive int, got {num_steps!r}.")
    if not args and not kwargs:
        kwargs = inference_kwargs(snn_model.ann)
    _check_static_images(snn_model, snn_variables, images, args, kwargs)
    if snn_model.mode == "step":
        return snn_model._step_mode(snn_variables, lambda t: images, num_steps, args, kwargs)
    prerun, simulated = snn_model.prerun_steps, snn_model.simulated_steps(num_steps)
    inputs = jnp.broadcast_to(images, (simulated, *images.shape))
    outputs = snn_model.apply(snn_variables, inputs, *args, **kwargs)
    if simulated == num_steps:
        return outputs
    return jax.tree.map(lambda y: y[prerun : prerun + num_steps], outputs)


def spiking_apply_sequence(
    snn_model: SpikingNetwork, snn_variables: Variables, inputs: jax.Array, *args: Any, **kwargs: Any
) -> jax.Array:
    """Runs the SNN on an explicit time-major input sequence (rate-coded or event input).

    Args:
      snn_model: from :func:`spiking_model`.
      snn_variables: from :func:`ann_to_snn_variables`.
      inputs: ``[T, B, ...]``: ``inputs[t]`` is the input of step t.
      *args: passed to the ANN's ``__call__`` (default: ``train=False`` when it takes ``train``).
      **kwargs: likewise.

    Returns:
      Per-step outputs ``[T, B, ...]``; a constant sequence gives :func:`spiking_apply`'s result.
    """
    inputs = jnp.asarray(inputs)
    if inputs.ndim < 2 or inputs.shape[0] < 1:
        raise ValueError(f"inputs must be time-major [T, B, ...] with T >= 1, got shape {inputs.shape}.")
    if not args and not kwargs:
        kwargs = inference_kwargs(snn_model.ann)
    return snn_model.apply(snn_variables, inputs, *args, **kwargs)


def _check_static_images(
    snn_model: SpikingNetwork, variables: Variables, images: jax.Array, args, kwargs
) -> None:
    """Refuses images of a higher rank than the model's first convolution reads.

    The first ``nn.Conv``/snnjax ``Conv`` call is found by tracing one step abstractly: it reads
    ``[B, *spatial, C]``, rank ``2 + len(kernel_size)``. A larger rank means a leading axis too many,
    e.g. a time-major sequence passed as images (Flax convolutions would fold it into the batch and
    run). Models whose first layer is not a convolution are not checked.
    """
    first: list[tuple[nn.Module, int]] = []

    def interceptor(next_fun, call_args, call_kwargs, context):
        if not first and context.method_name == "__call__" and isinstance(context.module, (nn.Conv, Conv)):
            first.append((context.module, call_args[0].ndim))
        return next_fun(*call_args, **call_kwargs)

    def too_many_axes() -> str | None:
        if not first:
            return None
        module, rank = first[0]
        size = module.kernel_size
        expected = 2 + (len(size) if isinstance(size, tuple | list) else 1)
        return f"the first convolution, {_path(module)!r}, reads rank {expected}" if rank > expected else None

    layer_mode = dataclasses.replace(snn_model, mode="layer")
    try:
        with nn.intercept_methods(interceptor):
            steps = layer_mode.simulated_steps(1)
            jax.eval_shape(
                lambda v, x: layer_mode.apply(v, jnp.broadcast_to(x, (steps, *x.shape)), *args, **kwargs),
                variables,
                images,
            )
    except Exception:
        if too_many_axes() is None:
            raise  # a failure of its own, not caused by the input's rank
    reason = too_many_axes()
    if reason is not None:
        raise ValueError(
            f"spiking_apply takes static images [B, ...] ({reason}), repeated every step; got shape "
            f"{images.shape}, a leading axis too many. For a time-major input sequence [T, B, ...] use "
            "snnjax.spiking_apply_sequence."
        )


def cumulative_mean_logits(logits: jax.Array) -> jax.Array:
    """Running mean over time: ``out[t] = mean(logits[:t+1])``, the SNN readout after t+1 steps.

    Args:
      logits: per-step logits ``[T, B, num_classes]``.

    Returns:
      ``[T, B, num_classes]``.
    """
    steps = jnp.arange(1, logits.shape[0] + 1, dtype=logits.dtype).reshape(-1, 1, 1)
    return jnp.cumsum(logits, axis=0) / steps
