r"""PQ-MIM's autoencoder: the transforms g_a / g_s and the product quantizer.

.. code-block:: none

    x ─► g_a ─► z (B, D, H/16, W/16) ─► M sub-vectors of D/M ─► ProductQuantizer
                                      codes (B, H/16, W/16, M) ∈ {0..K-1}^M ─► z_q ─► g_s ─► x_hat

The bottom of :mod:`nic_lib.models.pqmim`: it imports nothing of the package. Written by
hand: the product quantizer with EMA codebooks and dead-code restarts (a few lines;
``vector-quantize-pytorch`` would add a dependency for them); the transforms are
CompressAI's ``conv`` / ``deconv`` / ``ResidualBlock``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from compressai.layers import ResidualBlock
from compressai.models.utils import conv, deconv
from torch import Tensor, nn

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
