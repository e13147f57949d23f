"""Probe (GPU): does a Pallas kernel for the IF scan beat XLA's fusion of the same scan?

    python -m benchmarks.pallas_if_probe            # on a GPU machine

Times, on one IF layer's input ``z: [T, N]`` (N = VGG-16's first-layer neurons at batch 256):
``snnjax.neurons.if_neuron`` under jit (XLA; unrolled up to 32 steps on GPU) and a Pallas kernel in which
each program owns a block of neurons, keeps their membranes in registers and walks the T steps
(one read of z and one write of the spikes, the memory-traffic floor). Checks both give identical
outputs and prints milliseconds and the achieved bandwidth. Not used by the library.
"""

from __future__ import annotations

import functools
import statistics
import time

import jax
import jax.numpy as jnp

from snnjax.neurons import if_neuron

BLOCK = 1024


def if_pallas(z: jax.Array, threshold: float, v0: float = 0.5) -> jax.Array:
    """IF over ``z: [T, N]`` (N divisible by BLOCK) with the reference rule, as one Pallas kernel."""
    from jax.experimental import pallas as pl

    num_steps, n = z.shape

    def kernel(z_ref, out_ref):
        membrane = jnp.full((BLOCK,), v0 * threshold, z.dtype)
        for t in range(num_steps):  # static: T is a shape
            potential = membrane + z_ref[t, :]
            spikes = jnp.where(potential >= threshold, threshold, 0.0).astype(z.dtype)
            out_ref[t, :] = spikes
            membrane = potential - spikes

    spec = pl.BlockSpec((num_steps, BLOCK), lambda i: (0, i))
    return pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct(z.shape, z.dtype),
        grid=(n // BLOCK,),
        in_specs=[spec],
        out_specs=spec,
    )(z)


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
        xla = jax.jit(functools.partial(if_neuron, threshold=1.0, v0=0.5))
        pallas = jax.jit(functools.partial(if_pallas, threshold=1.0, v0=0.5))
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
