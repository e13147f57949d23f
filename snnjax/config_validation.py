"""Start-up checks of an experiment config, with messages that name the field and the allowed values."""

from __future__ import annotations

import ml_collections

from snnjax.activations import QCFSOrder
from snnjax.data import DATASETS
from snnjax.layers import ThresholdParameterization
from snnjax.methods import Method, snn_neuron
from snnjax.models import MODELS
from snnjax.neurons import NEURONS

__all__ = ["validate_config"]


def _choice(config: ml_collections.ConfigDict, field: str, allowed) -> None:
    allowed = [str(a) for a in allowed]
    if str(config[field]) not in allowed:
        raise ValueError(f"config.{field}={config[field]!r} is invalid; allowed: {', '.join(allowed)}.")


def _positive_int(config: ml_collections.ConfigDict, field: str) -> None:
    value = config[field]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"config.{field} must be a positive int, got {value!r}.")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first invalid field of ``config``."""
    _choice(config, "dataset", DATASETS)
    _choice(config, "model", MODELS)
    _choice(config, "method", [m.value for m in Method])
    _choice(config, "qcfs_order", [o.value for o in QCFSOrder])
    _choice(config, "threshold_parameterization", [p.value for p in ThresholdParameterization])
    _choice(config, "checkpoint", ["latest", "best"])
    _choice(config, "snn_mode", ["layer", "step"])
    _choice(config, "conv_implementation", ["auto", "im2col", "hybrid", "xla"])
    _choice(config, "pooling", ["avg", "max"])
    _choice(config, "snn_max_pool", ["avg", "max_gate"])
    _choice(config, "snn_dtype", ["float32", "bfloat16"])
    _choice(config, "balancing", ["threshold", "weights"])
    _choice(config, "eval_precision", ["default", "high", "highest"])
    _choice(config, "torch_layout", ["qcfs_original", "qcfs_revised"])
    if config.snn_neuron is not None:
        _choice(config, "snn_neuron", NEURONS)
    if config.snn_mode == "step" and snn_neuron(config) != "if":
        raise ValueError(
            f"config.snn_mode='step' runs the 'if' neuron only; method {config.method!r} uses "
            f"{snn_neuron(config)!r} (config.snn_neuron): use config.snn_mode='layer'."
        )
    if config.snn_max_pool == "max_gate" and config.snn_mode == "step":
        raise ValueError("config.snn_max_pool='max_gate' needs config.snn_mode='layer'.")
    if config.balancing == "weights" and not config.fold_bn:
        raise ValueError(
            "config.balancing='weights' needs config.fold_bn=True (BN would undo the rescaling)."
        )
    for field in (
        "log_every_steps",
        "levels",
        "num_epochs",
        "batch_size",
        "eval_batch_size",
        "snn_num_steps",
        "report_examples",
    ):
        _positive_int(config, field)
    if not 0.0 <= config.slip_c <= 1.0:
        raise ValueError(f"config.slip_c={config.slip_c} must lie in [0, 1].")
    if not 0.0 <= config.qcfs_shift < 1.0:
        raise ValueError(f"config.qcfs_shift={config.qcfs_shift} must lie in [0, 1).")
    if config.threshold_init <= 0:
        raise ValueError(f"config.threshold_init={config.threshold_init} must be positive.")
    if config.learning_rate <= 0:
        raise ValueError(f"config.learning_rate={config.learning_rate} must be positive.")
    if not 0.0 < config.calibration_percentile <= 100.0:
        raise ValueError(
            f"config.calibration_percentile={config.calibration_percentile} must lie in (0, 100]."
        )
