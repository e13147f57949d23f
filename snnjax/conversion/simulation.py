"""Running a converted SNN: any JAX model with its activation sites swapped by interception.

`spiking_model` wraps an ANN in a `SpikingNetwork`. Applying it runs the ANN's own code
once with every *activation site* replaced by a spiking neuron:

* a snnjax activation layer of a Flax Linen model (`snnjax.nn.layers.ThresholdActivation`, or
  `snnjax.nn.layers.Activation` for a calibrated ReLU), intercepted with
  ``flax.linen.intercept_methods``, θ read from the layer's ``threshold`` variable;
* a snnjax NNX activation layer (`snnjax.nnx`) of a Flax NNX model, θ from its ``threshold``
  parameter (or calibrated);
* a ReLU written as a function (``nn.relu``, ``jax.nn.relu``, ``nnx.relu``) in a Linen or NNX model
  or a plain function ``apply(params, x)``, intercepted by `snnjax.conversion.interception.relu_sites`,
  θ from the variables' ``"sites"`` collection (`snnjax.calibrate_thresholds`).

Every Linen ``nn.BatchNorm`` whose statistics were folded away becomes the bias it left. Sites are
found by their class or function and keyed by their module path (and call order), never by name, so the
activation may be a constructor field, created inside ``__call__``, sit inside ``nn.Sequential``,
nested submodules or residual blocks. Any other activation function (``gelu``, ``sigmoid``, ``tanh``,
every name in `ANALOG_FUNCTIONS`, and the ``tanh``/``logistic``/``erf`` primitives) is refused by
`spiking_apply`, naming the call site, rather than run as a hybrid analog/spiking network. A ReLU
written out by hand (``jnp.maximum(x, 0)``, ``x * (x > 0)``) is ordinary arithmetic to JAX and is not
caught.

Two simulation modes, same outputs (tested):

* **layer** (default): time is folded into the batch, ``[T, B, ...] → [T·B, ...]``, so every synaptic
  layer runs once on the ANN's own layout (a model may flatten with ``x.reshape((x.shape[0], -1))``);
  each spiking layer unfolds its input to ``[T, B, ...]`` for one ``lax.scan`` over time and folds the
  result back (reshapes that move no data).
* **step**: the whole network advances one timestep at a time inside one ``lax.scan`` whose carry is a
  dict of every spiking layer's membrane (keyed by module path); memory does not grow with T.

Inputs: `spiking_apply` takes static images ``[B, ...]`` (the analog image is the input at every
step, the reference setting); `spiking_apply_sequence` takes an explicit time-major sequence
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
from flax import nnx as flax_nnx

from snnjax.conversion import interception, neuron_registry
from snnjax.conversion.frontends import NNXModel, as_model, model_name, sites_of
from snnjax.conversion.neuron_registry import NEURONS
from snnjax.core.neurons import if_neuron, if_neuron_with_state, if_step, initial_membrane
from snnjax.nn.layers import Activation, Conv, ThresholdActivation, threshold_from_param
from snnjax.nn.models import spiking_max_pool_gate

__all__ = [
    "ANALOG_FUNCTIONS",
    "CALIBRATION",
    "CONVERTIBLE_ACTIVATIONS",
    "MATMUL_PRECISIONS",
    "SIMULATION_DTYPES",
    "SIMULATION_MODES",
    "SpikingNetwork",
    "analog_calls",
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
# Per-layer corrections that snnjax.conversion.calibration writes into the "calibration" variable collection.
CALIBRATION = "calibration"
# Step mode's time scan is unrolled by this many steps. On the 2-core CPU two unrolled timesteps let
# XLA's executor run layer l of step t + 1 beside layer l + 1 of step t (its ops are too small to
# fill both cores alone): ResNet-20, T = 32, batch 64, 1436 → 1230 ms, identical outputs; VGG-16 at
# batch 16 (conv-bound) ±3 %; unrolling 4 was slower than 2 (benchmarks/results/README.md).
# Accelerators: not measured, left rolled.
STEP_UNROLL = {"cpu": 2, "default": 1}
SIMULATION_DTYPES = ("float32", "bfloat16")  # dtypes convert.py simulates in (config.snn_dtype)
MATMUL_PRECISIONS = ("default", "high", "highest")  # jax.default_matmul_precision values


def inference_kwargs(module: Any) -> dict[str, Any]:
    """``{"train": False}`` if a Linen ``module.__call__`` takes ``train`` (snnjax's models), else ``{}``.

    An NNX model is put in inference mode by `snnjax.conversion.frontends.as_model` instead; a plain
    function is called as it is.
    """
    if not isinstance(module, nn.Module):
        return {}
    parameters = inspect.signature(type(module).__call__).parameters
    return {"train": False} if "train" in parameters else {}


def _path(module: nn.Module) -> str:
    return "/".join(module.path)


def _threshold(module: nn.Module, dtype) -> jax.Array:
    """θ of an activation layer, from its ``threshold`` variable (the SNN's, i.e. after conversion)."""
    if not module.has_variable("params", "threshold"):
        raise ValueError(
            f"activation layer {_path(module)!r} has no 'threshold' variable: convert the ANN variables "
            "with snnjax.convert_variables (a plain-ReLU ANN needs snnjax.calibrate_thresholds first)."
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
    """What a folded BatchNorm leaves: ``x + b`` (as `snnjax.nn.layers.FoldedBatchNorm`)."""
    bias = module.get_variable("params", "bias")
    return x + jnp.broadcast_to(bias.astype(x.dtype), x.shape)


def swapping_interceptor(spike: Callable[[nn.Module, jax.Array], jax.Array] | None):
    """The interceptor that makes an ANN the SNN.

    Every activation layer call becomes ``spike(layer, x)`` (``spike=None``: the layer runs as it is),
    and every folded BatchNorm adds the bias it left.
    """

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "__call__" and (args or kwargs):
            x = interception.call_input(next_fun, args, kwargs)[1]  # positional or keyword
            if spike is not None and isinstance(module, CONVERTIBLE_ACTIVATIONS):
                return spike(module, x)
            if _folded_batchnorm(module):
                return _folded_bias(module, x)
        return next_fun(*args, **kwargs)

    return interceptor


def apply_folded(model: Any, variables: Variables, inputs: jax.Array) -> Any:
    """The ANN's outputs with folded variables: each folded BatchNorm adds the bias it left.

    Args:
      model: the ANN (any frontend: see `snnjax.conversion.frontends.as_model`).
      variables: its variables after `snnjax.fold_batchnorm`, in the frontend's form.
      inputs: ``[B, ...]``.
    """
    model = as_model(model)
    with nn.intercept_methods(swapping_interceptor(None)):
        return model.apply(variables, inputs, **inference_kwargs(model))


def _site_threshold(variables: Variables, key: interception.SiteKey, dtype) -> jax.Array:
    """θ of a parameter-free site (a ReLU function call, an NNX ``Activation``) from ``"sites"``."""
    node: Any = sites_of(variables)
    for part in key:
        if not isinstance(node, Mapping) or part not in node:
            raise ValueError(
                f"activation site {interception.site_name(key)!r} has no threshold θ: a ReLU written as a "
                "function (or a parameter-free snnjax.nnx.Activation) gets its θ from data: call "
                "snnjax.calibrate_thresholds(model, variables, images) and convert what it returns."
            )
        node = node[part]
    return jnp.asarray(node).astype(dtype)


def _nnx_threshold(variables: Variables, layer: Any, path: interception.SiteKey, dtype) -> jax.Array:
    """θ of a snnjax NNX activation layer: its ``threshold`` parameter, else its calibrated site."""
    threshold = getattr(layer, "threshold", None)
    if threshold is not None:  # the stored λ, mapped by the layer's own parameterization
        return threshold_from_param(jnp.asarray(threshold[...]), layer.parameterization).astype(dtype)
    return _site_threshold(variables, path, dtype)


def _call_intercepted(ann, variables, x, args, kwargs, spike) -> Any:
    """``ann`` (any frontend) on ``x`` with every activation site replaced: ``spike(name, θ, x, layer)``.

    Sites: Linen snnjax activation layers (``layer`` the bound module), ReLU function calls and NNX
    snnjax activation layers (``layer`` None: they carry no calibration corrections). Folded Linen
    BatchNorms add the bias they left.
    """

    def linen_layer(module, z):
        with jax.disable_jit(False):  # relu_sites inlines the model's jits, not the neuron's scan
            return spike(_path(module), _threshold(module, z.dtype), z, module)

    def function_site(key, z):
        return spike(interception.site_name(key), _site_threshold(variables, key, z.dtype), z, None)

    def nnx_layer(layer, path, z):
        return spike(interception.site_name(path), _nnx_threshold(variables, layer, path, z.dtype), z, None)

    with nn.intercept_methods(swapping_interceptor(linen_layer)), interception.relu_sites(function_site):
        if isinstance(ann, NNXModel):
            return ann.apply(variables, x, *args, layer_handler=nnx_layer, **kwargs)
        return ann.apply(variables, x, *args, **kwargs)


def linear_apply(model: Any, variables: Variables, inputs: jax.Array) -> Any:
    """The ANN (any frontend) on ``inputs`` ``[B, ...]`` with every activation site the identity.

    What its layers and the operations between them compute, with no threshold or spike that a
    rounding difference could flip: exports compare it with the network they wrote.
    """
    model = as_model(model)
    return _call_intercepted(model, variables, inputs, (), inference_kwargs(model), lambda *site: site[2])


def _unfold_time(fn: Callable[[jax.Array], jax.Array], num_steps: int) -> Callable[[jax.Array], jax.Array]:
    """``fn`` over time-major ``[T, B, ...]`` applied to a time-folded ``[T·B, ...]`` array."""

    def folded(x):
        y = fn(x.reshape(num_steps, -1, *x.shape[1:]))
        return y.reshape(y.shape[0] * y.shape[1], *y.shape[2:])

    return folded


@dataclasses.dataclass(frozen=True)
class SpikingNetwork:
    """An ANN module run as an SNN (see the module docstring). Build it with `spiking_model`.

    Its variables are the ANN's variables after `snnjax.convert_variables` (same tree, each
    activation's ``threshold`` holding θ; BatchNorm folded or not).

    Attributes:
      ann: the ANN: an unbound Flax Linen module, or the frontend of an NNX module or a function
        (`snnjax.conversion.frontends.as_model`).
      v0: initial membrane as a fraction of θ.
      neuron: a key of `snnjax.conversion.neuron_registry.NEURONS`.
      mode: ``"layer"`` or ``"step"``.
      per_channel: the thresholds are per channel (informational: θ's shape comes from the variables).
      fold_bn: the variables have BatchNorm folded (informational: folded layers are recognised by
        their variables).
      surrogate: the IF neuron's surrogate derivative (see `snnjax.core.surrogates`); None = the exact
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
        spec = neuron_registry.neuron(self.neuron)
        if self.mode == "step" and not spec.step:
            steppable = [n.name for n in NEURONS.values() if n.step]
            raise ValueError(
                f"step mode runs only the neuron {' / '.join(map(repr, steppable))}; neuron {self.neuron!r} "
                "needs mode='layer' "
                "(it sees a layer's whole window: integrate_then_fire, the pre-run of cos/srp)."
            )
        if self.surrogate is not None and not spec.surrogate:
            takes = [n.name for n in NEURONS.values() if n.surrogate]
            raise ValueError(
                f"a surrogate gradient is defined for {', '.join(takes)} only, not {self.neuron!r}."
            )
        allowed = set(spec.options)
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
        return NEURONS[self.neuron].options[name]

    @property
    def spec(self) -> neuron_registry.Neuron:
        """The neuron's record (`snnjax.conversion.neuron_registry`)."""
        return NEURONS[self.neuron]

    @property
    def prerun_steps(self) -> int:
        """Network-wide pre-run steps before the readout window (cos_network, srp; else 0)."""
        if self.spec.prerun != "network":
            return 0
        return int(self.neuron_option("prerun"))

    def simulated_steps(self, num_steps: int) -> int:
        """Steps `spiking_apply` simulates for a readout of ``num_steps`` steps.

        ``ρ + T`` with a network-wide pre-run; ``max(T, ρ)`` for the reference COS schedule, whose
        layers pre-run on the first ρ steps of their input (a shorter readout is the causal prefix);
        else T.
        """
        prerun = int(self.neuron_option("prerun")) if self.spec.prerun != "none" else 0
        return self.spec.simulated_steps(num_steps, prerun)

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
        if not isinstance(self.ann, nn.Module):
            raise TypeError(
                f"init is the Linen ANN's; {model_name(self.ann)} is initialized by its own code."
            )
        return self.ann.init(rngs, images, *args, **kwargs)

    def _neuron(self, module: nn.Module | None, z: jax.Array, theta: jax.Array) -> jax.Array:
        """The spiking layer over its input currents ``z [T, B, ...]`` (``module``: Linen layer or None)."""
        calibrated = module is not None and (
            module.has_variable(CALIBRATION, "membrane") or _has_bias_correction(module)
        )
        if calibrated:
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
        return self.spec.fn(z, theta, v0=self.v0, **dict(self.neuron_options))

    def _layer_mode(self, variables, inputs, args, kwargs, record):
        num_steps, batch = inputs.shape[0], inputs.shape[1]
        ann = self.ann
        if getattr(ann, "pooling", None) == "max_gate":  # snnjax ConvNet's spiking max-pool gate
            ann = ann.clone(pooling=_unfold_time(spiking_max_pool_gate, num_steps))
        found = []

        def spike(name, theta, x, module):
            _check_batch_major(name, x, num_steps * batch, f"T·B = {num_steps}·{batch}")
            z = x.reshape(num_steps, -1, *x.shape[1:])
            y = self._neuron(module, z, theta)
            found.append(name)
            if record is not None:
                record[name] = (z, y)
            return y.reshape(x.shape)

        flat = inputs.reshape(num_steps * batch, *inputs.shape[2:])
        outputs = _call_intercepted(ann, variables, flat, args, kwargs, spike)
        _check_found(found, self.ann)
        return jax.tree.map(lambda y: y.reshape(num_steps, batch, *y.shape[1:]), outputs)

    def _one_step(self, variables, membranes, x, args, kwargs):
        """One timestep of the whole network: ``(membranes, x [B, ...]) -> (membranes, outputs)``."""
        new_membranes: dict[str, jax.Array] = {}

        def spike(key, theta, z, module):
            _check_batch_major(key, z, x.shape[0], "B")
            if module is not None and (
                module.has_variable(CALIBRATION, "membrane") or _has_bias_correction(module)
            ):
                raise ValueError(
                    f"activation layer {key!r} carries calibration corrections: run the calibrated SNN "
                    "in layer mode."
                )
            while key in new_membranes:  # a layer called twice per step keeps two membranes
                key += "#"
            theta = jnp.broadcast_to(theta, z.shape)
            membrane = (
                initial_membrane(z.shape, theta, self.v0, z.dtype) if membranes is None else membranes[key]
            )
            new_membranes[key], output = if_step(membrane, z, theta, surrogate=self.surrogate)
            return output

        outputs = _call_intercepted(self.ann, variables, x, args, kwargs, spike)
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
        """Layer-mode `apply` that also returns every spiking layer's input and output.

        Returns:
          ``(outputs, {module path: (z [T, B, ...], y [T, B, ...])})``, layers in call order.
        """
        record: dict[str, tuple[jax.Array, jax.Array]] = {}
        outputs = dataclasses.replace(self, mode="layer")._layer_mode(variables, inputs, args, kwargs, record)
        return outputs, record

    def thresholds(
        self, variables: Variables, inputs: jax.Array, *args: Any, **kwargs: Any
    ) -> dict[str, Any]:
        """θ of every spiking site, wherever it is stored (a layer's variable, ``"sites"``, NNX).

        Args:
          variables: the SNN variables.
          inputs: ``[T, B, ...]`` (only its shape is used: the layers' work is dead code to XLA).
          *args: passed to the ANN's ``__call__``.
          **kwargs: likewise.

        Returns:
          ``{site name: θ}`` (``[]`` or ``[C]``), the names of `apply_recorded`.
        """

        def collect(v, x):
            found: dict[str, jax.Array] = {}

            def spike(name, theta, z, module):
                found.setdefault(name, jnp.asarray(theta))
                return z

            _call_intercepted(self.ann, v, x.reshape(-1, *x.shape[2:]), args, kwargs, spike)
            return found

        return jax.jit(collect)(variables, inputs)


def _check_batch_major(name: str, x: jax.Array, size: int, what: str) -> None:
    """Refuses a site whose input is not batch-major (e.g. inside ``jax.vmap`` over examples)."""
    if x.ndim == 0 or x.shape[0] != size:
        raise ValueError(
            f"activation site {name!r} sees an input of shape {x.shape}, whose leading axis is not the "
            f"batch ({what}): the converter runs a site on a batch-major activation, and here the batch "
            "is hidden (jax.vmap over examples, or a ReLU applied to something else, e.g. a parameter). "
            "Apply the model to the whole batch, and keep ReLUs for activations."
        )


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


def _check_found(found: list[str], ann: Any) -> None:
    if not found:
        known = ", ".join(cls.__name__ for cls in CONVERTIBLE_ACTIVATIONS)
        raise ValueError(
            f"{model_name(ann)} calls no activation the converter can make spiking (a snnjax layer: "
            f"{known}, or its snnjax.nnx form; or a ReLU function call: nn.relu, jax.nn.relu, nnx.relu): "
            "there is nothing to turn into spiking neurons."
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
    ann_model: Any,
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
      ann_model: the ANN, in any frontend: an unbound Flax Linen module, a Flax NNX module (taken in
        inference mode; the module itself is not changed) or a function ``apply(params, x)``. Its
        activation sites are snnjax activation layers (Linen, or `snnjax.nnx`) and ReLU
        function calls (``nn.relu``, ``jax.nn.relu``, ``nnx.relu``; see
        `snnjax.conversion.interception`).
      v0: initial membrane fraction (½ for QCFS, ``shift2`` for SlipReLU).
      fold_bn: the variables will have BatchNorm folded (``convert_variables(..., fold_bn=True)``).
      per_channel: thresholds are per channel.
      mode: ``"layer"`` or ``"step"`` simulation (see `spiking_apply`); same outputs.
      neuron: a key of `snnjax.conversion.neuron_registry.NEURONS`: ``"if"`` (reference IF),
        ``"integrate_then_fire"`` or ``"signed_if"`` (SpikeConverter), ``"multi_spike_if"`` (sinabs's
        IAF), or a low-latency neuron of `snnjax.conversion.low_latency` (``"burst"``, ``"group"``,
        ``"cos"``, ``"cos_network"``, ``"srp"``; layer mode).
      surrogate: opt-in surrogate derivative of the IF neuron's spike (`snnjax.core.surrogates`), for
        fine-tuning the SNN with ``jax.grad``; the default (None) is the exact neuron, whose gradient
        with respect to its input is zero.
      neuron_options: the low-latency neuron's options, e.g. ``{"max_spikes": 2}`` (burst, group) or
        ``{"prerun": 4}`` (cos, cos_network, srp).

    Returns:
      A `SpikingNetwork` for `spiking_apply`.

    Raises:
      ValueError: for an unknown mode or neuron, a neuron that step mode cannot run, or a model
        whose ``activation`` field is not a `CONVERTIBLE_ACTIVATIONS` layer.
    """
    ann_model = as_model(ann_model)
    if isinstance(ann_model, nn.Module):
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
    input that changes over time use `spiking_apply_sequence`.

    Args:
      snn_model: from `spiking_model`.
      snn_variables: from `convert_variables`.
      images: static input ``[B, ...]``, the same at every step (e.g. ``[B, H, W, C]``). Images of a
        higher rank than the model's first convolution reads (e.g. a time-major sequence) are
        refused: pass a sequence to `spiking_apply_sequence`.
      num_steps: T ≥ 1, a static int (Python or NumPy).
      *args: passed to the ANN's ``__call__`` (default: ``train=False`` when it takes ``train``).
      **kwargs: likewise.

    A neuron with a network-wide pre-run (``cos_network``, ``srp``) runs ``ρ + T`` steps and returns
    the last T (see `SpikingNetwork.simulated_steps`); the total latency of every neuron is
    `snnjax.conversion.neuron_registry.Neuron.total_latency`.

    Returns:
      Per-step outputs of the readout window, e.g. logits ``[T, B, num_classes]`` (average them over t
      for the prediction at t; see `cumulative_mean_logits`). An image with a non-finite pixel
      gives NaN outputs at every step, as the ANN does: a neuron whose membrane is NaN never reaches
      ``v >= θ``, so without this the network would go silent and still name a class.

    Raises:
      ValueError: for T < 1, a traced T, images of a higher rank than the first convolution reads,
        or images whose last axis is not what the first synaptic layer reads.
    """
    num_steps = _static_int(num_steps, "num_steps (T)")
    if num_steps < 1:
        raise ValueError(f"num_steps (T) must be a positive int, got {num_steps!r}.")
    if not args and not kwargs:
        kwargs = inference_kwargs(snn_model.ann)
    images = jnp.asarray(images)
    _check_input(snn_model, snn_variables, images, args, kwargs, sequence=False)
    if snn_model.mode == "step":
        outputs = snn_model._step_mode(snn_variables, lambda t: images, num_steps, args, kwargs)
    else:
        prerun, simulated = snn_model.prerun_steps, snn_model.simulated_steps(num_steps)
        inputs = jnp.broadcast_to(images, (simulated, *images.shape))
        outputs = snn_model.apply(snn_variables, inputs, *args, **kwargs)
        if simulated != num_steps:
            outputs = jax.tree.map(lambda y: y[prerun : prerun + num_steps], outputs)
    bad = ~jnp.all(jnp.isfinite(images.reshape(images.shape[0], -1)), axis=1)  # [B]
    return _poisoned(outputs, jnp.broadcast_to(bad, (num_steps, images.shape[0])))


def spiking_apply_sequence(
    snn_model: SpikingNetwork,
    snn_variables: Variables,
    inputs: jax.Array,
    *args: Any,
    num_steps: int | None = None,
    **kwargs: Any,
) -> jax.Array:
    """Runs the SNN on an explicit time-major input sequence (rate-coded or event input).

    The leading axis is time. What is checked (at trace time, no cost in the simulation):

    * ``inputs[t]`` must be a batch the model reads: rank 2 or more; for a first layer that is a
      convolution, exactly the rank it reads (a static batch ``[B, H, W, C]`` is one axis short:
      use `spiking_apply`); and a last axis of the size the first synaptic layer reads.
    * A batch-major ``[B, T, ...]`` sequence has the same rank and trailing axes as ``[T, B, ...]``, so
      its shape alone cannot give it away. Pass ``num_steps=T`` and the leading axis is checked
      against it: a batch-major input is then refused whenever ``B != T``. (With ``B == T`` no check
      can tell the two apart.)

    Args:
      snn_model: from `spiking_model`.
      snn_variables: from `convert_variables`.
      inputs: ``[T, B, ...]``: ``inputs[t]`` is the input of step t.
      *args: passed to the ANN's ``__call__`` (default: ``train=False`` when it takes ``train``).
      num_steps: the T the caller means (optional; checked against ``inputs.shape[0]``).
      **kwargs: passed to the ANN's ``__call__``.

    Returns:
      Per-step outputs ``[T, B, ...]``; a constant sequence gives `spiking_apply`'s result. An
      example whose input holds a non-finite value at step t has NaN outputs from step t on.

    Raises:
      ValueError: for an input that is not a time-major sequence of batches the model reads (above).
    """
    inputs = jnp.asarray(inputs)
    if inputs.ndim < 2 or inputs.shape[0] < 1:
        raise ValueError(f"inputs must be time-major [T, B, ...] with T >= 1, got shape {inputs.shape}.")
    if num_steps is not None and _static_int(num_steps, "num_steps (T)") != inputs.shape[0]:
        raise ValueError(
            f"inputs has shape {inputs.shape}: its leading (time) axis is {inputs.shape[0]}, not "
            f"num_steps={num_steps}. The sequence must be time-major [T, B, ...]; a batch-major "
            "[B, T, ...] array goes through jnp.swapaxes(inputs, 0, 1) first."
        )
    if not args and not kwargs:
        kwargs = inference_kwargs(snn_model.ann)
    _check_input(snn_model, snn_variables, inputs[0], args, kwargs, sequence=True)
    outputs = snn_model.apply(snn_variables, inputs, *args, **kwargs)
    bad = ~jnp.all(jnp.isfinite(inputs.reshape(*inputs.shape[:2], -1)), axis=2)  # [T, B]
    # A non-finite input poisons the membranes it reaches from its step on.
    return _poisoned(outputs, jax.lax.cummax(bad.astype(jnp.int32), axis=0).astype(bool))


def _poisoned(outputs: Any, bad: jax.Array) -> Any:
    """``outputs`` (leaves ``[T, B, ...]``) with NaN wherever ``bad [T, B]`` is set (floating leaves)."""

    def poison(y):
        if not jnp.issubdtype(y.dtype, jnp.floating) or y.ndim < 2 or y.shape[:2] != bad.shape:
            return y
        return jnp.where(bad.reshape(*bad.shape, *(1,) * (y.ndim - 2)), jnp.nan, y)

    return jax.tree.map(poison, outputs)


# Nonlinear functions a model may call outside snnjax's activation layers. The converter turns only
# those layers into spiking neurons; any of these left in the SNN would run analog (a hybrid network).
# jax.nn's activations appear in a jaxpr as a custom_jvp call (relu, relu6), a jit call named after
# the function (most others), or, once inlined, as these primitives (tanh, sigmoid, exact gelu).
ANALOG_FUNCTIONS = frozenset(
    {
        "relu",
        "relu6",
        "celu",
        "elu",
        "gelu",
        "glu",
        "hard_sigmoid",
        "hard_silu",
        "hard_swish",
        "hard_tanh",
        "leaky_relu",
        "log_sigmoid",
        "mish",
        "selu",
        "sigmoid",
        "silu",
        "soft_sign",
        "softplus",
        "sparse_plus",
        "sparse_sigmoid",
        "squareplus",
        "swish",
        "tanh",
    }
)
ANALOG_PRIMITIVES = frozenset({"tanh", "logistic", "erf", "erfc"})


def _function_name(eqn) -> str | None:
    """The jax.nn function an equation calls, if it is one of `ANALOG_FUNCTIONS`."""
    if eqn.primitive.name in ANALOG_PRIMITIVES:
        return eqn.primitive.name
    if eqn.primitive.name == "custom_jvp_call":
        info = getattr(eqn.params["call_jaxpr"].jaxpr, "debug_info", None)
        name = (getattr(info, "func_src_info", None) or "").split(" ")[0]
        return name if name in ANALOG_FUNCTIONS else None
    name = eqn.params.get("name")
    return name if eqn.primitive.name in ("pjit", "jit") and name in ANALOG_FUNCTIONS else None


def analog_calls(jaxpr: jax.extend.core.Jaxpr) -> list[str]:
    """Every call of an activation function in ``jaxpr`` (nested jaxprs included), named by site.

    Args:
      jaxpr: e.g. ``jax.make_jaxpr(apply)(...).jaxpr`` of an SNN's step.

    Returns:
      ``"relu (in module 'CNN/Block_0', model.py:12)"``-style names, in call order.
    """
    try:  # the public jaxpr API has no source summaries; without them the module path still names it
        from jax._src.source_info_util import summarize
    except ImportError:
        summarize = None
    found = []
    for eqn in jaxpr.eqns:
        name = _function_name(eqn)
        if name is not None:
            scope = str(eqn.source_info.name_stack) or "the top level"
            where = f", {summarize(eqn.source_info)}" if summarize is not None else ""
            found.append(f"{name} (in module {scope!r}{where})")
            continue
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found += analog_calls(inner)
    return found


_SYNAPTIC = (nn.Conv, Conv, nn.Dense)
_NNX_SYNAPTIC = (flax_nnx.Conv, flax_nnx.Linear)


def _input_problem(module: Any, shape: tuple[int, ...], name: str) -> tuple[str, str] | None:
    """``(what the first synaptic layer reads, "more" | "fewer" | "features")`` if ``shape`` misfits.

    ``module``: a bound Linen ``nn.Conv``/snnjax ``Conv``/``nn.Dense``, or an ``nnx.Conv``/``nnx.Linear``.
    """
    if isinstance(module, nn.Dense | flax_nnx.Linear):
        reads = f"the first layer, {name!r} (Dense)"
    else:
        size = module.kernel_size
        rank = 2 + (len(size) if isinstance(size, tuple | list) else 1)
        reads = f"the first convolution, {name!r}, reads rank {rank}"
        if len(shape) != rank:
            return reads, "more" if len(shape) > rank else "fewer"
    if isinstance(module, flax_nnx.Module):
        features = module.in_features
    elif module.has_variable("params", "kernel"):
        features = module.get_variable("params", "kernel").shape[-2] * getattr(
            module, "feature_group_count", 1
        )
    else:
        return None
    if shape[-1] != features:
        return f"{reads} with a last axis of {features}", "features"
    return None


def _check_input(
    snn_model: SpikingNetwork, variables: Variables, batch: jax.Array, args, kwargs, *, sequence: bool
) -> None:
    """Refuses a batch ``[B, ...]`` (the images, or one step of a sequence) the first layer cannot read.

    The first synaptic call (``nn.Conv``, snnjax ``Conv``, ``nn.Dense``, ``nnx.Conv``, ``nnx.Linear``)
    is found by tracing one step abstractly. A convolution reads ``[B, *spatial, C]``, rank
    ``2 + len(kernel_size)``: a larger rank is a leading axis too many (e.g. a time-major sequence
    passed as images: Flax would fold it into the batch and run), a smaller one an axis too few (a
    static batch passed as a sequence). Its last axis must be the kernel's input features.

    The same trace refuses an activation function left in the SNN (`analog_calls`): the
    converter replaces snnjax's activation layers and ReLU calls only, and a stray ``nn.gelu(x)``
    would stay analog. (The first-layer check reads Linen and NNX layers; a plain function has none,
    and gets the activation check only.)
    """
    first: list[tuple[Any, tuple[int, ...], str]] = []

    def interceptor(next_fun, call_args, call_kwargs, context):
        if not first and context.method_name == "__call__" and isinstance(context.module, _SYNAPTIC):
            first.append((context.module, tuple(call_args[0].shape), _path(context.module)))
        return next_fun(*call_args, **call_kwargs)

    def nnx_watcher(module, path, *call_args):
        if not first and isinstance(module, _NNX_SYNAPTIC) and call_args:
            first.append((module, tuple(call_args[0].shape), interception.site_name(path)))

    layer_mode = dataclasses.replace(snn_model, mode="layer")
    try:
        with nn.intercept_methods(interceptor), interception.watching_nnx_calls(nnx_watcher):
            steps = layer_mode.simulated_steps(1)
            traced = jax.make_jaxpr(
                lambda v, x: layer_mode.apply(v, jnp.broadcast_to(x, (steps, *x.shape)), *args, **kwargs)
            )(variables, batch)
    except Exception:
        if not first or _input_problem(*first[0]) is None:
            raise  # a failure of its own, not caused by the input's shape
    problem = _input_problem(*first[0]) if first else None
    if problem is None:
        calls = analog_calls(traced.jaxpr)
        if calls:
            raise ValueError(
                f"{model_name(snn_model.ann)} calls {len(calls)} activation function(s) the converter "
                f"cannot make spiking: {'; '.join(calls[:5])}{' …' if len(calls) > 5 else ''}. Only "
                "snnjax activation layers and ReLU function calls become spiking neurons; these would "
                "stay analog (a hybrid network). Replace each by a ReLU (nn.relu, or a snnjax layer: "
                "QCFS, threshold ReLU, ...), or remove it. A relu listed here was hidden from the "
                "converter (e.g. inside jax.checkpoint or a custom derivative rule): call it directly."
            )
        return
    reads, kind = problem
    if not sequence:
        hint = {
            "more": ", a leading axis too many. For a time-major input sequence [T, B, ...] use "
            "snnjax.spiking_apply_sequence.",
            "fewer": ", an axis too few: add the batch axis (images[None] for one image).",
            "features": ".",
        }[kind]
        raise ValueError(
            f"spiking_apply takes static images [B, ...] ({reads}), repeated every step; got shape "
            f"{batch.shape}{hint}"
        )
    raise ValueError(
        f"spiking_apply_sequence takes a time-major sequence [T, B, ...] whose every step is a batch the "
        f"model reads ({reads}); got steps of shape {batch.shape}. A static batch [B, ...] goes to "
        "snnjax.spiking_apply; a batch-major [B, T, ...] sequence through jnp.swapaxes(inputs, 0, 1)."
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
