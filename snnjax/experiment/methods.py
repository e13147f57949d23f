"""Conversion methods: which ANN activation each trains with, and the SNN's initial membrane.

This is the glue between config fields and the pure functions; library users can equally build
``functools.partial(ThresholdActivation, fn=...)`` themselves.
"""

from __future__ import annotations

import dataclasses
import enum
import functools

import flax.linen
import ml_collections

from snnjax.core import activations
from snnjax.nn.layers import Activation, BatchNorm, ModuleDef, ThresholdActivation
from snnjax.nn.models import create_model
from snnjax.nn.vit import TRANSFORMERS

__all__ = [
    "build_ann",
    "POST_CONVERSIONS",
    "Method",
    "PostConversion",
    "ann_activation",
    "initial_membrane_fraction",
    "levels",
    "post_conversion",
    "snn_neuron",
]


class Method(enum.StrEnum):
    """ANN training methods selectable by the config field ``method``."""

    QCFS = "qcfs"
    SLIP_RELU = "slip_relu"
    # Liu et al. (AAAI 2022): trains the T-level quantized clipped ReLU (QCFS with L = T, φ = v0) that
    # its integrate-then-fire SNN equals exactly.
    SPIKECONVERTER = "spikeconverter"
    THRESHOLD_RELU = "threshold_relu"
    RELU = "relu"


def _method(config: ml_collections.ConfigDict) -> Method:
    try:
        return Method(config.method)
    except ValueError:
        allowed = ", ".join(m.value for m in Method)
        raise ValueError(f"config.method={config.method!r} is unknown; allowed: {allowed}.") from None


def ann_activation(config: ml_collections.ConfigDict) -> ModuleDef:
    """The ANN activation-layer factory for ``config.method``.

    Reads ``levels``, ``qcfs_shift``, ``qcfs_order``, ``slip_c``, ``slip_shift1``, ``slip_shift2``,
    ``threshold_init``, ``threshold_parameterization`` and ``per_channel_threshold``.
    """
    method = _method(config)
    if method is Method.RELU:
        return functools.partial(Activation, fn=activations.relu)
    if method in (Method.QCFS, Method.SPIKECONVERTER):
        fn = functools.partial(
            activations.qcfs,
            levels=config.levels,
            shift=config.qcfs_shift,
            order=config.qcfs_order,
        )
    elif method is Method.SLIP_RELU:
        fn = functools.partial(
            activations.slip_relu,
            levels=config.levels,
            c=config.slip_c,
            shift1=config.slip_shift1,
            shift2=config.slip_shift2,
        )
    else:
        fn = activations.threshold_relu
    return functools.partial(
        ThresholdActivation,
        fn=fn,
        threshold_init=config.threshold_init,
        parameterization=config.threshold_parameterization,
        per_channel=config.per_channel_threshold,
    )


def initial_membrane_fraction(config: ml_collections.ConfigDict) -> float:
    """v(0)/θ for the SNN: ``config.snn_v0`` if set, else the method's natural choice.

    QCFS and SpikeConverter: the shift φ (½); SlipReLU: ``shift2``; threshold-ReLU and ReLU: ½ (the
    expected-error minimiser for uniform inputs).
    """
    if config.snn_v0 is not None:
        return float(config.snn_v0)
    method = _method(config)
    if method in (Method.QCFS, Method.SPIKECONVERTER):
        return float(config.qcfs_shift)
    if method is Method.SLIP_RELU:
        return float(config.slip_shift2)
    return 0.5


def snn_neuron(config: ml_collections.ConfigDict) -> str:
    """The SNN's neuron: ``config.snn_neuron`` if set, else the method's.

    ``integrate_then_fire`` for SpikeConverter, the reference ``if`` neuron for every other method.
    """
    if config.snn_neuron is not None:
        return config.snn_neuron
    return "integrate_then_fire" if _method(config) is Method.SPIKECONVERTER else "if"


def levels(config: ml_collections.ConfigDict) -> int | None:
    """L of a quantized method (QCFS, SlipReLU, SpikeConverter: its window T), else None."""
    quantized = (Method.QCFS, Method.SLIP_RELU, Method.SPIKECONVERTER)
    return int(config.levels) if _method(config) in quantized else None


@dataclasses.dataclass(frozen=True)
class PostConversion:
    """A training-free low-latency method (``config.post_conversion``) as the SNN runs it.

    Attributes:
      name: the config value.
      neuron: the SNN neuron (a key of `snnjax.conversion.neuron_registry.NEURONS`).
      neuron_options: the neuron's options (``prerun``, ``max_spikes``).
      calibration: a `snnjax.conversion.calibration.CALIBRATION_KINDS` kind, or None.
    """

    name: str
    neuron: str
    neuron_options: dict
    calibration: str | None = None


# config.post_conversion value -> (neuron, the config field holding its option, calibration kind)
POST_CONVERSIONS = {
    "none": ("if", None, None),
    "burst": ("burst", "spikes_per_step", None),
    "group": ("group", "spikes_per_step", None),
    "cos": ("cos", "prerun_steps", None),
    "cos_network": ("cos_network", "prerun_steps", None),
    "srp": ("srp", "prerun_steps", None),
    "bias_calibration": ("if", None, "bias"),
    "potential_calibration": ("if", None, "potential"),
    "step_bias_calibration": ("if", None, "step_bias"),
}
_OPTION_NAMES = {"spikes_per_step": "max_spikes", "prerun_steps": "prerun"}


def post_conversion(config: ml_collections.ConfigDict) -> PostConversion | None:
    """The low-latency method of ``config.post_conversion`` (None for ``"none"``)."""
    if config.post_conversion == "none":
        return None
    neuron, field, kind = POST_CONVERSIONS[config.post_conversion]
    options = {_OPTION_NAMES[field]: int(config[field])} if field else {}
    return PostConversion(config.post_conversion, neuron, options, kind)


_UNBIASED_BATCHNORM = functools.partial(BatchNorm, running_var="unbiased")


def build_ann(config: ml_collections.ConfigDict, num_classes: int) -> flax.linen.Module:
    """The ANN named by ``config.model`` with the activation of ``config.method`` (`ann_activation`).

    A transformer (``vit``) quantizes with `snnjax.nn.layers.SignedQCFS` at ``config.levels`` (its
    method is ``qcfs``) and reads its shape from the ``vit_*`` fields.
    """
    if config.model in TRANSFORMERS:
        return TRANSFORMERS[config.model](
            num_classes=num_classes,
            patch=config.vit_patch,
            dim=config.vit_dim,
            depth=config.vit_depth,
            heads=config.vit_heads,
            mlp_dim=config.vit_mlp_dim,
            levels=config.levels,
        )
    return create_model(
        config.model,
        num_classes,
        ann_activation(config),
        # PyTorch's running variance is an option; the default model keeps the plain factory.
        norm=BatchNorm if config.bn_running_var == "biased" else _UNBIASED_BATCHNORM,
        conv_implementation=config.conv_implementation,
        pooling=config.pooling,
    )
