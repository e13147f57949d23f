"""Strict test environment: CPU only, 4 fake devices, no implicit rank promotion."""

import os

# Must run before JAX initializes its backends.
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
