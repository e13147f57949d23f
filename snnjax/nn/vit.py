"""A small vision transformer quantized for exact conversion (SpikeZIP-TF style).

Pre-norm blocks (LayerNorm → multi-head self-attention → residual, LayerNorm → ReLU MLP → residual),
a class token and learned position embeddings, and a linear head on the class token. Activations
are quantized by `snnjax.nn.layers.SignedQCFS` at the points SpikeZIP-TF quantizes: the embedded
tokens, the queries, keys and values (signed), the attention probabilities (unsigned), the MLP hidden
layer (unsigned: the quantizer is its ReLU) and each residual sum (signed). Softmax and LayerNorm stay
floats, as in every published method; the two attention products are `snnjax.nn.layers.Product`
layers so that the SNN finds them.

The SNN is this model run by `snnjax.conversion.transformer.spiking_transformer`: no other code.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax

from snnjax.nn.layers import ClassToken, PositionEmbedding, Product, SignedQCFS

__all__ = ["TRANSFORMERS", "Attention", "Block", "ViT"]


class Attention(nn.Module):
    """Multi-head self-attention with quantized queries, keys, values and probabilities.

    Attributes:
      dim: the token width D.
      heads: the number of heads (D divisible by it).
      levels: L of every quantizer.
    """

    dim: int
    heads: int
    levels: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``x``: ``[B, N, D]`` → ``[B, N, D]``."""
        batch, tokens, _ = x.shape
        head_dim = self.dim // self.heads

        def project(name: str) -> jax.Array:
            y = nn.Dense(self.dim, name=name)(x).reshape(batch, tokens, self.heads, head_dim)
            return SignedQCFS(self.levels, -self.levels, name=f"{name}_quant")(y)

        query, key, value = project("query"), project("key"), project("value")
        # The 1/√d scale is linear: it commutes with the spike-train product.
        scores = Product("bqhd,bkhd->bhqk", name="scores")(query, key) * (1.0 / math.sqrt(head_dim))
        probabilities = nn.softmax(scores, axis=-1)
        # λ = ¼: the first step θ = ¼/L resolves probabilities near 1/N (a larger λ rounds them to 0).
        probabilities = SignedQCFS(self.levels, 0, threshold_init=0.25, name="probs_quant")(probabilities)
        mixed = Product("bhqk,bkhd->bqhd", name="mix")(probabilities, value)
        return nn.Dense(self.dim, name="out")(mixed.reshape(batch, tokens, self.dim))


class Block(nn.Module):
    """A pre-norm transformer block whose residual sums are quantized (signed).

    Attributes:
      dim: the token width D.
      heads: attention heads.
      mlp_dim: the MLP's hidden width.
      levels: L of every quantizer.
    """

    dim: int
    heads: int
    mlp_dim: int
    levels: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``x``: ``[B, N, D]`` → ``[B, N, D]``."""
        levels = self.levels
        attended = Attention(self.dim, self.heads, levels, name="attention")(nn.LayerNorm(name="norm1")(x))
        x = SignedQCFS(levels, -levels, name="attention_residual")(x + attended)
        hidden = nn.Dense(self.mlp_dim, name="mlp_in")(nn.LayerNorm(name="norm2")(x))
        hidden = SignedQCFS(levels, 0, name="mlp_quant")(hidden)  # the MLP's ReLU, quantized
        return SignedQCFS(levels, -levels, name="mlp_residual")(
            x + nn.Dense(self.dim, name="mlp_out")(hidden)
        )


class ViT(nn.Module):
    """A vision transformer for small images, every activation quantized for exact conversion.

    Attributes:
      num_classes: outputs of the head.
      patch: the patch side in pixels (the image side divisible by it).
      dim: the token width D.
      depth: the number of blocks.
      heads: attention heads per block.
      mlp_dim: the MLP's hidden width.
      levels: L of every quantizer (`snnjax.nn.layers.SignedQCFS`).
    """

    num_classes: int
    patch: int = 4
    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp_dim: int = 128
    levels: int = 8

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        """Logits ``[B, num_classes]`` of ``images [B, H, W, C]`` (``train`` is accepted for the trainer)."""
        del train  # no dropout, no BatchNorm
        batch, height, width, channels = images.shape
        p = self.patch
        if height % p or width % p:
            raise ValueError(f"ViT: image side {height}×{width} is not divisible by the patch side {p}.")
        patches = images.reshape(batch, height // p, p, width // p, p, channels)
        patches = patches.transpose(0, 1, 3, 2, 4, 5).reshape(batch, (height // p) * (width // p), -1)
        x = nn.Dense(self.dim, name="patch_embedding")(patches)
        x = PositionEmbedding(name="position")(ClassToken(name="class_token")(x))
        x = SignedQCFS(self.levels, -self.levels, name="embedding_quant")(x)
        for i in range(self.depth):
            x = Block(self.dim, self.heads, self.mlp_dim, self.levels, name=f"block{i}")(x)
        return nn.Dense(self.num_classes, name="head")(nn.LayerNorm(name="norm")(x)[:, 0])


# config.model names of the transformers (converted by snnjax.conversion.transformer).
TRANSFORMERS = {"vit": ViT}
