"""Fine-tune a converted SNN with a surrogate gradient, for a better accuracy at a small T.

Shows: the IF spike is a step function, so by default ``jax.grad`` through the SNN is zero with respect
to its input currents. ``snnjax.spiking_model(..., surrogate=snnjax.surrogates.triangle())`` keeps the
forward pass exactly as it is and uses the triangle's derivative in the backward pass, so the
converted SNN trains with an ordinary Optax loop on its own time-averaged logits (weights and
thresholds θ alike). Run: ``python examples/surrogate_finetune.py`` (about 20 s on a 2-core CPU).
"""

import functools

import _digits
import flax.linen as nn
import jax
import optax

import snnjax

T = 2  # the short simulation we fine-tune for: one or two steps is where conversion loses accuracy
QCFS = functools.partial(
    snnjax.ThresholdActivation, fn=functools.partial(snnjax.qcfs, levels=8), threshold_init=2.0
)


class CNN(nn.Module):
    """[B, 8, 8, 1] → (conv → QCFS → 2×2 average pool) × 2 → dense → logits [B, 10]."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        """Logits of images ``x`` (``train`` is unused: the model has no BatchNorm)."""
        for width in (16, 32):
            x = nn.avg_pool(QCFS()(nn.Conv(width, (3, 3))(x)), (2, 2), (2, 2))
        return nn.Dense(10)(x.reshape((x.shape[0], -1)))


dataset = _digits.load()
ann = CNN()
variables = _digits.train(ann, dataset, epochs=10)
snn_variables = snnjax.convert_variables(variables)
snn = snnjax.spiking_model(ann, v0=0.5, surrogate=snnjax.surrogates.triangle())


def snn_accuracy(params):
    """The SNN's test accuracy after T steps with these parameters."""
    logits = snnjax.spiking_apply(snn, {"params": params}, dataset.test_images, num_steps=T)
    return float(_digits.accuracy(logits.mean(0), dataset.test_labels))


def loss_fn(params, images, labels):
    """Cross-entropy of the SNN's logits averaged over its T steps."""
    logits = snnjax.spiking_apply(snn, {"params": params}, images, num_steps=T).mean(0)  # [B, 10]
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


optimizer = optax.adam(1e-3)


@jax.jit
def step(params, opt_state, images, labels):
    """One Adam step on the SNN's parameters (weights and θ) through the surrogate gradient."""
    loss, grads = jax.value_and_grad(loss_fn)(params, images, labels)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


params = snn_variables["params"]
ann_accuracy = float(_digits.accuracy(ann.apply(variables, dataset.test_images), dataset.test_labels))
before = snn_accuracy(params)
opt_state = optimizer.init(params)
for epoch in range(3):
    batches = _digits.data.train_batches(dataset.train_images, dataset.train_labels, 64, 1, epoch)
    for images, labels in batches:
        params, opt_state, loss = step(params, opt_state, images, labels)
after = snn_accuracy(params)

# Without a surrogate the same loss has no gradient through the spikes: only the last (analog) layer
# and the thresholds would learn.
exact = snnjax.spiking_model(ann, v0=0.5)
conv_grad = jax.grad(
    lambda p: optax.softmax_cross_entropy_with_integer_labels(
        snnjax.spiking_apply(exact, {"params": p}, dataset.test_images[:64], T).mean(0),
        dataset.test_labels[:64],
    ).mean()
)(snn_variables["params"])["Conv_0"]["kernel"]

print(f"ANN: {100 * ann_accuracy:.2f} %")
print(f"SNN at T={T}: {100 * before:.2f} % converted, {100 * after:.2f} % after fine-tuning")
print(f"first conv's gradient without a surrogate: max |g| = {float(abs(conv_grad).max())}")
assert after > before, "fine-tuning at T should raise the SNN's accuracy at T"
assert float(abs(conv_grad).max()) == 0.0
