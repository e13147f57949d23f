"""Interoperability in one namespace: PyTorch checkpoints in, NIR graphs out (and back).

The code lives in modules named for what they hold: :mod:`snnjax.torch_checkpoints` (the safe ``.pth``
reader and the reference repositories' layouts) and :mod:`snnjax.nir_io` (NIR export and import).
"""

from snnjax.nir_io import from_nir, target_difference, to_nir
from snnjax.torch_checkpoints import LAYOUTS, TorchLayout, from_torch_state_dict, read_torch_checkpoint

__all__ = [
    "LAYOUTS",
    "TorchLayout",
    "from_nir",
    "from_torch_state_dict",
    "read_torch_checkpoint",
    "target_difference",
    "to_nir",
]
