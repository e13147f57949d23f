"""Files in and out: PyTorch checkpoints, NIR graphs, `jax.export` artefacts, datasets, Orbax checkpoints.

* `snnjax.io.torch_checkpoints`: a safe `.pth` reader (no torch, no code execution) and the reference
  repositories' layouts.
* `snnjax.io.nir`: NIR export (for snnjax's own reader or for sinabs) and import.
* `snnjax.io.export`: the converted SNN as a `jax.export` artefact with a JSON sidecar.
* `snnjax.io.data`, `streaming`, `augment`, `autoaugment`: datasets and on-device augmentation.
* `snnjax.io.checkpoints`: a training workdir's Orbax checkpoints.

Importing `snnjax.io` loads neither Orbax nor tensorflow-datasets; their modules load them.
"""

from snnjax.io.export import (
    ExportedSNN as ExportedSNN,
    export_snn as export_snn,
    import_snn as import_snn,
)
from snnjax.io.nir import (
    NIRChain as NIRChain,
    export_nir as export_nir,
    import_nir as import_nir,
    target_difference as target_difference,
)
from snnjax.io.torch_checkpoints import (
    LAYOUTS as LAYOUTS,
    TorchLayout as TorchLayout,
    import_torch_state_dict as import_torch_state_dict,
    read_torch_checkpoint as read_torch_checkpoint,
)

__all__ = [
    "export_nir",
    "export_snn",
    "ExportedSNN",
    "import_nir",
    "import_snn",
    "import_torch_state_dict",
    "LAYOUTS",
    "NIRChain",
    "read_torch_checkpoint",
    "target_difference",
    "TorchLayout",
]
