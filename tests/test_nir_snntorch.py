"""A NIR reader known broken: snnTorch 1.0.0 cannot run a graph where an IF node feeds another layer.

Its ``import_from_nir`` maps ``nir.IF`` to ``snn.Leaky(beta=0.9, init_hidden=False)``: a leaky neuron
(not an IF), which returns a ``(spikes, membrane)`` tuple that the next layer (here ``AvgPool2d``) is
handed as its input. Fixed upstream after 1.0.0 (other versions skip this test); should 1.0.0 ever run
the graph, the strict expected failure reports it.

Needs ``snntorch==1.0.0``, nirtorch and PyTorch (``pip install 'snnjax[sinabs,snntorch]'`` beside the
CPU wheel); skipped otherwise.
"""

import numpy as np
import pytest
from test_nir import BUILDS, IMAGE_SHAPE, converted

from snnjax import io as interop

torch = pytest.importorskip("torch")
snntorch = pytest.importorskip("snntorch", reason="pip install --no-deps snntorch==1.0.0")
pytest.importorskip("nirtorch", reason="snnTorch's NIR import needs nirtorch (the sinabs extra brings it)")


@pytest.mark.skipif(snntorch.__version__ != "1.0.0", reason="the known defect is snnTorch 1.0.0's")
@pytest.mark.xfail(strict=True, raises=TypeError, reason="snnTorch 1.0.0's IF import returns a tuple")
def test_snntorch_1_0_0_runs_an_exported_cnn():
    from snntorch import import_nir  # noqa: PLC0415 (optional reader)

    snn, variables = converted(BUILDS["cnn"])
    # snnjax's own semantics (AvgPool2d, which snnTorch reads; lossy for every NIR reader).
    graph = interop.export_nir(snn, variables, IMAGE_SHAPE, v0=0.5, lossy=True)
    model = import_nir.import_from_nir(graph)
    images = np.zeros((2, *IMAGE_SHAPE), np.float32)
    with torch.no_grad():
        model(torch.tensor(images.transpose(0, 3, 1, 2)))
