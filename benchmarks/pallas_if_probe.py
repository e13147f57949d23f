"""Probe (GPU): does a Pallas kernel for the IF scan beat XLA's fusion of the same scan?

    python -m benchmarks.pallas_if_probe            # on a GPU machine

Times, on one IF layer's input ``z: [T, N]`` (N = VGG-16's first-layer neurons at batch 256):
the ``lax.scan`` IF neuron under jit (XLA; unrolled up to 32 steps on GPU) and
``snnjax.core.pallas.if_neuron_pallas``, in which each program owns a block of neurons, keeps their
membranes in registers and walks the T steps (one read of z and one write of the spikes, the
memory-traffic floor). Checks both give identical outputs; prints milliseconds and bandwidth.
"""

from __future__ import annotations

import functools
import statistics
import time

import jax
import jax.numpy as jnp

from snnjax.core.neurons import if_neuron_with_state
from snnjax.core.pallas import if_neuron_pallas


def _time(fn, z, repeats=20) -> float:
    jax.block_until_ready(fn(z))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(z))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    """Prints one line per T."""
    n = 256 * 32 * 32 * 64  # VGG-16 first layer, batch 256
    for num_steps in (4, 32):
        z = jax.random.normal(jax.random.key(0), (num_steps, n), jnp.float32)
        xla = jax.jit(lambda z: if_neuron_with_state(z, 1.0, 0.5)[0])
        pallas = jax.jit(functools.partial(if_neuron_pallas, threshold=1.0, v0=0.5))
        same = bool(jnp.array_equal(xla(z), pallas(z)))
        bytes_moved = 2 * z.size * z.dtype.itemsize
        for name, fn in (("xla", xla), ("pallas", pallas)):
            seconds = _time(fn, z)
            print(
                f"T={num_steps:>2} N={n} {name:>6}: {1e3 * seconds:7.3f} ms, "
                f"{bytes_moved / seconds / 1e9:7.1f} GB/s (identical outputs: {same})",
                flush=True,
            )


if __name__ == "__main__":
    main()
