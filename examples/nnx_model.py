"""Convert your own Flax NNX model: snnjax's NNX activation layer for QCFS, ``nnx.relu`` calls calibrated.

Shows: an ``nnx.Module`` trained with ``nnx.Optimizer``, whose activations are of both kinds the
converter takes: `snnjax.nnx.ThresholdActivation` (λ an ``nnx.Param``, trained; it becomes θ) and a
plain ``nnx.relu`` function call (its θ set from data by ``snnjax.calibrate_thresholds``). The module
itself is never changed: ``convert_variables`` reads its state into ``{"nnx": state, "sites": ...}``,
the form ``spiking_apply`` reads. Run: ``python examples/nnx_model.py`` (about 15 s on a 2-core CPU).
"""

import functools

import _digits
import jax
import optax
from flax import nnx

import snnjax
import snnjax.nnx

qcfs4 = functools.partial(snnjax.qcfs, levels=4)


class NNXNet(nnx.Module):
    """[B, 8, 8, 1] → conv → BatchNorm → QCFS → pool → conv → BatchNorm → ReLU → mean → logits [B, 10]."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 16, (3, 3), use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(16, momentum=0.9, rngs=rngs)
        self.act1 = snnjax.nnx.ThresholdActivation(qcfs4, threshold_init=2.0)
        self.conv2 = nnx.Conv(16, 32, (3, 3), use_bias=False, rngs=rngs)
        self.bn2 = nnx.BatchNorm(32, momentum=0.9, rngs=rngs)
        self.head = nnx.Linear(32, 10, rngs=rngs)

    def __call__(self, x):
        """Logits ``[B, 10]`` of images ``x [B, 8, 8, 1]``."""
        x = nnx.avg_pool(self.act1(self.bn1(self.conv1(x))), (2, 2), (2, 2))
        x = nnx.relu(self.bn2(self.conv2(x)))  # a ReLU *call*: an activation site named "relu_0"
        return self.head(x.mean(axis=(1, 2)))


dataset = _digits.load()
model = NNXNet(nnx.Rngs(0))
optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)


@nnx.jit
def train_step(model, optimizer, images, labels):
    """One Adam step; ``nnx.jit`` updates the model and the optimizer in place."""

    def loss_fn(model):
        logits = model(images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads = nnx.grad(loss_fn)(model)
    optimizer.update(model, grads)


model.train()  # BatchNorm on batch statistics while training
for epoch in range(15):
    batches = _digits.data.train_batches(dataset.train_images, dataset.train_labels, 64, 0, epoch)
    for images, labels in batches:
        train_step(model, optimizer, images, labels)
model.eval()
ann_accuracy = float(_digits.accuracy(model(dataset.test_images), dataset.test_labels))

# The ReLU call has no λ: its θ is the 99.9th percentile of its outputs on training images. An NNX
# model passes None as its variables (its own state) and gets {"nnx": state, "sites": {"relu_0": θ}}.
calibrated = snnjax.calibrate_thresholds(model, None, dataset.train_images[:256], percentile=99.9)
print("calibrated sites:", jax.tree.map(float, calibrated["sites"]))
snn_variables = snnjax.convert_variables(
    calibrated, fold_bn=True, model=model, inputs=dataset.test_images[:16]
)
snn = snnjax.spiking_model(model, v0=0.5, fold_bn=True)
logits = snnjax.spiking_apply(snn, snn_variables, dataset.test_images, num_steps=32)  # [32, 360, 10]
snn_accuracy = _digits.accuracy(snnjax.cumulative_mean_logits(logits), dataset.test_labels)  # [T]

print(f"ANN: {100 * ann_accuracy:.2f} %")
for t in (1, 2, 4, 8, 16, 32):
    print(f"SNN t={t:>2}: {100 * float(snn_accuracy[t - 1]):.2f} %")
assert float(snn_accuracy[-1]) >= ann_accuracy - 0.03, "the SNN at t = 32 should be close to its ANN"
