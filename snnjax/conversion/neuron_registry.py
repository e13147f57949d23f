"""One record per spiking neuron: its function and everything the converter, reports and configs know of it.

A `Neuron` holds what used to be spread over name tables and ``neuron == "..."`` switches: the pure
function (`snnjax.core.neurons`, `snnjax.conversion.low_latency`), whether step mode can run it,
whether its result exists only at the end of a window, its pre-run rule, its options (read from the
function's signature), whether it takes a surrogate gradient, its card for reports (spike alphabet,
extra state), how a report counts its spikes, and its latency accounting. `NEURONS` maps names to
records; `neuron` looks one up with an error that lists them.

Adding a neuron is one `Neuron(...)` entry here: `snnjax.SpikingNetwork`, the config checks, the
reports and the contract test all read it.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Literal

from snnjax.conversion import low_latency
from snnjax.core import neurons as core

__all__ = ["NEURONS", "Neuron", "neuron"]


@dataclasses.dataclass(frozen=True)
class Neuron:
    """A spiking neuron and its facts.

    Attributes:
      name: the name ``spiking_model(neuron=...)`` and the configs use.
      fn: ``fn(z [T, ...], threshold, v0, **options) -> outputs [T, ...]`` (time-major).
      alphabet: the values one neuron can send in one step (reports).
      state: what each neuron keeps besides its membrane potential (reports).
      step: whether step mode (one ``lax.scan`` over the whole network, `snnjax.core.neurons.if_step`)
        can run it; the others see a layer's whole window.
      windowed: its output exists only at the end of a window (no per-step readout: each window length
        is a separate simulation).
      prerun: ``"none"``; ``"layer"`` (each layer pre-runs on the first ρ steps of its input, then
        replays it: the reference COS schedule); or ``"network"`` (ρ network-wide steps before the
        readout window: cos_network, SRP).
      surrogate: whether it takes a surrogate gradient (`snnjax.core.surrogates`).
      low_latency: chosen through ``config.post_conversion`` (a training-free low-latency method), not
        ``config.snn_neuron``.
      hardware_form: runs the integer units of `snnjax.conversion.hardware` (chosen through
        ``config.hardware_state_bits``; on float variables its rounding would be meaningless).
      spike_quantum: the value of one spike as a fraction of θ, or the name of the option that divides
        θ (``"max_spikes"`` for group neurons: m members of threshold θ/m); reports count
        ``|output| / quantum`` spikes.
    """

    name: str
    fn: Callable
    alphabet: str
    state: str
    step: bool = False
    windowed: bool = False
    prerun: Literal["none", "layer", "network"] = "none"
    surrogate: bool = False
    low_latency: bool = False
    hardware_form: bool = False
    spike_quantum: float | str = 1.0

    @property
    def options(self) -> dict[str, object]:
        """The neuron's keyword options and their defaults (from ``fn``'s signature)."""
        parameters = inspect.signature(self.fn).parameters
        return {n: p.default for n, p in parameters.items() if n not in ("z", "threshold", "v0")}

    def total_latency(self, steps: int, spiking_layers: int, prerun: int = 0) -> int:
        """Simulated steps from the first input to an output read after ``steps`` readout steps.

        Every simulated step counts (see `snnjax.conversion.low_latency`): ``(n + 1)·t`` for a windowed
        neuron, ``n·ρ + t`` for a per-layer pre-run, ``ρ + t`` for a network-wide one, else ``t``.

        Args:
          steps: t, readout steps (the window T for a windowed neuron).
          spiking_layers: n, spiking layers on the longest path.
          prerun: ρ (or SRP's τ).
        """
        if self.windowed:
            return (spiking_layers + 1) * steps
        if self.prerun == "layer":
            return spiking_layers * prerun + steps
        if self.prerun == "network":
            return prerun + steps
        return steps

    def simulated_steps(self, steps: int, prerun: int = 0) -> int:
        """Steps one simulation runs for a readout of ``steps`` (T).

        ``ρ + T`` with a network-wide pre-run; ``max(T, ρ)`` with a per-layer one (a shorter readout is
        the causal prefix of the pre-run); else T.
        """
        if self.prerun == "layer":
            return max(steps, prerun)
        if self.prerun == "network":
            return prerun + steps
        return steps


NEURONS: dict[str, Neuron] = {
    n.name: n
    for n in (
        Neuron("if", core.if_neuron, "binary {0, θ}", "none", step=True, surrogate=True),
        Neuron(
            "integrate_then_fire",
            core.integrate_then_fire,
            "binary {0, θ}",
            "none (integrates a window, then fires)",
            windowed=True,
        ),
        Neuron("signed_if", core.signed_if_neuron, "signed {−θ, 0, θ}", "net spike count (int)"),
        Neuron(
            "multi_spike_if",
            core.multi_spike_if_neuron,
            "multi-spike {0, θ, 2θ, …} (sinabs IAF)",
            "none (membrane floored at −θ)",
        ),
        Neuron(
            "fixed_point_if",
            core.fixed_point_if_neuron,
            "binary {0, θ}",
            "a saturating integer membrane of `bits` bits (hardware form: snnjax.conversion.hardware)",
            hardware_form=True,
        ),
        Neuron("burst", low_latency.burst_neuron, "up to m spikes {0, θ, …, m·θ}", "none", low_latency=True),
        Neuron(
            "group",
            low_latency.group_neuron,
            "up to m spikes {0, θ/m, …, θ}",
            "none (m members share one potential)",
            low_latency=True,
            spike_quantum="max_spikes",
        ),
        Neuron(
            "cos",
            low_latency.cos_neuron,
            "binary {0, θ}",
            "during the pre-run: spike count, lowest firing and highest silent potential; "
            "a ρ-step input buffer",
            prerun="layer",
            low_latency=True,
        ),
        Neuron(
            "cos_network",
            low_latency.cos_network_neuron,
            "binary {0, θ}",
            "during the pre-run: spike count, lowest firing and highest silent potential",
            prerun="network",
            low_latency=True,
        ),
        Neuron(
            "srp", low_latency.srp_neuron, "binary {0, θ}", "1 mask bit", prerun="network", low_latency=True
        ),
    )
}


def neuron(name: str) -> Neuron:
    """The record of neuron ``name``.

    Raises:
      ValueError: naming the neuron and the known ones.
    """
    if name not in NEURONS:
        raise ValueError(f"neuron {name!r} is unknown; allowed: {', '.join(NEURONS)}.")
    return NEURONS[name]
