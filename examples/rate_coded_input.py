"""Rate-coded input: the SNN reads Bernoulli spike trains instead of the analog image.

Shows: ``snnjax.spiking_apply_sequence`` runs the SNN on an explicit time-major input ``[T, B, H, W, C]``
(rate-coded, event or any other sequence), where ``spiking_apply`` repeats a static image at every
step. Each pixel of intensity p in [0, 1] becomes a spike train that fires with probability p at
every step (a Bernoulli, i.e. discrete-time Poisson, code), so its mean over time is the image the ANN
was trained on; the first layer then sees noisy spikes instead of the exact value, which costs
accuracy at small t and washes out as t grows. Run: ``python examples/rate_coded_input.py`` (about 15 s
on a 2-core CPU).
"""

import functools

import _digits
import flax.linen as nn
import jax
import jax.numpy as jnp

import snnjax

T = 64
QCFS = functools.partial(
    snnjax.ThresholdActivation, fn=functools.partial(snnjax.qcfs, levels=4), threshold_init=2.0
)


class CNN(nn.Module):
    """[B, 8, 8, 1] → (conv → BatchNorm → QCFS → 2×2 average pool) × 2 → dense → logits [B, 10]."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        """Logits of images ``x``; ``train`` uses and updates BatchNorm's batch statistics."""
        for width in (16, 32):
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(nn.Conv(width, (3, 3))(x))
            x = nn.avg_pool(QCFS()(x), (2, 2), (2, 2))
        return nn.Dense(10)(x.reshape((x.shape[0], -1)))


dataset = _digits.load()
ann = CNN()
variables = _digits.train(ann, dataset)
snn_variables = snnjax.convert_variables(variables, fold_bn=True, model=ann, inputs=dataset.test_images[:16])
snn = snnjax.spiking_model(ann, v0=0.5, fold_bn=True)

images = dataset.test_images  # [360, 8, 8, 1], pixels in [0, 1]
spikes = jax.random.bernoulli(jax.random.key(0), images, (T, *images.shape)).astype(jnp.float32)
print(f"input spikes {spikes.shape}: mean rate {spikes.mean():.3f}, mean pixel {images.mean():.3f}")

# num_steps checks the leading axis: a batch-major [B, T, ...] array by mistake is refused (when B ≠ T).
rate_logits = snnjax.spiking_apply_sequence(snn, snn_variables, spikes, num_steps=T)  # [T, B, 10]
analog_logits = snnjax.spiking_apply(snn, snn_variables, images, num_steps=T)  # the image at every step

labels = dataset.test_labels
rate_accuracy = _digits.accuracy(snnjax.cumulative_mean_logits(rate_logits), labels)  # [T]
analog_accuracy = _digits.accuracy(snnjax.cumulative_mean_logits(analog_logits), labels)
ann_accuracy = float(_digits.accuracy(ann.apply(variables, images), labels))
print(f"ANN: {100 * ann_accuracy:.2f} %")
print(f"{'t':>3} {'analog input':>13} {'rate-coded':>11}")
for t in (1, 2, 4, 8, 16, 32, 64):
    print(f"{t:>3} {100 * float(analog_accuracy[t - 1]):12.2f}% {100 * float(rate_accuracy[t - 1]):10.2f}%")
assert float(rate_accuracy[-1]) > float(rate_accuracy[0]), "more steps should average the input noise out"
assert float(rate_accuracy[-1]) >= ann_accuracy - 0.05
