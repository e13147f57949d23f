"""Start-up checks of an experiment config, with messages that name the field and the allowed values.

The allowed values come from the registries that define them (models, neurons, poolings, layouts, ...).
"""

from __future__ import annotations

import difflib
import math

import ml_collections

from snnjax.configs import default
from snnjax.conversion.hardware import WEIGHT_SCALES
from snnjax.conversion.neuron_registry import NEURONS
from snnjax.conversion.simulation import MATMUL_PRECISIONS, SIMULATION_DTYPES, SIMULATION_MODES
from snnjax.conversion.transforms import BALANCING_FORMS
from snnjax.core.activations import QCFSOrder
from snnjax.experiment.methods import POST_CONVERSIONS, Method, snn_neuron
from snnjax.io.augment import AUGMENTATIONS
from snnjax.io.checkpoints import CHECKPOINT_KINDS
from snnjax.io.data import DATASETS
from snnjax.io.torch_checkpoints import LAYOUTS
from snnjax.nn.layers import CONV_IMPLEMENTATIONS, RUNNING_VARIANCES, ThresholdParameterization
from snnjax.nn.models import ANN_POOLINGS, MODELS, SNN_MAX_POOLS
from snnjax.nn.vit import TRANSFORMERS

OPTIMIZERS = ("sgd", "adamw")  # config.optimizer (snnjax.experiment.training.build_model_and_optimizer)

__all__ = ["validate_config"]


def _choice(config: ml_collections.ConfigDict, field: str, allowed) -> None:
    allowed = [str(a) for a in allowed]
    if str(config[field]) not in allowed:
        raise ValueError(f"config.{field}={config[field]!r} is invalid; allowed: {', '.join(allowed)}.")


def _positive_int(config: ml_collections.ConfigDict, field: str) -> None:
    value = config[field]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"config.{field} must be a positive int, got {value!r}.")


def _int_at_least(config: ml_collections.ConfigDict, field: str, low: int) -> None:
    value = config[field]
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"config.{field} must be an int >= {low}, got {value!r}.")


