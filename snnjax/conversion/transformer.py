"""Running a quantized transformer as an SNN whose accumulated output equals the ANN's (SpikeZIP-TF style).

`spiking_transformer` wraps a Linen ANN whose activations are `snnjax.nn.layers.SignedQCFS`
quantizers (e.g. `snnjax.nn.vit.ViT`). Applying it runs the ANN's own code once, on time folded into
the batch (``[T, B, ...] → [T·B, ...]``, as the CNNs' layer mode), with every array an *increment*:
the value of a tensor after step t is the sum of its increments up to t. Each call site is
intercepted by what it is and replaced by its incremental form:

| site | incremental form | output |
|---|---|---|
| `SignedQCFS` layer | ST-BIF neuron (`st_bif_neuron`), θ = λ/L | spikes ±θ |
| `Product` (QKᵀ, A·V) | ``A_{t−1}b_t + a_t B_{t−1} + a_t b_t`` (`spike_train_product`) | analog |
| LayerNorm; softmax, gelu, relu calls | ``f(S_t) − f(S_{t−1})`` (`temporal_difference`) | analog |
| Dense, Conv, class token, position embedding | ``f(z_t)`` at t = 1, ``f(z_t) − f(0)`` after | analog |

The analog modules are `ANALOG_MODULES`, the affine ones `AFFINE_MODULES` (their bias or constant
enters once, at the first step); the ST-BIF neuron's counts lie in [lower, L] of its quantizer.
(The three functions are `snnjax.core.transformer_ops`'.)

Everything else the model computes between sites (reshapes, residual adds, the 1/√d scale, slicing
the class token) must be linear, and is then right on increments as it is. The input image enters at
the first step only (`transformer_apply`). Then, once every ST-BIF neuron has settled (each has
had its last input and spent its count, at most ``L − lower`` steps later, layer after layer), the
accumulated output ``Σ_{s ≤ t} y_s`` equals the quantized ANN's output: the identities of the three
primitives compose. The readout is therefore the running *sum* of the output increments, where a
CNN's SNN reads the running *mean* of its outputs (there each step's output estimates the ANN's
activation as a rate); the two differ by the factor t, so both give the same prediction at every t.

Reconstructed from SpikeZIP-TF (Li et al., ICML 2024) as stated in `snnjax.core.transformer_ops`; no
code of the authors' is copied. Softmax and LayerNorm outputs are multi-valued floats, as in every
published exact method: the network is a spiking network at its quantizers only, and the reports
(`operator_report`) say which operator is which.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from snnjax.conversion import interception
from snnjax.conversion.simulation import inference_kwargs
from snnjax.core.transformer_ops import spike_train_product, st_bif_neuron, temporal_difference
from snnjax.nn.layers import (
    Activation,
    ClassToken,
    Conv,
    PositionEmbedding,
    Product,
    SignedQCFS,
    ThresholdActivation,
)

__all__ = [
    "AFFINE_MODULES",
    "ANALOG_MODULES",
    "Site",
    "SpikingTransformer",
    "accumulated_outputs",
    "nonlinear_between_sites",
    "operator_report",
    "settled_step",
    "spiking_transformer",
    "transformer_apply",
]

# Linen modules whose output is affine in their input: ``f(z) − f(0)`` is linear, so the bias (or the
# token, or the embedding) enters at the first step only.
AFFINE_MODULES: tuple[type, ...] = (nn.Dense, nn.DenseGeneral, nn.Conv, Conv, ClassToken, PositionEmbedding)
# Linen modules that stay analog: each step outputs ``f(S_t) − f(S_{t−1})``.
ANALOG_MODULES: tuple[type, ...] = (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm)

Variables = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Site:
    """One intercepted call of the SNN, recorded by `SpikingTransformer.apply_recorded`.

    Attributes:
      name: the module path (``"block0/attention/query_quant"``) or function site
        (``"block0/attention/softmax_0"``).
      kind: ``"st_bif"`` (spiking neurons), ``"product"``, ``"analog"`` or ``"affine"``.
      operator: the module class or function name.
      inputs: the call's inputs, each ``[T, B, ...]`` increments.
      output: ``[T, B, ...]`` increments.
      spiking_input: whether every input is an ST-BIF layer's output, unchanged (spikes).
      macs_per_example: the ANN's multiply-accumulates of one example here (dense; 0 for neurons,
        analog operators and the added constants).
      theta: θ of an ST-BIF layer (None for others); lower, levels: its count bounds.
    """

    name: str
    kind: str
    operator: str
    inputs: tuple[jax.Array, ...]
    output: jax.Array
    spiking_input: bool
    macs_per_example: float = 0.0
    theta: jax.Array | None = None
    lower: int | None = None
    levels: int | None = None


@dataclasses.dataclass(frozen=True)
class SpikingTransformer:
    """A quantized transformer run as an SNN of increments (see the module docstring).

    Its variables are the ANN's, unchanged: each ST-BIF neuron reads θ = λ/L from its quantizer.

    Attributes:
      ann: the Linen ANN (its ``__call__`` takes the images first).
    """

    ann: nn.Module

    def _run(self, variables: Variables, inputs: jax.Array, args, kwargs, sites: list[Site] | None):
        num_steps, batch = inputs.shape[0], inputs.shape[1]
        spike_outputs: list[jax.Array] = []  # ST-BIF outputs (kept alive): an input that is one is spikes

        def unfold(x):
            if x.ndim == 0 or x.shape[0] != num_steps * batch:
                raise ValueError(
                    f"a transformer site got an input of shape {x.shape}, whose leading axis is not "
                    f"T·B = {num_steps}·{batch}: keep the batch axis first at every site (no vmap over "
                    "examples, no transposes that move the batch axis)."
                )
            return x.reshape(num_steps, -1, *x.shape[1:])

        def fold(y):
            return y.reshape(-1, *y.shape[2:])

        def note(name, kind, operator, ins, out, **details):
            if sites is not None:
                spiking = all(any(x is y for y in spike_outputs) for x in ins)
                sites.append(
                    Site(name, kind, operator, tuple(map(unfold, ins)), unfold(out), spiking, **details)
                )
            return out

        def analog(run, x):
            return fold(temporal_difference(lambda s: unfold(run(fold(s))), unfold(x), per_step=False))

        def interceptor(next_fun, call_args, call_kwargs, context):
            module = context.module
            if context.method_name != "__call__" or not (call_args or call_kwargs):
                return next_fun(*call_args, **call_kwargs)
            name = "/".join(module.path)
            operator = type(module).__name__
            if isinstance(module, SignedQCFS):
                x = interception.call_input(next_fun, call_args, call_kwargs)[1]
                theta = module.get_variable("params", "threshold").astype(x.dtype) / module.levels
                with jax.disable_jit(False):
                    y = fold(st_bif_neuron(unfold(x), theta, module.levels, module.lower))
                spike_outputs.append(y)
                return note(
                    name, "st_bif", operator, (x,), y, theta=theta, lower=module.lower, levels=module.levels
                )
            if isinstance(module, Product):
                a, b = (*call_args, *call_kwargs.values())  # Product(a, b), positional or by name
                product = functools.partial(jnp.einsum, module.equation)
                # One product per step (the event form's three give the same increments): the
                # report still counts the event form's operations.
                y = fold(spike_train_product(unfold(a), unfold(b), product, form="difference"))
                per_example = math.prod(y.shape[1:]) * _summed_length(module.equation, a, b)
                return note(name, "product", operator, (a, b), y, macs_per_example=per_example)
            if type(module) in ANALOG_MODULES:  # exact type: a subclass may compute something else
                run, x = interception.call_input(next_fun, call_args, call_kwargs)
                return note(name, "analog", operator, (x,), analog(run, x))
            if type(module) in AFFINE_MODULES:
                run, x = interception.call_input(next_fun, call_args, call_kwargs)
                # f(0), what enters once (at the first step), from one more row of the same call (a
                # Linen layer is called once per apply).
                both = run(jnp.concatenate([x, jnp.zeros_like(x[:1])], axis=0))
                y, at_zero = unfold(both[:-1]), both[-1:]
                later = y[1:] - at_zero[None]
                y = fold(jnp.concatenate([y[:1], later], axis=0))
                macs = 0.0
                if module.has_variable("params", "kernel"):  # a constant added is no MAC
                    kernel = module.get_variable("params", "kernel")
                    features = getattr(module, "features", kernel.shape[-1])  # int, or DenseGeneral's tuple
                    fan_in = int(kernel.size // math.prod(np.atleast_1d(features)))
                    macs = math.prod(y.shape[1:]) * fan_in  # fan_in per output element
                return note(name, "affine", operator, (x,), y, macs_per_example=macs)
            return next_fun(*call_args, **call_kwargs)

        def function_site(key, original, x, *args_, **kwargs_):
            y = analog(lambda s: original(s, *args_, **kwargs_), x)
            return note(interception.site_name(key), "analog", original.__name__, (x,), y)

        def relu_site(key, x):
            return note(interception.site_name(key), "analog", "relu", (x,), analog(jax.nn.relu, x))

        problems = nonlinear_between_sites(self.ann, variables, inputs[0], *args, **kwargs)
        if problems:
            raise ValueError(
                f"{type(self.ann).__name__} computes {len(problems)} operation(s) between its sites that "
                "are not linear in its activations, which the SNN would get wrong (it feeds them "
                "increments): " + "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else "") + ". "
                "A softmax, GELU or ReLU is a site only when called as jax.nn.NAME, flax.linen.NAME or "
                "flax.nnx.NAME (not imported by name). See "
                "snnjax.conversion.transformer.nonlinear_between_sites."
            )
        flat = inputs.reshape(num_steps * inputs.shape[1], *inputs.shape[2:])
        with (
            nn.intercept_methods(interceptor),
            interception.relu_sites(relu_site),
            interception.function_sites(function_site),
        ):
            outputs = self.ann.apply(variables, flat, *args, **kwargs)
        return jax.tree.map(unfold, outputs)

    def apply(self, variables: Variables, inputs: jax.Array, *args: Any, **kwargs: Any) -> Any:
        """The output increments of the SNN fed ``inputs``.

        Args:
          variables: the ANN's variables.
          inputs: ``[T, B, ...]`` input increments (an image once: `transformer_apply`).
          *args: passed to the ANN's ``__call__`` after the input (e.g. ``train=False``).
          **kwargs: likewise.

        Returns:
          The ANN's outputs as increments with a leading time axis, e.g. ``[T, B, classes]``.
        """
        return self._run(variables, inputs, args, kwargs, None)

    def apply_recorded(
        self, variables: Variables, inputs: jax.Array, *args: Any, **kwargs: Any
    ) -> tuple[Any, list[Site]]:
        """`apply` that also returns every intercepted site's inputs and output (`Site`), in call order."""
        sites: list[Site] = []
        return self._run(variables, inputs, args, kwargs, sites), sites


