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
    load_exported as load_exported,
)
from snnjax.io.nir import (
    NIRChain as NIRChain,
    from_nir as from_nir,
    target_difference as target_difference,
    to_nir as to_nir,
)
from snnjax.io.torch_checkpoints import (
    LAYOUTS as LAYOUTS,
    TorchLayout as TorchLayout,
    from_torch_state_dict as from_torch_state_dict,
    read_torch_checkpoint as read_torch_checkpoint,
)
