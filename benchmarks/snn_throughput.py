"""SNN evaluation throughput against its arithmetic limit, memory and compile time.

For each model, T, batch, simulation mode and dtype this times the jitted spiking apply (per-step
logits of a T-step simulation of a B-image batch) and, in the same run, **the limit**: the same
network's ANN forward pass with a plain ReLU on the ``[T·B]`` batch (the dense arithmetic every T-step
layer-mode SNN must do). ``overhead = snn_seconds / limit_seconds − 1`` is what the IF neurons, the
time axis and the readout cost on top.

    python -m benchmarks.snn_throughput --models=small_cnn,resnet20 --steps=4,32 --batches=64

Rows: ``model``, ``T``, ``batch``, ``mode``, ``dtype``, ``snn_seconds``, ``limit_seconds``,
``overhead``, ``images_per_second``, ``image_steps_per_second``, ``snn_temp_bytes`` /
``limit_temp_bytes`` (XLA's buffer assignment for the compiled function: the peak scratch memory),
``compile_seconds``, ``flops`` (2·MACs·T·B of the conv/dense layers), ``snn_flops_per_second`` and
``limit_flops_per_second``, ``backend``, ``device``. Timing: compile, one warm-up call, then the median of
``repeats`` timed calls.
"""

from __future__ import annotations

import functools
import statistics
import time

import jax
import jax.numpy as jnp
from flax import traverse_util

import snnjax
from snnjax import conversion
from snnjax.analysis import reports
from snnjax.core import activations

RELU = functools.partial(snnjax.Activation, fn=activations.relu)
QCFS = functools.partial(snnjax.ThresholdActivation, fn=functools.partial(activations.qcfs, levels=4))


def timed(fn, *args, repeats: int) -> tuple[float, float, int]:
    """(median seconds per call, compile seconds, temp bytes) of a jitted ``fn``."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    temp_bytes = int(getattr(memory, "temp_size_in_bytes", 0) or 0) if memory is not None else 0
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times), compile_seconds, temp_bytes


def without_thresholds(variables):
    """``variables`` without the activation thresholds (the ReLU limit network's tree)."""
    flat = traverse_util.flatten_dict(variables)
    return traverse_util.unflatten_dict({k: v for k, v in flat.items() if k[-1] != "threshold"})


def with_unit_thresholds(variables):
    """``variables`` with every activation threshold set to 1.

    θ = 1 keeps an untrained network's IF layers firing at a moderate rate on unit-variance input.
    """
    return jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.ones_like(x) if path[-1].key == "threshold" else x, variables
    )


def measure(model_name: str, num_steps: int, batch: int, mode: str, dtype: str, repeats: int = 3) -> dict:
    """Times one configuration (32×32×3 CIFAR-shaped random input, 10 classes)."""
    ann = snnjax.create_model(model_name, 10, QCFS)
    variables = with_unit_thresholds(ann.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    cast = functools.partial(jax.tree.map, lambda x: x.astype(dtype))
    snn = conversion.spiking_model(ann, mode=mode)
    snn_variables = cast(conversion.convert_variables(variables))
    limit_model = snnjax.create_model(model_name, 10, RELU)
    limit_variables = cast(without_thresholds(variables))
    images = jax.random.normal(jax.random.key(1), (batch, 32, 32, 3)).astype(dtype)
    stacked = jnp.broadcast_to(images, (num_steps, *images.shape)).reshape(-1, 32, 32, 3)

    def snn_logits(v, x):
        return conversion.spiking_apply(snn, v, x, num_steps)

    def limit_logits(v, x):
        return limit_model.apply(v, x)

    snn_seconds, compile_seconds, snn_temp = timed(snn_logits, snn_variables, images, repeats=repeats)
    limit_seconds, _, limit_temp = timed(limit_logits, limit_variables, stacked, repeats=repeats)
    # 2 FLOPs per MAC of the conv/dense layers (XLA's cost analysis misses cuDNN convolutions on GPU).
    macs = sum(layer["macs"] for layer in reports.linear_layer_costs(ann, variables, (32, 32, 3)))
    flops = 2.0 * macs * num_steps * batch
    return {
        "model": model_name,
        "T": num_steps,
        "batch": batch,
        "mode": mode,
        "dtype": dtype,
        "snn_seconds": snn_seconds,
        "limit_seconds": limit_seconds,
        "overhead": snn_seconds / limit_seconds - 1.0,
        "images_per_second": batch / snn_seconds,
        "image_steps_per_second": batch * num_steps / snn_seconds,
        "snn_temp_bytes": snn_temp,
        "limit_temp_bytes": limit_temp,
        "compile_seconds": compile_seconds,
        # The dense arithmetic (2·MACs·T·B) per second: the achieved rate of the SNN and of the limit.
        "flops": flops,
        "snn_flops_per_second": flops / snn_seconds,
        "limit_flops_per_second": flops / limit_seconds,
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
    }


HEADER = (
    f"{'model':>10} {'T':>3} {'B':>3} {'mode':>5} {'dtype':>8} {'snn ms':>9} {'limit ms':>9} {'overhead':>8} "
    f"{'img/s':>8} {'temp MB':>8} {'compile s':>9}"
)


def format_row(row: dict) -> str:
    """One line of the printed table."""
    return (
        f"{row['model']:>10} {row['T']:>3} {row['batch']:>3} {row['mode']:>5} {row['dtype']:>8} "
        f"{1e3 * row['snn_seconds']:9.1f} {1e3 * row['limit_seconds']:9.1f} {100 * row['overhead']:7.1f}% "
        f"{row['images_per_second']:8.1f} {row['snn_temp_bytes'] / 2**20:8.1f} {row['compile_seconds']:9.1f}"
    )