# The scope every function site (softmax, gelu, relu) runs in while `nonlinear_between_sites` traces,
# and the one that marks each site's activation inputs there.
_SITE_SCOPE = "snnjax_analog_site"
_INPUT_SCOPE = "snnjax_site_input"


def _marked(x: Any) -> Any:
    """``x`` through an identity the check can find (an array input of a site), else ``x`` unchanged."""
    if not isinstance(x, jax.Array):
        return x
    with jax.named_scope(_INPUT_SCOPE):
        return jax.lax.optimization_barrier(x)


# Primitives linear in their one input (or in each: reduce_sum, add/sub of two activations).
_LINEAR = frozenset(
    {
        "add", "sub", "neg", "reshape", "transpose", "broadcast_in_dim", "squeeze", "expand_dims",
        "reduce_sum", "convert_element_type", "copy", "copy_p", "rev", "cumsum", "slice",
        "dynamic_slice", "gather", "concatenate", "pad", "reduce_precision", "select_n",
    }
)  # fmt: skip
# Linear in each operand: fine while at most one operand is an activation.
_BILINEAR = frozenset({"mul", "dot_general", "conv_general_dilated"})


def nonlinear_between_sites(
    ann: nn.Module, variables: Variables, x: jax.Array, *args: Any, **kwargs: Any
) -> list[str]:
    """The operations of ``ann`` outside its sites that are not linear in its input (what the SNN gets wrong).

    The SNN feeds every operation between sites the increments of its inputs, which is right only for
    linear ones. Traces ``ann`` on ``x`` and follows what depends on ``x``: outside the module sites
    (`SignedQCFS`, `Product`, `ANALOG_MODULES`, `AFFINE_MODULES`) and the function sites, each
    operation on it must be linear: a product of two activations is not (use a `Product` layer), nor
    a constant added (``x + b``: use an affine layer, e.g. `ClassToken`, `PositionEmbedding`,
    ``nn.Dense``), nor any other nonlinearity (``jnp.maximum``, ``exp``, comparisons, a cast to
    integers). A site whose input the image does not reach (a learned query fed to a quantizer) is
    reported too: that constant would enter every step. Loops and conditionals on an activation are
    reported (not followed). Not checked: operations that mix examples (a mean over the batch axis),
    which are linear but would mix steps too; the SNN refuses a site input whose leading axis is not
    T·B.

    Args:
      ann: the Linen ANN.
      variables: its variables.
      x: one example batch ``[B, ...]``.
      *args: the ANN's other call arguments.
      **kwargs: likewise.

    Returns:
      ``"block0/attention: mul of two activations"``-style descriptions, in program order.
    """
    module_sites: set[str] = set()
    top = ann.name or type(ann).__name__  # the name stack's first part

    def interceptor(next_fun, call_args, call_kwargs, context):
        module = context.module
        if isinstance(module, (ThresholdActivation, Activation)):
            raise ValueError(
                f"{'/'.join(module.path)!r} is a snnjax CNN activation layer ({type(module).__name__}): a "
                "transformer's quantizers are snnjax.nn.layers.SignedQCFS layers (convert CNNs with "
                "snnjax.spiking_model)."
            )
        if context.method_name == "__call__" and (
            isinstance(module, (SignedQCFS, Product)) or type(module) in (*ANALOG_MODULES, *AFFINE_MODULES)
        ):
            module_sites.add("/".join((top, *module.path)))
            if isinstance(module, Product):  # both inputs are activations
                return next_fun(*map(_marked, call_args), **{k: _marked(v) for k, v in call_kwargs.items()})
            run, x = interception.call_input(next_fun, call_args, call_kwargs)  # e.g. not a mask
            return run(_marked(x))
        return next_fun(*call_args, **call_kwargs)

    def function_site(key, original, x, *call_args, **call_kwargs):
        x = _marked(x)
        with jax.named_scope(_SITE_SCOPE):
            return original(x, *call_args, **call_kwargs)

    def relu_site(key, z):
        z = _marked(z)
        with jax.named_scope(_SITE_SCOPE):
            return jax.nn.relu(z)

    with (
        nn.intercept_methods(interceptor),
        interception.relu_sites(relu_site),
        interception.function_sites(function_site),
    ):
        closed = jax.make_jaxpr(lambda v: ann.apply(variables, v, *args, **kwargs))(x)
    found: list[str] = []

    def inside_site(stack: str) -> bool:
        return _SITE_SCOPE in stack.split("/") or any(
            stack == site or stack.startswith(site + "/") for site in module_sites
        )

    def walk(jaxpr, tainted: set, outer: str) -> None:
        for eqn in jaxpr.eqns:
            stack = "/".join(filter(None, (outer, str(eqn.source_info.name_stack))))
            hot = [not isinstance(v, jax.extend.core.Literal) and v in tainted for v in eqn.invars]
            if eqn.primitive.name == "optimization_barrier" and _INPUT_SCOPE in stack.split("/"):
                if not all(hot):  # a site's input that the image does not reach
                    where = stack.split(f"/{_INPUT_SCOPE}")[0].removeprefix(top).removeprefix("/")
                    found.append(
                        f"{where or 'the top level'}: a site input that does not depend on the image (a "
                        "constant would enter every step: add it through an affine layer)"
                    )
                tainted.update(v for v, h in zip(eqn.outvars, hot, strict=True) if h)
                continue
            if not any(hot):
                continue
            tainted.update(eqn.outvars)
            if inside_site(stack):
                continue
            name = eqn.primitive.name
            inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
            where = stack.removeprefix(top).removeprefix("/") or "the top level"
            if inner is not None and name not in ("scan", "while", "cond"):
                inner = getattr(inner, "jaxpr", inner)
                walk(inner, {v for v, h in zip(inner.invars, hot, strict=False) if h}, stack)
                continue
            constant = [
                bool(np.any(v.val != 0)) if isinstance(v, jax.extend.core.Literal) else not h
                for v, h in zip(eqn.invars, hot, strict=True)
            ]
            if name in _BILINEAR and all(hot[:2]):
                found.append(f"{where}: {name} of two activations (make it a snnjax.nn.layers.Product layer)")
            elif name == "div" and hot[1]:
                found.append(f"{where}: division by an activation")
            elif name in ("add", "sub", "concatenate", "pad") and any(constant):
                found.append(f"{where}: {name} of a constant to an activation (it would enter every step)")
            elif name == "select_n" and (hot[0] or not all(hot[1:])):
                found.append(f"{where}: select_n on an activation")
            elif name == "convert_element_type" and not jnp.issubdtype(eqn.params["new_dtype"], jnp.floating):
                found.append(f"{where}: an activation cast to {eqn.params['new_dtype']} (not linear)")
            elif name not in _LINEAR | _BILINEAR | {"div"}:
                found.append(f"{where}: {name} (not linear)")

    walk(closed.jaxpr, set(closed.jaxpr.invars), "")
    return found


