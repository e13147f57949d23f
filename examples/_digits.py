"""What the examples share: the digits data and a short Adam training loop for a Linen ANN.

Not an example itself. The data is scikit-learn's handwritten digits as snnjax loads them
(`snnjax.io.data.load_dataset("digits")`: 8×8 images in [0, 1], channels-last `[B, 8, 8, 1]`, a seeded
80/20 split); the loop trains any Linen classifier, with or without BatchNorm, in a few seconds.
"""

import jax
import optax

from snnjax.io import data


def load():
    """The digits dataset: ``train_images [1437, 8, 8, 1]``, ``test_images [360, 8, 8, 1]``, labels."""
    return data.load_dataset("digits", seed=42)


def train(model, dataset, epochs=15, learning_rate=3e-3, seed=0):
    """Trains a Linen ``model(x, train=...)`` with Adam; returns its variables (params, batch_stats).

    λ, the activation layers' threshold parameter, is trained with the weights like any parameter.
    """
    variables = model.init(jax.random.key(seed), dataset.train_images[:1])
    optimizer = optax.adam(learning_rate)

    @jax.jit
    def step(variables, opt_state, images, labels):
        def loss_fn(params):
            logits, updates = model.apply(
                {**variables, "params": params}, images, train=True, mutable=["batch_stats"]
            )
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates

        grads, updates = jax.grad(loss_fn, has_aux=True)(variables["params"])
        param_updates, opt_state = optimizer.update(grads, opt_state, variables["params"])
        params = optax.apply_updates(variables["params"], param_updates)
        return {**variables, **updates, "params": params}, opt_state

    opt_state = optimizer.init(variables["params"])
    for epoch in range(epochs):
        batches = data.train_batches(dataset.train_images, dataset.train_labels, 64, seed, epoch)
        for images, labels in batches:
            variables, opt_state = step(variables, opt_state, images, labels)
    return variables


def accuracy(logits, labels):
    """Top-1 accuracy of ``logits [..., B, classes]`` against ``labels [B]``, over the last batch axis."""
    return (logits.argmax(-1) == labels).mean(-1)
