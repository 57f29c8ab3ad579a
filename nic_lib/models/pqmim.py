r"""PQ-MIM: a product-quantized VQ-VAE with a masked-image-modeling entropy model.

El-Nouby, Muckley, Ullrich, Laptev, Verbeek, Jégou, "Image Compression with Product
Quantized Masked Image Modeling" (TMLR 2023, arXiv 2212.07372). No public implementation
exists and the paper's sizes, schedule and step counts are not public (see
``../shared/reference/papers.md``); every choice below is ours, informed by MaskGIT
(Chang et al. 2022) and M2T (Mentzer et al. 2023), and named as a module constant.

.. code-block:: none

    x ─► g_a ─► z (B, D, H/16, W/16) ─► split into M sub-vectors of D/M
                                          │  product quantizer: codebook m (K entries)
                                          ▼
                         codes c (B, H/16, W/16, M) ∈ {0..K-1}^M ──► z_q ─► g_s ─► x_hat
                                          │
         MIM entropy model: bidirectional transformer over the token grid;
         token = Σ_m E_m[c_m] where visible, a mask token elsewhere;
         output: M categorical distributions per position.
         Coding: S steps of a fixed schedule; step s codes its group's codes with
         P(c | codes of steps < s) by rANS (CompressAI), bits = Σ −log2 P(c);
         at inference each token attends to tokens within radius r (tuned per
         checkpoint, written in the stream header; r = 0: global attention).

What is written here by hand, and why: the product quantizer with EMA codebooks and
dead-code restarts (a few lines; ``vector-quantize-pytorch`` would add a dependency for
them), the transformer's token embedding (the transformer itself is
``torch.nn.TransformerEncoder``), the coding schedule, and per-symbol categorical CDF
tables (quantized by CompressAI's ``pmf_to_quantized_cdf`` and coded by its rANS).

Checkpoints are not in :mod:`nic_lib.models.registry`: its ``default_config`` fills in
``N``/``M`` from the mbt2018 width tables (``M`` = latent channels there, the number of
sub-quantizers here), so PQ-MIM keeps its own plain-dict format
(:func:`save_pqmim` / :func:`load_pqmim`, read with ``weights_only=True``).
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from compressai._CXX import pmf_to_quantized_cdf as _pmf_to_quantized_cdf
from compressai.ans import BufferedRansEncoder, RansDecoder
from compressai.layers import ResidualBlock
from compressai.models.utils import conv, deconv
from torch import Tensor, nn

from nic_lib import coding, data, fileio, metrics
from nic_lib.models import hub

__all__ = [
    "MASK_LAWS",
    "PQMIM",
    "MaskedTokenModel",
    "ProductQuantizer",
    "analysis_transform",
    "best_radius",
    "bits_per_step",
    "categorical_cdfs",
    "checkpoint_dir",
    "code_image",
    "coding_schedule",
    "decode_codes",
    "default_checkpoint_path",
    "encode_codes",
    "estimate_bits",
    "find_checkpoints",
    "fixed_length_bits",
    "is_perceptual_checkpoint",
    "load_pqmim",
    "local_attention_mask",
    "mask_ratio",
    "quantizer_table",
    "radius_is_current",
    "radius_path",
    "random_mask",
    "read_radius",
    "rate_table",
    "save_pqmim",
    "save_tuned_radius",
    "spread_order",
    "synthesis_transform",
    "tune_attention_radius",
]

# ---------------------------------------------------------------------------------------
# Defaults (ours: the paper does not publish them)

#: Total downsampling of g_a: 4 stride-2 convolutions, the "downsampling 16" of the issue
#: (the VQ-VAE grids of MaskGIT/PQ-MIM: a 256 crop becomes 16x16 tokens).
DOWNSAMPLING = 16
#: Width of g_a/g_s: the cpu profile's N of mbt2018 doubled (no hyperprior to pay for).
DEFAULT_N = 128
#: Latent dimension D per position; D/M is the sub-vector size (8 at M=4).
DEFAULT_LATENT_DIM = 32
#: Sub-quantizers M and codebook size K: 4 x 256 = 32 bits per position fixed-length
#: (0.125 bpp), a low-rate point where MIM coding matters most.
DEFAULT_SUBQUANTIZERS = 4
DEFAULT_CODEBOOK_SIZE = 256
#: VQ-VAE's commitment weight β (van den Oord et al. 2017 use 0.25).
COMMITMENT_WEIGHT = 0.25
#: EMA decay of the codebooks (VQ-VAE-2, vector-quantize-pytorch: 0.99).
EMA_DECAY = 0.99
#: Laplace smoothing of the EMA cluster sizes (avoids division by zero).
EMA_EPS = 1e-5
#: A code whose EMA count falls below this many assignments per batch is dead: it is
#: restarted on a random encoder output of the batch (Dhariwal et al. 2020, Jukebox).
DEAD_CODE_THRESHOLD = 1.0
#: MIM transformer: width, depth, heads. Small enough to train on a CPU; the paper's size
#: is not public.
MIM_WIDTH = 256
MIM_LAYERS = 4
MIM_HEADS = 4
#: Feed-forward width = 4 x width (the transformer default since Vaswani et al. 2017).
MIM_FFN_RATIO = 4
#: Laws of the training masks' hidden fraction γ (:func:`mask_ratio`): ``"cosine"``
#: (MaskGIT's, the shipped checkpoints') and ``"schedule"`` (the fractions at which the
#: coding schedule codes its codes; the default of new training runs,
#: :data:`nic_lib.train_pqmim.DEFAULT_MASK_LAW`).
MASK_LAWS = ("cosine", "schedule")
#: Coding steps S: M2T finds gains saturate at 8-12 steps; 10 sits in that range.
DEFAULT_STEPS = 10
#: Group sizes follow M2T's power law: a fraction (s/S)^α of the tokens is known after
#: step s, with α = 2.2 (M2T's value): small first groups (no context yet), large last ones.
SCHEDULE_ALPHA = 2.2
#: Bits of the rANS coder's probabilities (CompressAI's default).
ENTROPY_CODER_PRECISION = 16
#: Hybrid mode: generated codes are sampled at this temperature (1 = the model's own
#: distribution; 0 = argmax).
HYBRID_TEMPERATURE = 1.0
#: Seed of the decoder's sampler in hybrid mode (the decoder must be deterministic).
HYBRID_SEED = 0
#: Krichevsky–Trofimov smoothing of the independent prior's counts (+1/2 per symbol).
PRIOR_PSEUDOCOUNT = 0.5
#: Plain-dict checkpoint format of :func:`save_pqmim`.
CHECKPOINT_FORMAT = "nic-repro/pqmim/2"
#: Header of a PQ-MIM bitstream: grid height, grid width (uint16), S, transmitted steps,
#: attention radius (uint8; 0 = global attention), big-endian: 7 bytes, counted in every bpp.
HEADER = struct.Struct(">HHBBB")
#: Attention radius at inference when a checkpoint has no tuned one: 0 = every token
#: attends to every token (how the MIM model was trained, on 12x12 token windows).
GLOBAL_ATTENTION = 0
#: Candidate radii of :func:`tune_attention_radius` (Chebyshev distance in tokens; 0 =
#: global). The training windows are 12x12 tokens, so radii >= 11 see the whole window.
RADIUS_CANDIDATES = (0, 3, 4, 5, 6, 7, 8, 11)
#: Plastic number: the R2 low-discrepancy sequence's generator (Roberts 2018).
PLASTIC = 1.324717957244746


# ---------------------------------------------------------------------------------------
# Autoencoder


def analysis_transform(N: int, latent_dim: int) -> nn.Sequential:
    """g_a: image (B, 3, H, W) -> latents (B, latent_dim, H/16, W/16).

    Four stride-2 5x5 convolutions (CompressAI's ``conv``) with residual blocks between
    them, as VQ-VAE encoders.
    """
    return nn.Sequential(
        conv(3, N), ResidualBlock(N, N),
        conv(N, N), ResidualBlock(N, N),
        conv(N, N), ResidualBlock(N, N),
        conv(N, latent_dim),
    )


def synthesis_transform(N: int, latent_dim: int) -> nn.Sequential:
    """g_s: quantized latents (B, latent_dim, h, w) -> image (B, 3, 16h, 16w)."""
    return nn.Sequential(
        deconv(latent_dim, N), ResidualBlock(N, N),
        deconv(N, N), ResidualBlock(N, N),
        deconv(N, N), ResidualBlock(N, N),
        deconv(N, 3),
    )


class ProductQuantizer(nn.Module):
    r"""M sub-quantizers, each with its own codebook of K entries of size D/M.

    Each latent vector z ∈ R^D is split into M sub-vectors z_m; sub-vector m is replaced by
    its nearest entry of codebook m. M = 1 is plain vector quantization, M = D scalar
    quantization with a learned K-level grid per channel.

    Codebooks are learned by exponential moving averages (VQ-VAE-2), not by gradients:
    ``n_mk ← γ n_mk + (1−γ) count_mk``, ``s_mk ← γ s_mk + (1−γ) Σ z_m[assigned k]``,
    ``e_mk = s_mk / n_mk`` (Laplace-smoothed). Codes whose EMA count drops below
    :data:`DEAD_CODE_THRESHOLD` are restarted on random encoder outputs of the batch.
    The encoder is pulled toward its codes by the commitment loss β‖z − sg(e)‖².
    Codebooks are initialised from the first training batch's encoder outputs.

    Args:
        latent_dim: D (divisible by M).
        M: number of sub-quantizers.
        K: entries per codebook.
        decay: EMA decay γ.
        commitment: β.
        dead_threshold: EMA count below which a code is restarted.
    """

    def __init__(self, latent_dim: int, M: int, K: int, decay: float = EMA_DECAY,
                 commitment: float = COMMITMENT_WEIGHT,
                 dead_threshold: float = DEAD_CODE_THRESHOLD):
        super().__init__()
        if latent_dim % M:
            raise ValueError(f"latent_dim {latent_dim} must be divisible by the number of "
                             f"sub-quantizers M={M}; pick M among the divisors of {latent_dim}")
        self.latent_dim, self.M, self.K = int(latent_dim), int(M), int(K)
        self.sub_dim = self.latent_dim // self.M
        self.decay, self.commitment, self.dead_threshold = decay, commitment, dead_threshold
        self.register_buffer("codebooks", torch.randn(M, K, self.sub_dim))
        self.register_buffer("cluster_size", torch.zeros(M, K))
        self.register_buffer("embed_sum", self.codebooks.clone())
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def split(self, z: Tensor) -> Tensor:
        """(B, D, H, W) -> (B, H, W, M, D/M)."""
        B, _, H, W = z.shape
        return z.permute(0, 2, 3, 1).reshape(B, H, W, self.M, self.sub_dim)

    def quantize(self, z: Tensor) -> Tensor:
        """Nearest codeword of each sub-vector: latents (B, D, H, W) -> codes (B, H, W, M)."""
        flat = self.split(z).reshape(-1, self.M, self.sub_dim).transpose(0, 1)  # (M, L, d)
        # ‖z − e‖² = ‖z‖² − 2 z·e + ‖e‖²  (‖z‖² is the same for every e: dropped)
        scores = (self.codebooks.pow(2).sum(-1)[:, None, :]
                  - 2 * torch.bmm(flat, self.codebooks.transpose(1, 2)))  # (M, L, K)
        codes = scores.argmin(-1)  # (M, L)
        B, _, H, W = z.shape
        return codes.transpose(0, 1).reshape(B, H, W, self.M)

    def dequantize(self, codes: Tensor) -> Tensor:
        """codes (B, H, W, M) -> quantized latents (B, D, H, W)."""
        B, H, W, M = codes.shape
        index = torch.arange(M, device=codes.device)
        vectors = self.codebooks[index, codes]  # (B, H, W, M, d)
        return vectors.reshape(B, H, W, self.latent_dim).permute(0, 3, 1, 2)

    @torch.no_grad()
    def _update(self, sub: Tensor, codes: Tensor, generator: torch.Generator | None) -> int:
        """EMA codebook update and dead-code restarts; returns the number restarted."""
        flat = sub.reshape(-1, self.M, self.sub_dim).transpose(0, 1).float()  # (M, L, d)
        onehot = F.one_hot(codes.reshape(-1, self.M).T, self.K).to(flat.dtype)  # (M, L, K)
        count = onehot.sum(1)  # (M, K)
        total = torch.bmm(onehot.transpose(1, 2), flat)  # (M, K, d)
        # n ← γ n + (1 − γ) count ;  s ← γ s + (1 − γ) Σ z
        self.cluster_size.mul_(self.decay).add_(count, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(total, alpha=1 - self.decay)
        # Laplace smoothing: ñ_k = (n_k + ε) / (n + K ε) · n
        n = self.cluster_size.sum(-1, keepdim=True)
        smoothed = (self.cluster_size + EMA_EPS) / (n + self.K * EMA_EPS) * n
        self.codebooks.copy_(self.embed_sum / smoothed[..., None])
        dead = self.cluster_size < self.dead_threshold  # (M, K)
        n_dead = int(dead.sum())
        if n_dead:
            L = flat.shape[1]
            pick = torch.randint(0, L, (self.M, self.K), generator=generator)
            samples = flat[torch.arange(self.M, device=flat.device)[:, None], pick.to(flat.device)]
            self.codebooks[dead] = samples[dead]
            self.cluster_size[dead] = self.dead_threshold
            self.embed_sum[dead] = samples[dead] * self.dead_threshold
        return n_dead

    @torch.no_grad()
    def _initialise(self, sub: Tensor, generator: torch.Generator | None) -> None:
        """Codebooks <- random encoder outputs of the first batch; counts <- uniform."""
        flat = sub.reshape(-1, self.M, self.sub_dim).transpose(0, 1).float()
        L = flat.shape[1]
        pick = torch.randint(0, L, (self.M, self.K), generator=generator)
        self.codebooks.copy_(flat[torch.arange(self.M, device=flat.device)[:, None],
                                  pick.to(flat.device)])
        self.cluster_size.fill_(L / self.K)
        self.embed_sum.copy_(self.codebooks * (L / self.K))
        self.initialized.fill_(True)

    def forward(self, z: Tensor, generator: torch.Generator | None = None) -> dict:
        """Quantize; in training mode also update the codebooks.

        Args:
            z: latents (B, D, H, W).
            generator: random source of initialisation and restarts (seeded by the
                training loop so runs are reproducible).

        Returns:
            ``{"z_q"`` (straight-through: forward value e, gradient to z),
            ``"codes"`` (B, H, W, M), ``"commitment_loss"`` β·mean‖z − sg(e)‖²,
            ``"perplexity"`` (mean over codebooks of exp(entropy of the batch's code use)),
            ``"restarts"`` (dead codes restarted this step)``}``.
        """
        sub = self.split(z)
        if self.training and not bool(self.initialized):
            self._initialise(sub.detach(), generator)
        codes = self.quantize(z.detach())
        e = self.dequantize(codes)
        # L_commit = β ‖z − sg(e)‖²
        commitment_loss = self.commitment * F.mse_loss(z, e.detach())
        restarts = self._update(sub.detach(), codes, generator) if self.training else 0
        # straight-through estimator: z_q = z + sg(e − z)
        z_q = z + (e - z).detach()
        usage = F.one_hot(codes.reshape(-1, self.M), self.K).float().mean(0)  # (M, K)
        entropy = -(usage * usage.clamp_min(1e-12).log()).sum(-1)
        return {"z_q": z_q, "codes": codes, "commitment_loss": commitment_loss,
                "perplexity": entropy.exp().mean(), "restarts": restarts}


# ---------------------------------------------------------------------------------------
# MIM entropy model


class MaskedTokenModel(nn.Module):
    r"""The MIM entropy model: a bidirectional transformer over the token grid.

    .. code-block:: none

        codes (B,H,W,M), visible (B,H,W,M) (or (B,H,W): all M codes alike)
          │  token_hw = Σ_m ( E_m[c_hw,m]  if (h,w,m) visible  else  mask_m )
          ▼
        + depthwise 3x3 convolution of the token grid (conditional positional encoding,
          Chu et al. 2021: translation invariant, any grid size)
          ▼
        TransformerEncoder (pre-norm, GELU, no causal mask) ─► LayerNorm ─► Linear
          ▼
        logits (B, H, W, M, K): M categorical distributions per position

    The unit of masking is one code (a position and a sub-quantizer), not a whole
    position: a token whose codes are partly known embeds the known ones and a per-codebook
    mask vector for the others. The M codes predicted for one position are conditionally
    independent given the visible context (one softmax per sub-quantizer), so the coding
    schedule (:func:`coding_schedule`) spreads a position's M codes over different steps:
    the later ones are then predicted from the earlier ones of the same token. This is our
    choice (the paper does not say how it treats the M codes of a token): the M
    sub-vectors of one 16x16 patch are strongly dependent, and coding them in the same step
    would give that dependence away.

    Local attention at inference: with ``radius`` r > 0, a token attends only to tokens
    within Chebyshev distance r on the grid (:func:`local_attention_mask`). The model is
    trained on 12x12 token windows (192-pixel crops), so on a whole Kodak image (32x48
    tokens) global attention mixes in far more, and farther, tokens than it ever saw;
    restricting attention to the neighbourhood it was trained on lowers the bits (measured by
    :func:`tune_attention_radius` on held-out photos). r is a coding parameter: the encoder
    writes it in the stream header and the decoder reads it from there.

    Args:
        M, K: sub-quantizers and codebook size.
        width, layers, heads: transformer size.

    Attributes:
        attention_radius: the default r of :func:`encode_codes` and :func:`bits_per_step`
            (not a weight: :func:`load_pqmim` sets it from the checkpoint's tuned
            ``<name>.radius.json`` when there is one; :data:`GLOBAL_ATTENTION` otherwise).
    """

    def __init__(self, M: int, K: int, width: int = MIM_WIDTH, layers: int = MIM_LAYERS,
                 heads: int = MIM_HEADS):
        super().__init__()
        self.M, self.K = int(M), int(K)
        self.attention_radius = GLOBAL_ATTENTION
        self.code_embeddings = nn.Embedding(self.M * self.K, width)
        self.mask_tokens = nn.Parameter(torch.zeros(self.M, width))  # one per codebook
        self.position_conv = nn.Conv2d(width, width, 3, padding=1, groups=width)
        layer = nn.TransformerEncoderLayer(width, heads, MIM_FFN_RATIO * width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, self.M * self.K)
        nn.init.normal_(self.code_embeddings.weight, std=0.02)
        nn.init.normal_(self.mask_tokens, std=0.02)
        self.register_buffer("code_offsets", torch.arange(self.M) * self.K, persistent=False)

    def forward(self, codes: Tensor, visible: Tensor, radius: int = GLOBAL_ATTENTION) -> Tensor:
        """Logits of every position's M codes given the visible ones.

        Args:
            codes: (B, H, W, M) long; values of hidden codes are ignored.
            visible: (B, H, W, M) bool per code, or (B, H, W) per position.
            radius: attention radius r in tokens (0 = global; see the class docstring).

        Returns:
            logits (B, H, W, M, K).
        """
        B, H, W, M = codes.shape
        if visible.dim() == 3:
            visible = visible[..., None].expand(B, H, W, M)
        # token = Σ_m (E[m·K + c_m] if visible else mask_m)
        emb = self.code_embeddings(codes.clamp(0, self.K - 1) + self.code_offsets)
        tokens = torch.where(visible[..., None], emb, self.mask_tokens).sum(-2)
        grid = tokens.permute(0, 3, 1, 2)
        grid = grid + self.position_conv(grid)
        mask = local_attention_mask(H, W, radius)
        h = self.transformer(grid.flatten(2).transpose(1, 2),
                             mask=None if mask is None else mask.to(grid.device))  # (B, H·W, width)
        return self.head(self.norm(h)).reshape(B, H, W, M, self.K)


@functools.lru_cache(maxsize=16)
def local_attention_mask(height: int, width: int, radius: int) -> Tensor | None:
    r"""Attention mask of local attention on an H x W token grid, or None for global.

    Token p = (i, j) may attend to token q = (i', j') iff max(|i - i'|, |j - j'|) <= r
    (a (2r+1) x (2r+1) window, clipped at the borders). Returned as PyTorch's boolean
    ``mask`` convention: True = *not* allowed.

    Args:
        height, width: grid size.
        radius: r >= 0; 0 means global attention.

    Returns:
        (H·W, H·W) bool, or None when r = 0 or the window covers the whole grid.

    Raises:
        ValueError: negative radius.
    """
    if radius < 0:
        raise ValueError(f"attention radius must be >= 0 (0 = global attention); got {radius}")
    if radius == 0 or radius >= max(height, width) - 1:
        return None
    i, j = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    i, j = i.reshape(-1), j.reshape(-1)
    # d(p, q) = max(|i_p − i_q|, |j_p − j_q|)  (Chebyshev distance)
    dist = torch.maximum((i[:, None] - i[None]).abs(), (j[:, None] - j[None]).abs())
    return dist > radius


def mask_ratio(n: int, generator: torch.Generator | None = None, law: str = "cosine",
               units: int | None = None, steps: int = DEFAULT_STEPS) -> Tensor:
    r"""Hidden fractions γ of training masks, drawn from one of :data:`MASK_LAWS`.

    ``"cosine"`` (MaskGIT): γ = cos(π r / 2), r ~ U[0, 1). Its law:
    P(γ ≤ g) = 1 − (2/π) arccos g on [0, 1] (most draws hide many codes).

    ``"schedule"``: the hidden fraction at which the coding schedule of ``units`` codes in
    ``steps`` steps (:func:`group_sizes`, known counts C_0 = 0 < C_1 < … < C_S = L) codes a
    code drawn uniformly from them. Step s codes n_s = C_s − C_{s−1} codes while
    1 − C_{s−1}/L of them are hidden, so

    .. math::  P(γ = 1 − C_{s−1}/L) = n_s / L,   s = 1..S

    drawn by inversion: r ~ U[0, 1), s = the step with C_{s−1}/L ≤ r < C_s/L. With a
    per-crop mean loss (``PQMIM.mim_loss(per_crop=True)``) the expected training loss is then
    the schedule's expected bits per code, up to the masks being random rather than the
    schedule's own. The cosine law draws γ > 0.9 for 29% of its masks; the schedule (S = 10)
    codes 13% of its codes there.

    Args:
        n: how many ratios.
        generator: random source (one uniform draw per ratio, whatever the law).
        law: one of :data:`MASK_LAWS`.
        units: L, codes per crop (``"schedule"`` only).
        steps: S (``"schedule"`` only; at most L).

    Returns:
        (n,) float ratios in (0, 1].

    Raises:
        ValueError: an unknown law, or ``"schedule"`` without ``units``.
    """
    r = torch.rand(n, generator=generator)
    if law == "cosine":
        # γ = cos(π r / 2)
        return torch.cos(math.pi * r / 2)
    if law != "schedule":
        raise ValueError(f"unknown masking law {law!r}; use one of {', '.join(MASK_LAWS)}")
    if units is None or units < 1:
        raise ValueError("the 'schedule' masking law needs units = codes per crop (>= 1)")
    sizes = group_sizes(units, min(steps, units))
    # known before step s: C_{s−1}/L, s = 1..S
    known = torch.tensor(np.cumsum([0, *sizes[:-1]]) / units, dtype=torch.float64)
    s = torch.searchsorted(known, r.double(), right=True) - 1
    # γ = 1 − C_{s−1}/L
    return (1.0 - known[s]).float()


def random_mask(batch: int, positions: int, generator: torch.Generator | None = None,
                law: str = "cosine", steps: int = DEFAULT_STEPS) -> Tensor:
    """Training masks: ceil(γ·L) random units of each row hidden, γ from :func:`mask_ratio`.

    Args:
        batch: rows B.
        positions: units per row L (codes: tokens x M).
        generator: random source.
        law: masking law (:data:`MASK_LAWS`).
        steps: S of the ``"schedule"`` law.

    Returns:
        (B, L) bool, True = masked (to predict); at least one per row.
    """
    gamma = mask_ratio(batch, generator, law, positions, steps)
    # masked count = ceil(γ L), at least 1
    count = torch.ceil(gamma * positions).clamp(1, positions).long()
    rank = torch.rand(batch, positions, generator=generator).argsort(-1).argsort(-1)
    return rank < count[:, None]


# ---------------------------------------------------------------------------------------
# Coding schedule


@functools.lru_cache(maxsize=64)
def spread_order(height: int, width: int) -> tuple[int, ...]:
    """A deterministic order of the grid's positions that spreads every prefix evenly.

    The i-th point of the R2 low-discrepancy sequence, (frac(½ + i/φ²), frac(½ + i/φ)) with
    φ the plastic number (Roberts 2018), claims the free grid cell nearest to it; M2T
    found such quasi-random orders as good as learned ones. O(L²) work, cached per size.

    Args:
        height, width: grid size.

    Returns:
        A permutation of ``range(height * width)`` (row-major indices).
    """
    n = height * width
    ys, xs = np.divmod(np.arange(n), width)
    cy, cx = (ys + 0.5) / height, (xs + 0.5) / width
    i = np.arange(n)
    # R2: p_i = frac(½ + i·(1/φ², 1/φ))
    py = (0.5 + i / PLASTIC**2) % 1.0
    px = (0.5 + i / PLASTIC) % 1.0
    free = np.ones(n, bool)
    order = np.empty(n, np.int64)
    scale_y, scale_x = float(height) ** 2, float(width) ** 2
    for k in range(n):
        d = scale_y * (cy - py[k]) ** 2 + scale_x * (cx - px[k]) ** 2  # in grid units²
        d[~free] = np.inf
        j = int(d.argmin())
        order[k], free[j] = j, False
    return tuple(order.tolist())


def group_sizes(positions: int, steps: int, alpha: float = SCHEDULE_ALPHA) -> list[int]:
    """Units coded at each of S steps: known fraction (s/S)^α after step s, each >= 1.

    Args:
        positions: units L (>= steps): codes (tokens x M) in :func:`coding_schedule`.
        steps: S.
        alpha: power-law exponent (M2T: 2.2).

    Returns:
        S positive sizes summing to L.

    Raises:
        ValueError: fewer units than steps (use fewer steps for such a small image).
    """
    if steps < 1 or positions < steps:
        raise ValueError(f"cannot code {positions} codes in {steps} steps: each step must "
                         "code at least one; use steps <= the number of codes (tokens x M)")
    # known after step s: C_s = round(L (s/S)^α), forced strictly increasing
    known = [0]
    for s in range(1, steps + 1):
        c = round(positions * (s / steps) ** alpha)
        c = min(max(c, known[-1] + 1), positions - (steps - s))
        known.append(c)
    return [b - a for a, b in itertools.pairwise(known)]


def coding_schedule(height: int, width: int, steps: int = DEFAULT_STEPS,
                    alpha: float = SCHEDULE_ALPHA, M: int = 1) -> list[Tensor]:
    """The codes coded at each step: fixed by (height, width, M, steps) alone.

    A unit is one code: position p (row-major) and sub-quantizer m, index ``p·M + m``. The
    order makes M rounds over the positions in :func:`spread_order`; round r codes, at the
    i-th position of that order, sub-quantizer (r + i) mod M. Every round covers the whole
    image evenly, every position gets one new code per round (so the later codes of a
    token are predicted knowing its earlier ones), and neighbouring positions of a round
    code different sub-quantizers. :func:`group_sizes` then cuts the H·W·M units into S
    groups. With M = 1 this is the plain position schedule.

    Args:
        height, width: token grid.
        steps: S.
        alpha: group-size exponent (:func:`group_sizes`).
        M: codes per position.

    Returns:
        S long tensors of unit indices ``p·M + m``; together a permutation of
        ``range(height · width · M)``.
    """
    spread = torch.tensor(spread_order(height, width))
    i = torch.arange(spread.numel())
    # round r: unit (spread[i], (r + i) mod M)
    order = torch.cat([spread * M + (r + i) % M for r in range(M)])
    sizes = group_sizes(height * width * M, steps, alpha)
    return list(torch.split(order, sizes))


# ---------------------------------------------------------------------------------------
# Entropy coding of the codes (CompressAI rANS, per-symbol categorical tables)


def categorical_cdfs(probs: Tensor, precision: int = ENTROPY_CODER_PRECISION) -> list[list[int]]:
    """rANS tables of categorical distributions, one per row.

    Each row's K probabilities plus an empty escape bin (CompressAI's table layout: the
    coder escapes values >= cdf_length − 2) are quantized by CompressAI's
    ``pmf_to_quantized_cdf``, which gives every bin at least one count, so every code
    stays codable whatever the model predicts. That floor also caps a code's cost at
    about ``precision`` bits: codes the model gives less than 2^-precision cost fewer real
    bits than their −log2 P (the stream then undercuts the estimate).

    Args:
        probs: (n, K) probabilities (rows sum to 1).
        precision: coder precision in bits.

    Returns:
        n CDF tables of K + 2 integers.
    """
    return [_pmf_to_quantized_cdf(row + [0.0], precision)
            for row in probs.double().tolist()]


def _code_table_args(cdfs: list[list[int]], K: int) -> tuple[list[int], list[int], list[int]]:
    """(indexes, cdf lengths, offsets) for ``encode_with_indexes``: symbol i uses table i."""
    n = len(cdfs)
    return list(range(n)), [K + 2] * n, [0] * n


#: Fewest symbols a CompressAI ``BufferedRansEncoder`` may flush: its output buffer holds
#: one 32-bit word per symbol, and a stream of n symbols of up to 16 bits needs up to
#: n/2 + 2 words (renormalisation words plus the 64-bit final state), so streams of 1-3
#: symbols overrun it (one symbol aborts the process with a double free).
_MIN_RANS_SYMBOLS = 4
#: Table of the padding symbols: two equiprobable values (the decoder never reads them).
_PAD_CDF = _pmf_to_quantized_cdf([0.5, 0.5, 0.0], ENTROPY_CODER_PRECISION)


def _flush(encoder: BufferedRansEncoder, symbols: int) -> bytes:
    """``encoder.flush()``, first padding a stream of fewer than :data:`_MIN_RANS_SYMBOLS`
    symbols with zeros (1 bit each, after the real symbols: decoders stop before them)."""
    pad = _MIN_RANS_SYMBOLS - symbols
    if pad > 0:
        encoder.encode_with_indexes([0] * pad, [0] * pad, [_PAD_CDF], [len(_PAD_CDF)], [0])
    return encoder.flush()


def _step_probs(entropy_model: MaskedTokenModel, codes: Tensor, visible: Tensor,
                group: Tensor, radius: int) -> Tensor:
    """(G, K) probabilities of a group's codes (unit indices) given the visible codes."""
    logits = entropy_model(codes[None], visible[None], radius)[0]  # (H, W, M, K)
    H, W, M, K = logits.shape
    return logits.reshape(H * W * M, K)[group].float().softmax(-1)


def _radius(entropy_model: MaskedTokenModel, radius: int | None) -> int:
    """The radius to code with: ``radius``, or the model's ``attention_radius`` when None."""
    r = int(getattr(entropy_model, "attention_radius", GLOBAL_ATTENTION) if radius is None
            else radius)
    if not 0 <= r <= 255:
        raise ValueError(f"attention radius must lie in 0..255 (one header byte; 0 = global "
                         f"attention); got {radius}")
    return r


@torch.no_grad()
def encode_codes(entropy_model: MaskedTokenModel, codes: Tensor, steps: int = DEFAULT_STEPS,
                 transmit_steps: int | None = None, radius: int | None = None) -> dict:
    """Entropy-code a code grid with the MIM model, step by step.

    The encoder runs exactly the computations the decoder will (one forward pass per
    step, batch of one), so both see bit-identical probabilities.

    Args:
        entropy_model: the MIM model (eval mode).
        codes: (H, W, M) long.
        steps: S.
        transmit_steps: code only the first s groups (hybrid mode); default all S.
        radius: attention radius (0 = global); default ``entropy_model.attention_radius``.
            Written in the header: the decoder uses the encoder's radius.

    Returns:
        ``{"bytes"`` (header + rANS stream), ``"bits_est"`` (Σ −log2 P of the coded codes),
        ``"bits_per_step"`` (list of S estimates; NaN for untransmitted steps), ``"radius"``
        (the radius used)``}``.
    """
    H, W, M = codes.shape
    s_max = steps if transmit_steps is None else int(transmit_steps)
    if not 0 <= s_max <= steps:
        raise ValueError(f"transmit_steps={transmit_steps} must lie in 0..steps={steps}")
    radius = _radius(entropy_model, radius)
    groups = coding_schedule(H, W, steps, M=M)
    flat = codes.reshape(-1)  # unit p·M + m
    visible = torch.zeros(H, W, M, dtype=torch.bool, device=codes.device)
    encoder = BufferedRansEncoder()
    per_step = [float("nan")] * steps
    coded = 0
    for s in range(s_max):
        group = groups[s]
        probs = _step_probs(entropy_model, codes, visible, group, radius)
        symbols = flat[group]
        # bits = Σ −log2 P(c)
        p = probs.double().gather(1, symbols[:, None].to(probs.device))
        per_step[s] = float(-torch.log2(p).sum())
        cdfs = categorical_cdfs(probs)
        indexes, lengths, offsets = _code_table_args(cdfs, entropy_model.K)
        encoder.encode_with_indexes(symbols.tolist(), indexes, cdfs, lengths, offsets)
        coded += len(group)
        visible.view(-1)[group] = True
    stream = _flush(encoder, coded)
    header = HEADER.pack(H, W, steps, s_max, radius)
    return {"bytes": header + stream, "bits_est": float(np.nansum(per_step)),
            "bits_per_step": per_step, "radius": radius}


@torch.no_grad()
def decode_codes(entropy_model: MaskedTokenModel, stream: bytes,
                 temperature: float = HYBRID_TEMPERATURE, seed: int = HYBRID_SEED) -> Tensor:
    """Decode a stream of :func:`encode_codes`; generate untransmitted steps (hybrid mode).

    The grid size, S, the transmitted steps and the attention radius come from the stream's
    header; the model's own ``attention_radius`` is not used.

    Args:
        entropy_model: the same MIM model as the encoder's (eval mode).
        stream: bytes from :func:`encode_codes`.
        temperature: sampling temperature of generated steps (0 = argmax).
        seed: seed of the sampler of generated steps.

    Returns:
        codes (H, W, M) long.

    Raises:
        ValueError: the stream is too short to hold a header.
    """
    if len(stream) < HEADER.size:
        raise ValueError(f"a PQ-MIM stream starts with a {HEADER.size}-byte header; got "
                         f"{len(stream)} bytes (was it written by encode_codes?)")
    H, W, steps, s_max, radius = HEADER.unpack(stream[:HEADER.size])
    M, K = entropy_model.M, entropy_model.K
    device = entropy_model.head.weight.device
    groups = coding_schedule(H, W, steps, M=M)
    codes = torch.zeros(H, W, M, dtype=torch.long, device=device)
    flat = codes.view(-1)
    visible = torch.zeros(H, W, M, dtype=torch.bool, device=device)
    decoder = RansDecoder()
    decoder.set_stream(stream[HEADER.size:])
    generator = torch.Generator().manual_seed(seed)
    for s, group in enumerate(groups):
        probs = _step_probs(entropy_model, codes, visible, group, radius)
        if s < s_max:
            cdfs = categorical_cdfs(probs)
            indexes, lengths, offsets = _code_table_args(cdfs, K)
            values = decoder.decode_stream(indexes, cdfs, lengths, offsets)
            values = torch.tensor(values, dtype=torch.long, device=device)
        else:
            values = _sample(probs.cpu(), temperature, generator).to(device)
        flat[group] = values
        visible.view(-1)[group] = True
    return codes


def _sample(probs: Tensor, temperature: float, generator: torch.Generator) -> Tensor:
    """One code per row of (n, K) probabilities: argmax at 0, else p^(1/T) renormalised."""
    if temperature <= 0:
        return probs.argmax(-1)
    # p_T ∝ p^(1/T)
    logits = probs.clamp_min(1e-30).log() / temperature
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


@torch.no_grad()
def bits_per_step(entropy_model: MaskedTokenModel, codes: Tensor,
                  steps: int = DEFAULT_STEPS, radius: int | None = None) -> list[float]:
    """Σ −log2 P of each step's codes given the previous steps (no coding).

    Args:
        entropy_model: the MIM model.
        codes: (H, W, M) long.
        steps: S.
        radius: attention radius (0 = global); default ``entropy_model.attention_radius``.

    Returns:
        S bit counts (their sum is the MIM rate estimate).
    """
    H, W, M = codes.shape
    flat = codes.reshape(-1)
    visible = torch.zeros(H, W, M, dtype=torch.bool, device=codes.device)
    radius = _radius(entropy_model, radius)
    out = []
    for group in coding_schedule(H, W, steps, M=M):
        probs = _step_probs(entropy_model, codes, visible, group, radius)  # (G, K)
        p = probs.double().gather(-1, flat[group][..., None])
        out.append(float(-torch.log2(p).sum()))
        visible.view(-1)[group] = True
    return out


def estimate_bits(probs: Tensor, codes: Tensor) -> float:
    """Σ −log2 P(code) of codes under per-codebook probabilities (the independent prior).

    Args:
        probs: (M, K) probabilities of each codebook's entries.
        codes: (..., M) long.

    Returns:
        Bits.
    """
    flat = codes.reshape(-1, probs.shape[0])
    p = probs.double()[torch.arange(probs.shape[0]), flat]
    return float(-torch.log2(p).sum())


def fixed_length_bits(codes: Tensor, K: int) -> float:
    """Fixed-length coding: log2 K bits per code."""
    return codes.numel() * math.log2(K)


def encode_independent(probs: Tensor, codes: Tensor) -> bytes:
    """rANS stream of codes (..., M), each coded with its codebook's fixed probabilities.

    Args:
        probs: (M, K) independent prior.
        codes: (..., M) long.

    Returns:
        The stream (no header: the grid size is the caller's).
    """
    M, K = probs.shape
    cdfs = categorical_cdfs(probs)
    symbols = codes.reshape(-1, M)
    indexes = torch.arange(M).repeat(symbols.shape[0]).tolist()
    encoder = BufferedRansEncoder()
    encoder.encode_with_indexes(symbols.reshape(-1).tolist(), indexes, cdfs, [K + 2] * M, [0] * M)
    return _flush(encoder, len(indexes))


def decode_independent(probs: Tensor, stream: bytes, positions: int) -> Tensor:
    """Inverse of :func:`encode_independent`: (positions, M) codes."""
    M, K = probs.shape
    cdfs = categorical_cdfs(probs)
    decoder = RansDecoder()
    decoder.set_stream(stream)
    values = decoder.decode_stream(torch.arange(M).repeat(positions).tolist(), cdfs,
                                   [K + 2] * M, [0] * M)
    return torch.tensor(values, dtype=torch.long).reshape(positions, M)


# ---------------------------------------------------------------------------------------
# The whole model


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
    """

    downsampling_factor = DOWNSAMPLING

    def __init__(self, N: int = DEFAULT_N, latent_dim: int = DEFAULT_LATENT_DIM,
                 M: int = DEFAULT_SUBQUANTIZERS, K: int = DEFAULT_CODEBOOK_SIZE,
                 width: int = MIM_WIDTH, layers: int = MIM_LAYERS, heads: int = MIM_HEADS):
        super().__init__()
        self.N, self.latent_dim, self.M, self.K = int(N), int(latent_dim), int(M), int(K)
        self.width, self.layers, self.heads = int(width), int(layers), int(heads)
        self.g_a = analysis_transform(self.N, self.latent_dim)
        self.g_s = synthesis_transform(self.N, self.latent_dim)
        self.quantizer = ProductQuantizer(self.latent_dim, self.M, self.K)
        self.entropy_model = MaskedTokenModel(self.M, self.K, self.width, self.layers, self.heads)
        self.register_buffer("prior_counts", torch.zeros(self.M, self.K, dtype=torch.float64))

    def architecture(self) -> dict[str, int]:
        """Constructor arguments (what a checkpoint stores to rebuild the model)."""
        return {k: getattr(self, k) for k in ("N", "latent_dim", "M", "K", "width", "layers",
                                               "heads")}

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


# ---------------------------------------------------------------------------------------
# Rate points, one image end to end


def quantizer_table(latent_dim: int, Ms, Ks) -> list[dict]:
    """Rate and codebook size of each (M, K) choice for a latent of dimension D.

    Args:
        latent_dim: D.
        Ms: numbers of sub-quantizers (divisors of D).
        Ks: codebook sizes.

    Returns:
        Rows ``{"M", "K", "kind", "bits_per_position" (M log2 K), "bpp_fixed"
        (÷ 16²), "codebook_vectors" (M·K entries of D/M), "codebook_floats" (K·D),
        "log2_vq_entries" (one VQ codebook reaching the same rate: K^M entries)}``.
    """
    rows = []
    for M in Ms:
        if latent_dim % M:
            continue
        for K in Ks:
            kind = "VQ" if M == 1 else ("scalar" if M == latent_dim else "PQ")
            bits = M * math.log2(K)
            rows.append({"M": M, "K": K, "kind": kind, "bits_per_position": bits,
                         "bpp_fixed": bits / DOWNSAMPLING**2, "codebook_vectors": M * K,
                         "codebook_floats": K * latent_dim, "log2_vq_entries": bits})
    return rows


@torch.no_grad()
def code_image(model: PQMIM, img: np.ndarray, steps: int = DEFAULT_STEPS,
               transmit_steps: int | None = None, temperature: float = HYBRID_TEMPERATURE,
               seed: int = HYBRID_SEED, radius: int | None = None) -> dict:
    """Compress and decompress one uint8 image, measuring the three rates.

    Args:
        model: PQ-MIM in eval mode.
        img: uint8 (H, W, 3).
        steps, transmit_steps: schedule and hybrid mode (see :func:`encode_codes`).
        temperature, seed: sampler of generated steps (hybrid mode).
        radius: attention radius (default the model's tuned ``attention_radius``).

    Returns:
        ``{"bytes", "bpp" (real stream incl. header), "bpp_est" (Σ −log2 P of MIM),
        "bpp_independent", "bpp_fixed", "bits_per_step", "radius", "x_hat" (uint8), "exact"
        (decoded codes == encoded codes, for full transmission)}``.
    """
    h, w = img.shape[:2]
    x = coding.pad_to(coding.to_tensor(img), DOWNSAMPLING)
    device = next(model.parameters()).device
    out = model.compress(x.to(device), steps, transmit_steps, radius)
    dec = model.decompress(out["strings"], temperature=temperature, seed=seed)
    n_bytes = len(out["strings"][0][0])
    codes = out["codes"]
    pixels = h * w
    return {"bytes": n_bytes, "bpp": 8.0 * n_bytes / pixels, "bpp_est": out["bits_est"] / pixels,
            "bpp_independent": estimate_bits(model.independent_prior().cpu(), codes.cpu()) / pixels,
            "bpp_fixed": fixed_length_bits(codes, model.K) / pixels,
            "bits_per_step": out["bits_per_step"],
            "radius": out["radius"],
            "x_hat": coding.from_tensor(dec["x_hat"][..., :h, :w].cpu()),
            "exact": bool(torch.equal(dec["codes"], codes))}


#: Columns of :func:`rate_table`.
RATE_COLUMNS = ("image", "codec", "setting", "steps", "transmit_steps", "radius", "bytes", "bpp",
                "bpp_est", "bpp_independent", "bpp_fixed", "psnr_rgb", "ms_ssim", "exact")


def rate_table(models: dict[str, PQMIM], images, steps: int = DEFAULT_STEPS,
               transmit_steps=(None,), temperature: float = HYBRID_TEMPERATURE,
               radius: int | None = None) -> pd.DataFrame:
    """Code every image with every model (and every hybrid setting); one tidy row each.

    Args:
        models: ``{label: model}``; the label is the ``codec`` column.
        images: ``(name, uint8 (H, W, 3))`` pairs.
        steps: S.
        transmit_steps: values of s to run (None = all S steps, lossless code transmission).
        temperature: sampler of generated steps.
        radius: attention radius of every model (default: each model's tuned one).

    Returns:
        DataFrame with :data:`RATE_COLUMNS` (``setting`` = transmitted steps, S when all).
    """
    rows = []
    for label, model in models.items():
        for s in transmit_steps:
            for name, img in images:
                r = code_image(model, img, steps, s, temperature, radius=radius)
                rows.append({
                    "image": name, "codec": label, "setting": steps if s is None else s,
                    "steps": steps, "transmit_steps": steps if s is None else s,
                    **{k: r[k] for k in ("radius", "bytes", "bpp", "bpp_est", "bpp_independent",
                                         "bpp_fixed")},
                    "psnr_rgb": metrics.psnr(img, r["x_hat"]),
                    "ms_ssim": (metrics.ms_ssim(img, r["x_hat"])
                                if min(img.shape[:2]) >= metrics.MS_SSIM_MIN_SIDE
                                else float("nan")),
                    "exact": r["exact"]})
    return pd.DataFrame(rows, columns=list(RATE_COLUMNS))


@torch.no_grad()
def tune_attention_radius(model: PQMIM, images, steps: int = DEFAULT_STEPS,
                          candidates=RADIUS_CANDIDATES) -> pd.DataFrame:
    """Bits of every image's codes under each candidate attention radius (no coding).

    The radius that minimises the total is the model's tuned ``attention_radius``
    (``scripts/tune_pqmim_radius.py`` writes it beside the checkpoint). Tune on images that
    are not the test set: the script uses photos-hr, the benchmark Kodak.

    Args:
        model: PQ-MIM in eval mode.
        images: ``(name, uint8 (H, W, 3))`` pairs (sides padded to multiples of 16).
        steps: S.
        candidates: radii to try (0 = global attention).

    Returns:
        DataFrame with columns ``image, radius, step, bits, positions`` (one row per image,
        radius and coding step; a step's bits do not depend on the radius of other steps,
        since the visible codes are the true ones whatever the radius).
    """
    device = next(model.parameters()).device
    rows = []
    for name, img in images:
        codes = model.codes(coding.pad_to(coding.to_tensor(img), DOWNSAMPLING).to(device))[0]
        for r in candidates:
            for s, bits in enumerate(bits_per_step(model.entropy_model, codes, steps, int(r)), 1):
                rows.append({"image": name, "radius": int(r), "step": s, "bits": bits,
                             "positions": codes.shape[0] * codes.shape[1]})
    return pd.DataFrame(rows, columns=["image", "radius", "step", "bits", "positions"])


def best_radius(table: pd.DataFrame) -> int:
    """The radius of :func:`tune_attention_radius`'s table with the fewest total bits."""
    totals = table.groupby("radius")["bits"].sum()
    return int(totals.idxmin())


# ---------------------------------------------------------------------------------------
# Checkpoints (own plain-dict format, read with weights_only=True)


def radius_path(checkpoint: str | os.PathLike) -> Path:
    """The tuned attention radius of a checkpoint: ``<name>.radius.json`` beside it."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + ".radius.json")


def save_tuned_radius(checkpoint: str | os.PathLike, table: pd.DataFrame, **info: Any) -> dict:
    """Write the best radius of :func:`tune_attention_radius`'s table beside a checkpoint.

    Args:
        checkpoint: the checkpoint file; the record goes to :func:`radius_path`.
        table: the tuning table (must include radius 0, global attention).
        **info: provenance stored with it (tuning set, crop, steps, command, ...).

    Returns:
        The record written: ``{"radius", "saving_vs_global" (1 − bits(r)/bits(global)),
        "checkpoint_sha256" (of the file tuned: :func:`read_radius` warns when the
        checkpoint changed since), "images", "bits_by_radius", "bits_by_radius_and_step"
        (per coding step), **info}``.

    Raises:
        ValueError: the table lacks radius 0.
    """
    totals = table.groupby("radius")["bits"].sum()
    if GLOBAL_ATTENTION not in totals.index:
        raise ValueError("the tuning table lacks radius 0 (global attention), the reference")
    radius = best_radius(table)
    record = {"radius": radius,
              "saving_vs_global": float(1 - totals[radius] / totals[GLOBAL_ATTENTION]),
              "checkpoint_sha256": data.file_sha256(checkpoint),
              "images": list(dict.fromkeys(table["image"])),
              "bits_by_radius": {str(r): float(b) for r, b in totals.items()},
              "bits_by_radius_and_step": {
                  str(r): [float(b) for b in t.sort_values("step")["bits"]]
                  for r, t in table.groupby(["radius", "step"])["bits"].sum().reset_index()
                  .groupby("radius")}, **info}
    fileio.atomic_write_text(radius_path(checkpoint), json.dumps(record, indent=1) + "\n")
    return record


def radius_is_current(checkpoint: str | os.PathLike) -> bool:
    """Whether the checkpoint has a ``.radius.json`` tuned on this very file (same SHA-256)."""
    path = radius_path(checkpoint)
    if not path.is_file():
        return False
    try:
        digest = json.loads(path.read_text()).get("checkpoint_sha256")
    except (ValueError, AttributeError):
        return False
    return digest == data.file_sha256(checkpoint)


def read_radius(checkpoint: str | os.PathLike) -> int:
    """The tuned attention radius of a checkpoint (:data:`GLOBAL_ATTENTION` if none tuned).

    Any radius decodes exactly (the stream carries it); a stale one only costs bits, so a
    record tuned on another version of the checkpoint is used with a warning.

    Raises:
        ValueError: the ``.radius.json`` file is not what ``scripts/tune_pqmim_radius.py``
            writes.
    """
    path = radius_path(checkpoint)
    if not path.is_file():
        return GLOBAL_ATTENTION
    try:
        record = json.loads(path.read_text())
        radius = record["radius"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} does not hold a tuned attention radius ({err}); rewrite it "
                         "with `python scripts/tune_pqmim_radius.py` or delete it to use "
                         "global attention") from err
    if isinstance(radius, bool) or not isinstance(radius, int) or not 0 <= radius <= 255:
        raise ValueError(f"{path}: radius must be an integer in 0..255, got {radius!r}; rewrite "
                         "it with `python scripts/tune_pqmim_radius.py`")
    tuned_on = record.get("checkpoint_sha256")
    if tuned_on is not None and tuned_on != data.file_sha256(checkpoint):
        warnings.warn(f"{path} was tuned on another version of {Path(checkpoint).name}; its "
                      f"radius {radius} still decodes exactly but may cost bits. Retune: python "
                      f"scripts/tune_pqmim_radius.py --checkpoint {checkpoint}", stacklevel=3)
    return radius


def checkpoint_dir() -> Path:
    """``<hub.checkpoint_dir()>/pqmim`` (``$NIC_CHECKPOINT_DIR`` moves the root)."""
    return hub.checkpoint_dir() / "pqmim"


def default_checkpoint_path(M: int, K: int) -> Path:
    """Where the trained model of an (M, K) rate point lives: ``pqmim/M{M}-K{K}.pt``."""
    return checkpoint_dir() / f"M{int(M)}-K{int(K)}.pt"


def is_perceptual_checkpoint(path: str | os.PathLike) -> bool:
    """True for a perceptual variant (stage C of :mod:`nic_lib.train_pqmim`): its checkpoint
    carries a ``"perceptual"`` entry. Same codes and bitstreams as its base model, so it is
    not another rate point."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return isinstance(ckpt, dict) and "perceptual" in ckpt


def find_checkpoints(folder: str | os.PathLike | None = None,
                     perceptual: bool = False) -> list[Path]:
    """Sorted ``*.pt`` files of the PQ-MIM checkpoint folder (empty if none).

    Args:
        folder: default :func:`checkpoint_dir`.
        perceptual: False (default): the base models, one per rate point; True: only the
            perceptual variants (:func:`is_perceptual_checkpoint`).
    """
    folder = Path(folder) if folder is not None else checkpoint_dir()
    paths = sorted(folder.glob("*.pt")) if folder.is_dir() else []
    return [p for p in paths if is_perceptual_checkpoint(p) == perceptual]


#: Tensors kept in float32 by ``save_pqmim(..., half=True)``: the codebooks and their EMA
#: statistics (the codes are nearest-neighbour decisions against them) and the prior counts.
FULL_PRECISION_PREFIXES = ("quantizer.", "prior_counts")


def save_pqmim(model: PQMIM, path: str | os.PathLike, extra: dict[str, Any] | None = None,
               half: bool = False) -> Path:
    """Write ``{"format", "config", "state_dict", **extra}`` atomically.

    Args:
        model: the model.
        path: destination (parents created).
        extra: plain values (str, numbers, lists, dicts, tensors) such as the training
            configuration and step.
        half: store the weight matrices and kernels of g_a, g_s and the MIM transformer
            (floating tensors of 2+ dimensions outside :data:`FULL_PRECISION_PREFIXES`) in
            float16: half the size, as the shipped mbt2018 checkpoints.
            :func:`load_pqmim` casts them back to float32, so the encoder and the decoder
            compute with the same (rounded) weights and their probabilities still agree.

    Returns:
        The path.

    Raises:
        ValueError: ``extra`` overrides a reserved key.
    """
    extra = dict(extra or {})
    clash = sorted(set(extra) & {"format", "config", "state_dict"})
    if clash:
        raise ValueError(f"extra uses reserved keys {clash}; rename them")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if (v.is_floating_point() and v.dim() >= 2
                                 and not k.startswith(FULL_PRECISION_PREFIXES)) else v
                 for k, v in state.items()}
    ckpt = {"format": CHECKPOINT_FORMAT, "config": model.architecture(), "state_dict": state,
            **extra}
    path = Path(path)
    with fileio.atomic_open(path, "wb", suffix=".tmp") as f:
        torch.save(ckpt, f)
    return path


def load_pqmim(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[PQMIM, dict]:
    """Rebuild a model saved by :func:`save_pqmim` (``weights_only=True``, eval mode).

    The entropy model's ``attention_radius`` is the tuned one of :func:`read_radius`.

    Args:
        path: checkpoint file.
        device: where to put the model.

    Returns:
        ``(model, checkpoint)``.

    Raises:
        FileNotFoundError: no file (train one: ``python -m nic_lib.train_pqmim --export
            <path>``).
        ValueError: not a PQ-MIM checkpoint, or a malformed ``.radius.json`` beside it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no PQ-MIM checkpoint at {path}; train one with "
                                f"`python -m nic_lib.train_pqmim --export {path}`")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(ckpt, dict) and ckpt.get("format") == "nic-repro/pqmim/1":
        raise ValueError(f"{path} was written before the MIM model coded one code (not one "
                         "position) per unit (format nic-repro/pqmim/1); its entropy model "
                         "does not fit. Retrain stage B on its autoencoder: python -m "
                         "nic_lib.train_pqmim --resume RUN_FOLDER --restart-b")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a PQ-MIM checkpoint (format {CHECKPOINT_FORMAT!r}); "
                         "write one with nic_lib.models.pqmim.save_pqmim or "
                         "python -m nic_lib.train_pqmim")
    model = PQMIM(**ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    model.entropy_model.attention_radius = read_radius(path)
    return model.to(device).eval(), ckpt
