"""Convert your own Flax Linen model: a residual CNN with BatchNorm, written without snnjax's zoo.

Shows: snnjax activation layers created inside ``__call__`` of nested submodules, a residual add, a
global mean; BatchNorm folded by the model's structure (``convert_variables(..., fold_bn=True,
model=..., inputs=...)``); the SNN's accuracy at each t; layer mode and step mode giving the same
logits. Run: ``python examples/linen_model.py`` (about 15 s on a 2-core CPU).
"""

import functools

import _digits
import flax.linen as nn
import jax.numpy as jnp
import numpy as np

import snnjax

# QCFS with L = 4 levels and a trainable λ per layer (the pixels are in [0, 1], so λ starts at 2).
QCFS = functools.partial(
    snnjax.ThresholdActivation, fn=functools.partial(snnjax.qcfs, levels=4), threshold_init=2.0
)


class ConvBN(nn.Module):
    """3×3 convolution → BatchNorm (what conversion folds into one convolution)."""

    features: int

    @nn.compact
    def __call__(self, x, train):
        """``x [B, H, W, C]`` → ``[B, H, W, features]``."""
        x = nn.Conv(self.features, (3, 3), use_bias=False)(x)
        return nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)


class ResidualBlock(nn.Module):
    """x → ConvBN → QCFS → ConvBN, + x → QCFS: the add becomes an IF neuron's input in the SNN."""

    features: int

    @nn.compact
    def __call__(self, x, train):
        """``x [B, H, W, features]`` → the same shape."""
        y = QCFS()(ConvBN(self.features)(x, train))
        return QCFS()(ConvBN(self.features)(y, train) + x)


class MyResNet(nn.Module):
    """[B, 8, 8, 1] → stem → residual block → 2×2 average pool → residual block → mean → logits [B, 10]."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        """Logits of images ``x``; ``train`` uses and updates BatchNorm's batch statistics."""
        x = QCFS()(ConvBN(16)(x, train))
        x = ResidualBlock(16)(x, train)
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = ResidualBlock(16)(x, train)
        return nn.Dense(10)(x.mean(axis=(1, 2)))


dataset = _digits.load()
ann = MyResNet()
variables = _digits.train(ann, dataset)
ann_accuracy = float(_digits.accuracy(ann.apply(variables, dataset.test_images), dataset.test_labels))

# λ → θ and every BatchNorm folded into its convolution; the folded ANN is checked against the
# unfolded one on `inputs` before anything is returned.
snn_variables = snnjax.convert_variables(variables, fold_bn=True, model=ann, inputs=dataset.test_images[:16])
snn = snnjax.spiking_model(ann, v0=0.5, fold_bn=True)
logits = snnjax.spiking_apply(snn, snn_variables, dataset.test_images, num_steps=16)  # [16, 360, 10]
snn_accuracy = _digits.accuracy(snnjax.cumulative_mean_logits(logits), dataset.test_labels)  # [T]

print(f"ANN: {100 * ann_accuracy:.2f} %")
for t in (1, 2, 4, 8, 16):
    print(f"SNN t={t:>2}: {100 * float(snn_accuracy[t - 1]):.2f} %")

# Step mode advances the whole network one step at a time inside one lax.scan (memory constant in T,
# for online use); it runs the same neurons, so its logits are layer mode's.
step_snn = snnjax.spiking_model(ann, v0=0.5, fold_bn=True, mode="step")
step_logits = snnjax.spiking_apply(step_snn, snn_variables, dataset.test_images[:32], num_steps=16)
np.testing.assert_allclose(step_logits, logits[:, :32], rtol=1e-5, atol=1e-5)
print("step mode: the same logits as layer mode")
assert float(snn_accuracy[-1]) >= ann_accuracy - 0.03, "the SNN at t = 16 should be close to its ANN"
assert jnp.isfinite(logits).all()
