"""What a converted network does: layer reports, operation counts, energy, NeuroBench metrics, tables.

* `snnjax.analysis.reports`: per-layer firing, spike alphabets and operation counts (MAC/SOP), energy.
* `snnjax.analysis.neurobench`: the same numbers under NeuroBench's metric names.
* `snnjax.analysis.summaries`: the printed tables and the plots of a conversion run.
"""

from snnjax.analysis.neurobench import neurobench_metrics as neurobench_metrics
from snnjax.analysis.reports import (
    energy_report as energy_report,
    linear_layer_costs as linear_layer_costs,
    spiking_layer_report as spiking_layer_report,
)

__all__ = [
    "energy_report",
    "linear_layer_costs",
    "neurobench_metrics",
    "spiking_layer_report",
]