def _real(
    config: ml_collections.ConfigDict,
    field: str,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raises unless ``config.field`` is a finite number in the interval (NaN fails every comparison)."""
    value = config[field]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"config.{field}={value!r} must be a finite number in {interval}.")


def _check_post_conversion(config: ml_collections.ConfigDict) -> None:
    """Refuses low-latency methods on SNNs they are not defined for, with the reason."""
    for field in ("spikes_per_step", "post_calibration_examples", "post_calibration_steps"):
        _positive_int(config, field)
    _int_at_least(config, "prerun_steps", 0)
    _real(config, "step_bias_alpha", 0.0, 1.0, low_open=True)
    method = config.post_conversion
    if method == "none":
        return
    neuron = snn_neuron(config)
    if neuron != "if":
        raise ValueError(
            f"config.post_conversion={method!r} changes the IF neuron, but method {config.method!r} runs "
            f"{neuron!r} (config.snn_neuron); "
            + (
                "SpikeConverter's layer-separated SNN already equals its quantized ANN exactly."
                if neuron == "integrate_then_fire"
                else "unset config.snn_neuron or config.post_conversion."
            )
        )
    if config.snn_mode != "layer":
        raise ValueError(
            f"config.post_conversion={method!r} needs config.snn_mode='layer' (its neurons see a layer's "
            "whole window: pre-run, replay, or per-step corrections)."
        )
    if method.endswith("_calibration") and config.balancing == "weights":
        raise ValueError(
            f"config.post_conversion={method!r} calibrates biases in the threshold form; set "
            "config.balancing='threshold'."
        )
    if config.export_nir:
        raise ValueError(
            f"config.export_nir: NIR has no counterpart for config.post_conversion={method!r}; export the "
            "plain IF SNN (post_conversion='none') or use config.export."
        )
    if NEURONS[POST_CONVERSIONS[method][0]].prerun != "none" and config.prerun_steps < 1:
        raise ValueError(f"config.prerun_steps=0 switches {method!r} off: set it to 1 or more.")


def _check_transformer(config: ml_collections.ConfigDict) -> None:
    """Refuses what a transformer's conversion (`snnjax.conversion.transformer`) does not do."""
    for field in ("vit_patch", "vit_dim", "vit_depth", "vit_heads", "vit_mlp_dim"):
        _positive_int(config, field)
    if config.model not in TRANSFORMERS:
        return
    if config.vit_dim % config.vit_heads:
        raise ValueError(
            f"config.vit_dim={config.vit_dim} is not divisible by config.vit_heads={config.vit_heads}."
        )
    if config.method != "qcfs":
        raise ValueError(
            f"config.model={config.model!r} trains with SignedQCFS quantizers: config.method must be "
            f"'qcfs', not {config.method!r}."
        )
    # Each field that the CNN conversion reads and the transformer's does not, with its default.
    unsupported = {
        "snn_neuron": None,
        "snn_mode": "layer",
        "snn_v0": None,
        "post_conversion": "none",
        "hardware_weight_bits": 0,
        "balancing": "threshold",
        "fold_bn": False,
        "per_channel_threshold": False,
        "threshold_parameterization": "identity",
        # SignedQCFS has φ = ½ and its own λ inits (4 for the signed quantizers, ¼ for probabilities).
        "qcfs_shift": 0.5,
        "qcfs_order": "floor_clip",
        "threshold_init": 8.0,
        "export_nir": False,
        "export": None,
        "torch_checkpoint": None,
        "snn_dtype": "float32",
    }
    for field, default_value in unsupported.items():
        if config[field] != default_value:
            raise ValueError(
                f"config.{field}={config[field]!r}: a transformer ({config.model}) converts to ST-BIF "
                f"neurons in layer mode only (snnjax.conversion.transformer); leave config.{field} at "
                f"{default_value!r}."
            )


def _check_hardware(config: ml_collections.ConfigDict) -> None:
    """Refuses hardware bit widths where the integer form is not defined, with the reason."""
    _int_at_least(config, "hardware_weight_bits", 0)
    _int_at_least(config, "hardware_state_bits", 0)
    _choice(config, "hardware_weight_scale", WEIGHT_SCALES)
    weight_bits, state_bits = config.hardware_weight_bits, config.hardware_state_bits
    if weight_bits and not 2 <= weight_bits <= 16:
        raise ValueError(f"config.hardware_weight_bits={weight_bits} must be 0 (float) or 2..16.")
    if state_bits and not 6 <= state_bits <= 24:
        raise ValueError(f"config.hardware_state_bits={state_bits} must be 0 (float) or 6..24.")
    if state_bits and not weight_bits:
        raise ValueError(
            "config.hardware_state_bits needs config.hardware_weight_bits: the membrane's integer units "
            "are the weights' least significant bit."
        )
    if not weight_bits:
        return
    reasons = []
    if not config.fold_bn:
        reasons.append("config.fold_bn=True (hardware has no BatchNorm)")
    if config.balancing != "threshold":
        reasons.append("config.balancing='threshold' (the integer form balances the weights itself)")
    if config.post_conversion != "none":
        reasons.append("config.post_conversion='none'")
    if snn_neuron(config) != "if":
        reasons.append("the 'if' neuron (config.snn_neuron)")
    if config.snn_dtype != "float32":
        reasons.append("config.snn_dtype='float32' (bfloat16 holds integers exactly only up to 256)")
    if state_bits and config.snn_mode != "layer":
        reasons.append(
            "config.snn_mode='layer' with hardware_state_bits (fixed_point_if runs a whole window)"
        )
    if reasons:
        raise ValueError("config.hardware_weight_bits needs " + "; ".join(reasons) + ".")


def _check_fields(config: ml_collections.ConfigDict) -> None:
    """Refuses fields that ``configs/default.py`` lacks, and fields it defines that are missing.

    A misspelt field in a config file would otherwise be ignored and the default trained.
    """
    known = default.get_config()
    unknown = sorted(set(config.keys()) - set(known.keys()))
    if unknown:
        hints = []
        for field in unknown:
            close = difflib.get_close_matches(field, list(known.keys()), n=1)
            hints.append(f"config.{field}" + (f" (did you mean config.{close[0]}?)" if close else ""))
        raise ValueError(
            f"unknown config field{'s' if len(unknown) > 1 else ''} {', '.join(hints)}: every field must be "
            "one of configs/default.py (snnjax --help lists them); a misspelt field would be ignored."
        )
    missing = sorted(set(known.keys()) - set(config.keys()))
    if missing:
        raise ValueError(
            f"the config lacks the field(s) {', '.join(missing)}: build it from "
            "snnjax.configs.default.get_config() and change only what differs."
        )


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first invalid field of ``config`` (unknown fields included)."""
    _check_fields(config)
    _choice(config, "dataset", DATASETS)
    _choice(config, "model", [*MODELS, *TRANSFORMERS])
    _choice(config, "optimizer", OPTIMIZERS)
    _choice(config, "method", [m.value for m in Method])
    _choice(config, "qcfs_order", [o.value for o in QCFSOrder])
    _choice(config, "threshold_parameterization", [p.value for p in ThresholdParameterization])
    _choice(config, "checkpoint", CHECKPOINT_KINDS)
    _choice(config, "snn_mode", SIMULATION_MODES)
    _choice(config, "conv_implementation", ["auto", *CONV_IMPLEMENTATIONS])
    _choice(config, "pooling", ANN_POOLINGS)
    _choice(config, "snn_max_pool", SNN_MAX_POOLS)
    _choice(config, "snn_dtype", SIMULATION_DTYPES)
    _choice(config, "balancing", BALANCING_FORMS)
    _choice(config, "eval_precision", MATMUL_PRECISIONS)
    _choice(config, "torch_layout", LAYOUTS)
    _choice(
        config, "param_init", ("flax", "pytorch")
    )  # snnjax.experiment.training.PARAM_INITS (it imports this)
    _choice(config, "train_last_batch", ("drop", "keep"))
    _choice(config, "bn_running_var", RUNNING_VARIANCES)
    if config.snn_neuron is not None:
        # Low-latency neurons come with config.post_conversion and the fixed-point IF with the hardware
        # fields, which set their options (and, for the latter, the integer variables it needs).
        _choice(
            config, "snn_neuron", [n.name for n in NEURONS.values() if not (n.low_latency or n.hardware_form)]
        )
    if config.snn_mode == "step" and not NEURONS[snn_neuron(config)].step:
        raise ValueError(
            f"config.snn_mode='step' runs the 'if' neuron only; method {config.method!r} uses "
            f"{snn_neuron(config)!r} (config.snn_neuron): use config.snn_mode='layer'."
        )
    _choice(config, "post_conversion", POST_CONVERSIONS)
    _check_post_conversion(config)
    if config.snn_max_pool == "max_gate" and config.snn_mode == "step":
        raise ValueError("config.snn_max_pool='max_gate' needs config.snn_mode='layer'.")
    _check_hardware(config)
    _check_transformer(config)
    if config.balancing == "weights" and not config.fold_bn:
        raise ValueError(
            "config.balancing='weights' needs config.fold_bn=True (BN would undo the rescaling)."
        )
    if config.dataset == "digits" and config.data_dir:
        raise ValueError(
            f"config.data_dir={config.data_dir!r} is set but config.dataset='digits' is the set bundled "
            "with scikit-learn and reads no files: unset config.data_dir, or set config.dataset to the "
            "dataset in that folder (mnist, cifar10, ...)."
        )
    augment = [n.strip() for n in config.augment.split(",") if n.strip()]
    unknown = [n for n in augment if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"config.augment names unknown {unknown}; allowed: {', '.join(AUGMENTATIONS)}.")
    for field in (
        "log_every_steps",
        "levels",
        "num_epochs",
        "batch_size",
        "eval_batch_size",
        "snn_num_steps",
        "report_examples",
        "calibration_examples",
        "image_size",
    ):
        _positive_int(config, field)
    for field in ("seed", "crop_padding", "cutout_size", "test_examples"):
        _int_at_least(config, field, 0)
    _real(config, "slip_c", 0.0, 1.0)
    _real(config, "slip_shift1")
    _real(config, "slip_shift2", 0.0, 1.0)
    _real(config, "qcfs_shift", 0.0, 1.0, high_open=True)
    _real(config, "threshold_init", 0.0, low_open=True)
    _real(config, "learning_rate", 0.0, low_open=True)
    _real(config, "momentum", 0.0, 1.0, high_open=True)
    _real(config, "weight_decay", 0.0)
    _real(config, "calibration_percentile", 0.0, 100.0, low_open=True)
    _real(config, "energy_pj_per_mac", 0.0)
    _real(config, "energy_pj_per_ac", 0.0)
    if config.snn_v0 is not None:
        _real(config, "snn_v0", 0.0, 1.0)
    steps = config.report_steps
    if not steps or not all(isinstance(t, int) and not isinstance(t, bool) and t > 0 for t in steps):
        raise ValueError(f"config.report_steps={steps!r} must be a non-empty sequence of positive ints.")
