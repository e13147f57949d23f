"""snnjax's QCFS training step against PyTorch autograd, in float64: the same parameters after each step.

The PyTorch side is written here from the QCFS reference code's definitions (its ``MyFloor``: divide by
``up``, straight-through floor of ``x·L + ½``, clamp to [0, 1], multiply by ``up``; or the revised code's
clamp-then-floor; ``BatchNorm2d`` with momentum 0.1; ``SGD(momentum=0.9, weight_decay)`` on every
parameter). In float64 a floor sits on its boundary with probability ~0, so both codes must follow one
trajectory: conv, BatchNorm in training mode, QCFS and its λ gradient, the loss, coupled weight decay,
momentum and the running statistics. (In float32 they do not: see ``benchmarks/same_steps.py``.)
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snnjax.core.activations import qcfs
from snnjax.experiment import training
from snnjax.nn import layers

torch = pytest.importorskip("torch")

LEVELS, LAMBDA0, LR, MOMENTUM, WD = 4, 2.0, 0.1, 0.9, 5e-4


class TinyQCFS(nn.Module):
    """conv-BN-QCFS twice, global average pool, dense: ``[B, H, W, 3] -> [B, 3]``."""

    order: str
    running_var: str

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i in range(2):
            x = nn.Conv(4, (3, 3), padding=1, use_bias=False, name=f"conv{i}")(x)
            x = layers.BatchNorm(self.running_var, use_running_average=not train, name=f"bn{i}")(x)
            fn = functools.partial(qcfs, levels=LEVELS, order=self.order)
            x = layers.ThresholdActivation(fn, threshold_init=LAMBDA0, name=f"act{i}")(x)
        return nn.Dense(3, name="head")(x.mean(axis=(1, 2)))


def torch_model(order: str):
    """The same network in PyTorch, QCFS as the reference code writes it (float64)."""

    class QCFS(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up = torch.nn.Parameter(torch.tensor([LAMBDA0]))

        def forward(self, x):
            def floor_ste(u):  # the reference's GradFloor: floor forward, identity backward
                return u + (torch.floor(u) - u).detach()

            x = x / self.up
            if order == "clip_floor":
                x = floor_ste(torch.clamp(x, 0, 1) * LEVELS + 0.5) / LEVELS
            else:
                x = torch.clamp(floor_ste(x * LEVELS + 0.5) / LEVELS, 0, 1)
            return x * self.up

    torch.manual_seed(0)
    blocks = []
    for i in range(2):
        blocks += [torch.nn.Conv2d(3 if i == 0 else 4, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4)]
        blocks.append(QCFS())
    features = torch.nn.Sequential(*blocks)
    head = torch.nn.Linear(4, 3)
    model = torch.nn.ModuleDict({"features": features, "head": head}).double()
    # Non-trivial BatchNorm affine parameters so that their gradients matter.
    with torch.no_grad():
        for i in (1, 4):
            features[i].weight.uniform_(0.5, 1.5)
            features[i].bias.uniform_(-0.5, 0.5)
    return model


def to_flax(model) -> dict:
    """The PyTorch network's variables in the Linen model's layout."""
    f = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    params, stats = {}, {}
    for i, (conv, bn, act) in enumerate(((0, 1, 2), (3, 4, 5))):
        params[f"conv{i}"] = {"kernel": f[f"features.{conv}.weight"].transpose(2, 3, 1, 0)}
        params[f"bn{i}"] = {"scale": f[f"features.{bn}.weight"], "bias": f[f"features.{bn}.bias"]}
        params[f"act{i}"] = {"threshold": f[f"features.{act}.up"].reshape(())}
        stats[f"bn{i}"] = {"mean": f[f"features.{bn}.running_mean"], "var": f[f"features.{bn}.running_var"]}
    params["head"] = {"kernel": f["head.weight"].T, "bias": f["head.bias"]}
    return {"params": params, "batch_stats": stats}


def trajectories(order_jax: str, order_torch: str, running_var: str, steps: int = 5):
    """Both codes trained ``steps`` SGD steps from the same weights on the same batches (float64)."""
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(8, 5, 5, 3)), rng.integers(0, 3, 8)) for _ in range(steps)]
    model = torch_model(order_torch)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    with jax.enable_x64(True):
        variables = jax.tree.map(jnp.asarray, to_flax(model))
        state = training.TrainState.create(
            apply_fn=TinyQCFS(order_jax, running_var).apply,
            params=variables["params"],
            batch_stats=variables["batch_stats"],
            tx=training.sgd_coupled_weight_decay(LR, MOMENTUM, WD),
        )
        losses = []
        for images, labels in batches:
            model.train()
            optimizer.zero_grad()
            x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
            logits = model["head"](model["features"](x).mean(dim=(2, 3)))
            loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels))
            loss.backward()
            optimizer.step()
            state, metrics = training.train_step(state, jnp.asarray(images), jnp.asarray(labels))
            losses.append((loss.item(), float(metrics["loss"])))
        got = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    return got, to_flax(model), losses


@pytest.mark.parametrize("order", ["floor_clip", "clip_floor"])
def test_qcfs_training_steps_equal_pytorch_in_float64(order):
    got, want, losses = trajectories(order, order, "unbiased")
    torch_losses, snnjax_losses = np.array(losses).T
    np.testing.assert_allclose(snnjax_losses, torch_losses, rtol=1e-12)
    for (path, a), (_, b) in zip(
        jax.tree_util.tree_leaves_with_path(got), jax.tree_util.tree_leaves_with_path(want), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=jax.tree_util.keystr(path))
    # The batches reach both QCFS strips: with the other order the λ trajectories part.
    other = "clip_floor" if order == "floor_clip" else "floor_clip"
    _, other_torch, _ = trajectories(order, other, "unbiased")
    for act in ("act0", "act1"):
        assert abs(float(other_torch["params"][act]["threshold"] - got["params"][act]["threshold"])) > 1e-6


def test_flax_running_variance_is_the_only_difference_to_pytorch():
    # Flax averages the biased batch variance, PyTorch the unbiased one: parameters agree, variances not.
    got, want, _ = trajectories("floor_clip", "floor_clip", "biased")
    jax.tree.map(
        functools.partial(np.testing.assert_allclose, rtol=1e-10, atol=1e-12), got["params"], want["params"]
    )
    np.testing.assert_allclose(
        got["batch_stats"]["bn0"]["mean"], want["batch_stats"]["bn0"]["mean"], rtol=1e-10
    )
    assert not np.allclose(got["batch_stats"]["bn0"]["var"], want["batch_stats"]["bn0"]["var"], rtol=1e-6)