def spiking_transformer(ann: nn.Module) -> SpikingTransformer:
    """The SNN of a quantized Linen transformer (see the module docstring).

    Args:
      ann: a Linen module whose activations are `snnjax.nn.layers.SignedQCFS` layers.

    Raises:
      TypeError: if ``ann`` is not a Linen module.
    """
    if not isinstance(ann, nn.Module):
        raise TypeError(
            f"spiking_transformer takes a Flax Linen module, got {type(ann).__name__}; an NNX or "
            "plain-function transformer is not supported yet."
        )
    return SpikingTransformer(ann)


def _first_step_only(images: jax.Array, num_steps: int) -> jax.Array:
    """``[B, ...] → [T, B, ...]``: the image at the first step, zeros after (it enters once)."""
    later = jnp.zeros((num_steps - 1, *images.shape), images.dtype)
    return jnp.concatenate([images[None], later], axis=0)


def transformer_apply(
    snn: SpikingTransformer, variables: Variables, images: jax.Array, num_steps: int
) -> Any:
    """The output increments ``[T, B, ...]`` of the SNN given ``images [B, ...]`` once, at the first step.

    Inference mode (``train=False``) when the ANN takes ``train``. Its running sum
    (`accumulated_outputs`) is the SNN's readout.
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}.")
    return snn.apply(variables, _first_step_only(images, num_steps), **inference_kwargs(snn.ann))


def accumulated_outputs(increments: jax.Array) -> jax.Array:
    """The readout ``Σ_{s ≤ t} y_s`` at every t: ``[T, ...] → [T, ...]``."""
    return jnp.cumsum(increments, axis=0)


def settled_step(snn_predictions: np.ndarray, ann_predictions: np.ndarray) -> int | None:
    """T*: the first t from which (up to T) the SNN's prediction equals the ANN's on every example, or None.

    Args:
      snn_predictions: ``[T, N]`` class indices of the accumulated output at every t.
      ann_predictions: ``[N]``.
    """
    agree = np.all(np.asarray(snn_predictions) == np.asarray(ann_predictions)[None], axis=1)  # [T]
    disagree = np.flatnonzero(~agree)
    if not agree[-1]:
        return None
    return int(disagree[-1]) + 2 if disagree.size else 1


def operator_report(
    snn: SpikingTransformer, variables: Variables, images: jax.Array, num_steps: int, ann_outputs: jax.Array
) -> dict[str, Any]:
    """Every operator of the SNN on ``images``, with its kind, alphabet, spikes and operation counts.

    Args:
      snn: from `spiking_transformer`.
      variables: the ANN's variables.
      images: ``[B, ...]``.
      num_steps: T.
      ann_outputs: the quantized ANN's outputs ``[B, ...]`` on ``images`` (for the error at T).

    Returns:
      ``{"images", "steps", "operators": [...], "spikes_per_image", "synaptic_ops_per_image",
      "macs_per_image", "ann_macs_per_image", "output_max_abs_error"}``. Each operator: ``name``,
      ``kind``, ``operator``,
      ``output`` (``"spikes {−θ, 0, +θ}"`` / ``"spikes {0, +θ}"`` / ``"analog"``), ``spikes_per_image``
      (ST-BIF layers), ``input`` (``"spikes"`` or ``"analog"``), ``ops_per_image`` (event-driven: each
      nonzero input increment times the elements it reaches: SOP for spike inputs, MAC for analog
      ones; None for analog operators, whose cost is not a matrix product) and ``ann_macs_per_image``
      (the same operator in the ANN).
    """
    batch = images.shape[0]
    increments, sites = snn.apply_recorded(
        variables, _first_step_only(images, num_steps), **inference_kwargs(snn.ann)
    )
    operators, totals = [], {"spikes": 0.0, "sop": 0.0, "mac": 0.0, "ann_mac": 0.0}
    for site in sites:
        row: dict[str, Any] = {"name": site.name, "kind": site.kind, "operator": site.operator}
        if site.kind == "st_bif":
            row["output"] = "spikes {−θ, 0, +θ}" if site.lower < 0 else "spikes {0, +θ}"
            spikes = float(jnp.sum(site.output != 0)) / batch
            row["spikes_per_image"] = spikes
            row["theta"] = float(jnp.mean(site.theta))
            totals["spikes"] += spikes
        else:
            row["output"] = "analog"
        row["input"] = "spikes" if site.spiking_input else "analog"
        if site.kind in ("affine", "product"):
            # Event-driven: each nonzero input increment takes part in macs/|x| multiply-accumulates.
            ops = sum(
                float(jnp.sum(x != 0)) / batch * site.macs_per_example / math.prod(x.shape[2:])
                for x in site.inputs
            )
            ann_macs = site.macs_per_example
            row["ops_per_image"] = ops
            row["ann_macs_per_image"] = ann_macs
            totals["sop" if site.spiking_input else "mac"] += ops
            totals["ann_mac"] += ann_macs
        operators.append(row)
    error = jnp.abs(accumulated_outputs(increments)[-1] - ann_outputs)
    return {
        "images": batch,
        "steps": num_steps,
        "operators": operators,
        "spikes_per_image": totals["spikes"],
        "synaptic_ops_per_image": totals["sop"],
        "macs_per_image": totals["mac"],
        "ann_macs_per_image": totals["ann_mac"],
        "output_max_abs_error": float(jnp.max(error)),
    }


def _summed_length(equation: str, a: jax.Array, b: jax.Array) -> int:
    """The length of an einsum's summed indices (in both operands, not in the output), one step's shapes."""
    if "->" not in equation or "..." in equation:
        raise ValueError(
            f"Product equation {equation!r}: write it with explicit indices and an output, e.g. "
            "'bqhd,bkhd->bhqk' (no '...')."
        )
    inputs, output = equation.replace(" ", "").split("->")
    spec_a, spec_b = inputs.split(",")
    sizes = dict(zip(spec_a, a.shape, strict=True)) | dict(zip(spec_b, b.shape, strict=True))
    return math.prod(sizes[i] for i in set(spec_a) & set(spec_b) if i not in output)
