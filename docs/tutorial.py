"""The snnjax tutorial as a script: run it with `python docs/tutorial.py`; docs/tutorial.md shows it.

Written in `# %%` cells: docs/hooks.py renders the comment cells as the page's prose and the code cells
as its code blocks, and tests/test_docs.py runs it and checks what the prose claims.
"""

# %% [markdown]
# # Tutorial: train, convert, inspect, export
#
# This script walks through snnjax's whole path on real data, top to bottom: it trains a small
# convolutional network with QCFS activations on the handwritten digits bundled with scikit-learn,
# converts it into a spiking network of integrate-and-fire (IF) neurons, compares the two layer by
# layer, and exports the spiking network as a file that runs without snnjax. It runs as it stands
# (`python docs/tutorial.py`, about half a minute on a 2-core CPU) and cell by cell in any editor that
# knows the `# %%` cell format (VS Code, Jupyter with jupytext, Spyder). `tests/test_docs.py` runs it
# and checks what it claims.
#
# The idea in one paragraph: an IF neuron integrates its input current into a membrane potential and
# sends a spike of value θ (its threshold) whenever the potential reaches θ, subtracting θ again. Over
# T steps its mean output approximates a clipped, quantized ReLU of its mean input. QCFS
# (quantization-clip-floor-shift, Bu et al., ICLR 2022) trains the ANN with exactly that clipped,
# quantized ReLU, with a trainable ceiling λ per layer; conversion then sets θ = λ, and the SNN's
# accuracy approaches the ANN's after a few steps.

# %%
import functools
import os
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import snnjax
from snnjax.io import data

start = time.perf_counter()

# %% [markdown]
# ## 1. The data
#
# `snnjax.io.data.load_dataset("digits")` returns the 1,797 8×8 images of scikit-learn's digits as
# NHWC float32 arrays in [0, 1], split 80/20 into a stratified training and test set by the seed (the
# split the `quickstart` config trains on). snnjax's arrays are always channels-last, `[B, H, W, C]`.

# %%
dataset = data.load_dataset("digits", seed=42)
train_images, train_labels = dataset.train_images, dataset.train_labels  # [1437, 8, 8, 1], [1437]
test_images, test_labels = dataset.test_images, dataset.test_labels  # [360, 8, 8, 1], [360]
print(f"train {train_images.shape}, test {test_images.shape}")
print(f"pixels in [{train_images.min()}, {train_images.max()}], labels {sorted(set(train_labels.tolist()))}")

# %% [markdown]
# ## 2. An ANN built for conversion
#
# Any Flax model converts; what makes it convert *well* is an activation the IF neuron can reproduce.
# `snnjax.ThresholdActivation` is a Linen layer that owns a trainable threshold λ (a parameter named
# `threshold`) and applies a pure function of `(x, λ)`; with `snnjax.qcfs` and L = 4 levels that is
# `λ·clip(floor(x·L/λ + ½)/L, 0, 1)`, the mean output of an IF neuron over T = L steps. λ starts at 2
# here because the pixels are in [0, 1] (the default of 8 would leave the first steps silent).
#
# The rest is ordinary Flax: convolutions followed by BatchNorm (conversion folds it into the
# convolution), average pooling (it averages spikes as well as activations; a max-pool does not
# convert as simply), and a last dense layer that stays analog in the SNN and gives the logits.

# %%
LEVELS = 4  # L: quantization levels of QCFS; the SNN equals the ANN in expectation at any T
QCFS = functools.partial(
    snnjax.ThresholdActivation, fn=functools.partial(snnjax.qcfs, levels=LEVELS), threshold_init=2.0
)


