"""The README's Python example runs as written."""

import pathlib
import re

import numpy as np
import pytest


@pytest.mark.slow
def test_readme_python_example_runs():
    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "README has no python example"
    namespace = {}
    exec(compile("\n".join(blocks), "README.md", "exec"), namespace)
    assert namespace["logits"].shape == (4, 2, 10)
    assert namespace["prediction_at_t"].shape == (4, 2)
    # The example's claim: the IF rate over T = L = 8 steps matches QCFS with L = 8.
    import snnjax

    expected = snnjax.qcfs(namespace["x"], 2.0, 8)
    np.testing.assert_allclose(namespace["rate"], expected, atol=1e-6)
