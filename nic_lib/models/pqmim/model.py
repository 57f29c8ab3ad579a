r"""PQ-MIM, the whole model: autoencoder + product quantizer + MIM entropy model.

Ties :mod:`.autoencoder`, :mod:`.entropy_model` and :mod:`.coding` together behind
CompressAI's contract (``forward`` / ``compress`` / ``decompress``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .autoencoder import (
    DEFAULT_CODEBOOK_SIZE,
    DEFAULT_LATENT_DIM,
    DEFAULT_N,
    DEFAULT_SUBQUANTIZERS,
    DOWNSAMPLING,
    ProductQuantizer,
    analysis_transform,
    synthesis_transform,
)
from ..registry import register_model
from .coding import HYBRID_SEED, HYBRID_TEMPERATURE, decode_codes, encode_codes
from .entropy_model import GLOBAL_ATTENTION, MIM_HEADS, MIM_LAYERS, MIM_WIDTH, MaskedTokenModel
from .schedule import DEFAULT_STEPS

#: Krichevsky–Trofimov smoothing of the independent prior's counts (+1/2 per symbol).
PRIOR_PSEUDOCOUNT = 0.5
#: Bytes per pair of tokens that one pass of the MIM model holds at its peak while decoding:
#: the local-attention mask's int64 distances and the attention weights of every head grow
#: with (H·W)². Measured (peak RSS of one pass, M4-K256, radius 5, one thread): 64 B at
#: 32x48 tokens, 51 B at 48x64.
MIM_BYTES_PER_TOKEN_PAIR = 64
#: Tensors that stay float32 in a float16 checkpoint (:meth:`PQMIM.half_precision_keys`):
#: the codebooks and their EMA statistics (the codes are nearest-neighbour decisions
#: against them) and the prior counts.
FULL_PRECISION_PREFIXES = ("quantizer.", "prior_counts")


@register_model("pqmim")
class PQMIM(nn.Module):
    """PQ-MIM: autoencoder + product quantizer + MIM entropy model (El-Nouby et al. 2023).

    ``forward(x)`` trains the autoencoder (stage A); :meth:`mim_loss` trains the entropy
    model on frozen codes (stage B); :meth:`compress` / :meth:`decompress` code images
    for real. ``prior_counts`` holds code counts of the training data (filled in stage B)
    for the independent per-codebook prior baseline.

    Args:
        N: width of g_a/g_s.
        latent_dim: D.
        M: sub-quantizers.
        K: codebook size.
        width, layers, heads: MIM transformer.
        attention_radius: the encoder's default attention radius r (0 = global attention;
            :func:`~.radius.tune_attention_radius` picks it per checkpoint). Not a weight
            and not needed to decode (every stream carries its r), but it decides the
            encoder's stream, so a checkpoint stores it in its config.
    """

    downsampling_factor = DOWNSAMPLING

    def __init__(self, N: int = DEFAULT_N, latent_dim: int = DEFAULT_LATENT_DIM,
                 M: int = DEFAULT_SUBQUANTIZERS, K: int = DEFAULT_CODEBOOK_SIZE,
                 width: int = MIM_WIDTH, layers: int = MIM_LAYERS, heads: int = MIM_HEADS,
                 attention_radius: int = GLOBAL_ATTENTION):
        super().__init__()
        self.N, self.latent_dim, self.M, self.K = int(N), int(latent_dim), int(M), int(K)
        self.width, self.layers, self.heads = int(width), int(layers), int(heads)
        self.g_a = analysis_transform(self.N, self.latent_dim)
        self.g_s = synthesis_transform(self.N, self.latent_dim)
        self.quantizer = ProductQuantizer(self.latent_dim, self.M, self.K)
        self.entropy_model = MaskedTokenModel(self.M, self.K, self.width, self.layers, self.heads)
        self.register_buffer("prior_counts", torch.zeros(self.M, self.K, dtype=torch.float64))
        self.attention_radius = attention_radius

    @property
    def attention_radius(self) -> int:
        """The entropy model's default attention radius (see the class's Args)."""
        return self.entropy_model.attention_radius

    @attention_radius.setter
    def attention_radius(self, radius: int) -> None:
        self.entropy_model.attention_radius = int(radius)

    def architecture(self) -> dict[str, int]:
        """Constructor arguments (what a checkpoint stores to rebuild the model)."""
        return {k: getattr(self, k) for k in ("N", "latent_dim", "M", "K", "width", "layers",
                                               "heads", "attention_radius")}

    def half_precision_keys(self) -> set[str]:
        """State-dict keys a float16 checkpoint stores in float16
        (:func:`nic_lib.models.checkpoints.save_checkpoint`): the weight matrices and kernels
        of g_a, g_s and the MIM transformer (floating tensors of 2+ dimensions); biases,
        norms and :data:`FULL_PRECISION_PREFIXES` stay float32. The loaded model computes
        in float32 with the rounded weights, on the encoder's side and the decoder's alike.
        """
        return {k for k, v in self.state_dict().items()
                if v.is_floating_point() and v.dim() >= 2
                and not k.startswith(FULL_PRECISION_PREFIXES)}

    def coder_memory_bytes(self, latent_shape: tuple[int, int]) -> int:
        """Working memory of decoding an (h, w) token grid: one MIM pass at a time,
        :data:`MIM_BYTES_PER_TOKEN_PAIR` per token pair plus the logits and probabilities
        (float32) of every code (:func:`nic_lib.container.decode_memory_bytes` counts it
        instead of its per-symbol estimate of the CompressAI coders)."""
        tokens = int(latent_shape[0]) * int(latent_shape[1])
        # bytes = c · L² + 2 · 4 · L · M · K
        return MIM_BYTES_PER_TOKEN_PAIR * tokens**2 + 8 * tokens * self.M * self.K

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> dict:
        """Autoencoder pass: ``{"x_hat", "codes", "commitment_loss", "perplexity", "restarts"}``."""
        q = self.quantizer(self.g_a(x), generator)
        return {"x_hat": self.g_s(q["z_q"]), **{k: v for k, v in q.items() if k != "z_q"}}

    @torch.no_grad()
    def codes(self, x: Tensor) -> Tensor:
        """Codes (B, H/16, W/16, M) of images (B, 3, H, W) (sides multiples of 16)."""
        return self.quantizer.quantize(self.g_a(x))

    def decode_codes_to_image(self, codes: Tensor) -> Tensor:
        """g_s of the dequantized codes (B, H, W, M) -> (B, 3, 16H, 16W)."""
        return self.g_s(self.quantizer.dequantize(codes))

    def mim_loss(self, codes: Tensor, masked: Tensor, per_crop: bool = False) -> dict:
        r"""Stage-B loss: cross-entropy of the masked codes given the visible ones.

        .. math::
            L = Σ_{b,i ∈ masked} −\ln P(c_{b,i}) / \#masked          (pooled, MaskGIT)

            L = (1/B) Σ_b  Σ_{i ∈ masked_b} −\ln P(c_{b,i}) / \#masked_b   (per crop)

        Pooling weighs a crop by how many codes it hides; the per-crop mean weighs every crop
        alike, which with the ``"schedule"`` law of :func:`mask_ratio` makes the expected loss
        the coding schedule's bits per code.

        Args:
            codes: (B, H, W, M) long.
            masked: (B, H, W, M) bool per code (or (B, H, W) per position), True = hidden.
            per_crop: the per-crop mean instead of the pooled one.

        Returns:
            ``{"loss"`` (nats per masked code), ``"bits_per_code"`` (the same in bits,
            detached)``}``.
        """
        if masked.dim() == 3:
            masked = masked[..., None].expand_as(codes)
        logits = self.entropy_model(codes, ~masked)
        if per_crop:
            B = codes.shape[0]
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes.reshape(-1),
                                 reduction="none").reshape(B, -1)
            hidden = masked.reshape(B, -1).to(ce.dtype)
            loss = ((ce * hidden).sum(1) / hidden.sum(1).clamp_min(1)).mean()
        else:
            # L = Σ_masked −ln P(c) / #masked
            ce = F.cross_entropy(logits[masked], codes[masked], reduction="sum")
            loss = ce / masked.sum().clamp_min(1)
        return {"loss": loss, "bits_per_code": (loss / math.log(2)).detach()}

    def independent_prior(self) -> Tensor:
        """(M, K) per-codebook probabilities: (count + ½) / (total + K/2) of ``prior_counts``."""
        counts = self.prior_counts + PRIOR_PSEUDOCOUNT
        return (counts / counts.sum(-1, keepdim=True)).float()

    @torch.no_grad()
    def compress(self, x: Tensor, steps: int = DEFAULT_STEPS,
                 transmit_steps: int | None = None, radius: int | None = None) -> dict:
        """Code one image (1, 3, H, W), sides multiples of 16 (pad first).

        ``radius``: attention radius (default the entropy model's ``attention_radius``).

        Returns:
            ``{"strings": [[stream]], "shape": (H/16, W/16), "bits_est", "bits_per_step",
            "radius", "codes"}``; the stream carries its own 7-byte header.
        """
        codes = self.codes(x)[0]
        out = encode_codes(self.entropy_model, codes, steps, transmit_steps, radius)
        return {"strings": [[out["bytes"]]], "shape": tuple(codes.shape[:2]),
                "bits_est": out["bits_est"], "bits_per_step": out["bits_per_step"],
                "radius": out["radius"], "codes": codes}

    @torch.no_grad()
    def decompress(self, strings: list, shape=None, temperature: float = HYBRID_TEMPERATURE,
                   seed: int = HYBRID_SEED) -> dict:
        """Decode :meth:`compress`'s strings: ``{"x_hat", "codes"}`` (shape is in the header)."""
        codes = decode_codes(self.entropy_model, strings[0][0], temperature, seed)
        return {"x_hat": self.decode_codes_to_image(codes[None]).clamp(0, 1), "codes": codes}