class CNN(nn.Module):
    """[B, 8, 8, 1] → two (conv → BatchNorm → QCFS → 2×2 average pool) blocks → dense → logits [B, 10]."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        """Logits of images ``x``; ``train`` uses and updates BatchNorm's batch statistics."""
        for width in (16, 32):
            x = nn.Conv(width, (3, 3), use_bias=False)(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
            x = QCFS()(x)
            x = nn.avg_pool(x, (2, 2), (2, 2))
        return nn.Dense(10)(x.reshape((x.shape[0], -1)))


ann = CNN()
variables = ann.init(jax.random.key(0), train_images[:1])
print(jax.tree.map(jnp.shape, variables["params"]["ThresholdActivation_0"]))  # {'threshold': ()}

# %% [markdown]
# ## 3. Training
#
# A plain Optax loop; λ is a parameter like any other and is trained with the weights (QCFS passes
# the gradient straight through its `floor`). For the configs, the checkpoints and several devices,
# `snnjax.experiment.training.train_and_evaluate(config, workdir)` (the `snnjax-train` command) does
# the same with SGD, as the papers do; here twenty epochs of Adam take a few seconds.

# %%
optimizer = optax.adam(3e-3)


@jax.jit
def train_step(params, batch_stats, opt_state, images, labels):
    """One Adam step on a batch; returns the new parameters, BatchNorm statistics, optimizer state, loss."""

    def loss_fn(params):
        logits, updates = ann.apply(
            {"params": params, "batch_stats": batch_stats}, images, train=True, mutable=["batch_stats"]
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    param_updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, param_updates), updates["batch_stats"], opt_state, loss


params, batch_stats = variables["params"], variables["batch_stats"]
opt_state = optimizer.init(params)
for epoch in range(20):
    for images, labels in data.train_batches(train_images, train_labels, batch_size=64, seed=0, epoch=epoch):
        params, batch_stats, opt_state, loss = train_step(params, batch_stats, opt_state, images, labels)
variables = {"params": params, "batch_stats": batch_stats}

ann_accuracy = float((ann.apply(variables, test_images).argmax(-1) == test_labels).mean())
thresholds = {name: round(float(p["threshold"]), 3) for name, p in params.items() if "threshold" in p}
print(f"ANN test accuracy {100 * ann_accuracy:.2f} %, trained λ: {thresholds}")

# %% [markdown]
# ## 4. Conversion
#
# Two calls make the SNN, one for the variables and one for the model:
#
# * `snnjax.convert_variables` turns each trained λ into the IF threshold θ and, with `fold_bn=True`,
#   folds each BatchNorm into the convolution before it. Given `model=` and `inputs=`, it finds the
#   pairs from the model's structure and checks the folded network against the unfolded one.
# * `snnjax.spiking_model` is the same model with its activation layers swapped for IF neurons that
#   start at v(0) = v0·θ. v0 = ½ is QCFS's shift φ, which makes the expected conversion error zero.
#
# `snnjax.spiking_apply` runs the SNN for T steps on static images (the analog image is the first
# layer's input at every step) and returns the logits of every step, time-major: `[T, B, classes]`.
# The prediction after t steps is the mean of the logits of steps 1..t
# (`snnjax.cumulative_mean_logits`), so one 32-step run gives the accuracy at every t ≤ 32.

# %%
snn_variables = snnjax.convert_variables(variables, fold_bn=True, model=ann, inputs=test_images[:8])
snn = snnjax.spiking_model(ann, v0=0.5, fold_bn=True)

logits = snnjax.spiking_apply(snn, snn_variables, test_images, num_steps=32)  # [32, 360, 10]
predictions = snnjax.cumulative_mean_logits(logits).argmax(-1)  # [T, B]: the prediction after t steps
snn_accuracy = {t: float((predictions[t - 1] == test_labels).mean()) for t in (1, 2, 4, 8, 16, 32)}
print(f"{'':>9} accuracy")
print(f"{'ANN':>9} {100 * ann_accuracy:7.2f} %")
for t, accuracy in snn_accuracy.items():
    print(f"{f'SNN t={t}':>9} {100 * accuracy:7.2f} %{'  (t = L)' if t == LEVELS else ''}")

# %% [markdown]
# On a 2-core CPU (jax 0.10.2) this printed an ANN at 98.06 % and an SNN at 93.89 / 98.61 / 98.06 /
# 98.33 / 98.33 / 98.33 % for t = 1 / 2 / 4 / 8 / 16 / 32: within a few images of the ANN from t = 2
# on (one test image is 0.28 points), and further off at t = 1, where every neuron has had one chance
# to fire. Another CPU or JAX version trains slightly different weights, so expect numbers close to
# these rather than equal.
#
# ## 5. Inspecting the conversion
#
# `snnjax.spiking_layer_report` compares every activation layer of the ANN with the SNN at the steps
# asked for: the relative L2 error and cosine similarity between the ANN's activations and the SNN's
# mean output (rate·θ), the part of the error due to spikes arriving unevenly in time, and how much
# each layer fires. It takes batches of `(images, labels, mask)` (the mask marks padding), as
# `snnjax.core.parallel.padded_batches` yields them.

# %%
report = snnjax.spiking_layer_report(
    ann,
    variables,
    snn,
    snn_variables,
    snnjax.core.parallel.padded_batches(test_images, test_labels, batch_size=120),
    report_steps=(LEVELS, 32),
    v0=0.5,
)
print(f"{'layer':>22} {'t':>3} {'rel. L2':>8} {'cosine':>7} {'uneven':>7}   rate  silent")
for layer in report["layers"]:
    for t, errors in layer["errors"].items():  # keyed by t as a string, as in snn_eval.json
        print(
            f"{layer['name']:>22} {t:>3} {errors['relative_l2']:8.4f} {errors['cosine']:7.4f}"
            f" {errors['unevenness']:7.4f} {layer['mean_rate']:6.3f} {layer['fraction_silent']:7.2f}"
        )

# %% [markdown]
# At t = L the first layer equals the ANN exactly: its input is the image at every step, and over L
# steps an IF neuron's spike count for a constant input is QCFS's quantization of it. At t = 32 its
# rate has 32 levels instead of the ANN's 4, so it differs from the ANN's activation (it approaches
# the unquantized clipped ReLU). The second layer's input is the first layer's spikes, which arrive
# unevenly in time; `uneven` is the mean absolute error this causes, large at small t and shrinking
# as t grows, and on top of it come the errors carried in from the first layer. The rate (spikes per
# neuron per step, at t = 32) and the fraction of neurons that never fired show how sparse the
# network is.
#
# To look at the values themselves, `snnjax.conversion.record_activations` returns each activation
# site's input and output while the ANN or the SNN runs. The first spiking layer's input current,
# averaged over time, is the ANN's pre-activation (up to float rounding: the SNN's convolution has
# the BatchNorm folded into it):

# %%
ann_sites = snnjax.conversion.record_activations(ann, variables, test_images)
sequence = jnp.broadcast_to(test_images, (8, *test_images.shape))  # time-major [T, B, H, W, C]
snn_sites = snnjax.conversion.record_activations(snn, snn_variables, sequence)
first = next(iter(ann_sites))
ann_input, snn_input = ann_sites[first][0], snn_sites[first][0]  # [B, 8, 8, 16], [T, B, 8, 8, 16]
print(f"sites: {list(ann_sites)}")
print(f"{first}: ANN input {ann_input.shape}, SNN input {snn_input.shape}")
input_difference = float(jnp.abs(ann_input - snn_input.mean(0)).max())
print(f"max |ANN input − SNN input averaged over t| = {input_difference:.1e}")

# %% [markdown]
# ## 6. Export
#
# `snnjax.export_snn` writes the converted SNN, with its variables baked in and T fixed, as a
# `jax.export` artefact plus a JSON sidecar (input shape, T, v0, neuron, ...). `snnjax.import_snn`
# reads it back after checking the sidecar against the artefact; it needs JAX only, not the model's
# code. (With bare JAX: `jax.export.deserialize(open(path, "rb").read()).call(images)`.) The
# artefact's batch size is symbolic: any batch runs.

# %%
with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "digits_snn.jaxexport")
    sidecar = snnjax.export_snn(snn, snn_variables, image_shape=(8, 8, 1), num_steps=8, path=path)
    exported = snnjax.import_snn(path)
    exported_logits = exported(test_images)  # [8, 360, 10]

in_process_logits = jax.jit(lambda images: snnjax.spiking_apply(snn, snn_variables, images, 8))(test_images)
export_difference = float(jnp.abs(exported_logits - in_process_logits).max())
print(f"sidecar: T={sidecar['T']}, input {sidecar['input_shape']}, output {sidecar['output_shape']}")
print(f"exported vs in-process logits: max difference {export_difference}")

# %% [markdown]
# ## Where next
#
# * [Examples](examples.md): your own Linen or NNX model, fine-tuning the SNN with a surrogate
#   gradient, rate-coded input, low-latency neurons.
# * [Convert your own model](own_model.md): every kind of model and activation site the converter
#   takes, and what it refuses.
# * [The methods](methods/qcfs.md) and the [API reference](api/index.md).

# %%
print(f"tutorial done in {time.perf_counter() - start:.0f} s")
