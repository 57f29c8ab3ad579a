r"""Gaussian-mixture entropy model pieces of ``mbt2018-gmm``: the parameters' layout,
per-symbol quantized CDFs, and the symbol coder the context coder walks with.

For a latent with K components (weights w_k, means mu_k, scales s_k), the mass of the
integer v is

    P(v) = sum_k w_k [Phi((v + 1/2 - mu_k)/s_k) - Phi((v - 1/2 - mu_k)/s_k)]

CompressAI's ``GaussianMixtureConditional`` gives the likelihood for training; its
``compress`` cannot code one position at a time (see :func:`mixture_quantized_cdfs`), so
the tables are built here, one per symbol, from parameters snapped to the coder's grid
(:func:`nic_lib.models.context_coding.snap_to_grid`).
"""

from __future__ import annotations

import math

import scipy.stats
import torch
# The C++ pmf -> 16-bit CDF routine CompressAI's own entropy models build tables with.
from compressai._CXX import pmf_to_quantized_cdf as _pmf_to_quantized_cdf
from compressai.ans import BufferedRansEncoder, RansDecoder
from compressai.models.base import SCALES_MAX, SCALES_MIN
from torch import Tensor

from .context_coding import snap_to_grid

__all__ = [
    "ENTROPY_CODER_PRECISION",
    "MIXTURE_TAIL_MASS",
    "MixtureSymbols",
    "mixture_parameters",
    "mixture_quantized_cdfs",
]

#: Probability mass a mixture's coder table leaves to the escape symbol: the same tail
#: mass CompressAI's GaussianConditional uses for its tables.
MIXTURE_TAIL_MASS = 1e-9

#: CompressAI's rANS works with 16-bit probabilities.
ENTROPY_CODER_PRECISION = 16


def mixture_parameters(params: Tensor, K: int) -> tuple[Tensor, Tensor, Tensor]:
    """Split entropy parameters (B, 3KM, ...) into scales, means, weights, each
    (B, KM, ...) laid out component-major as ``GaussianMixtureConditional`` expects;
    weights softmaxed over the K components."""
    scales, means, logits = params.chunk(3, 1)
    shape = logits.shape
    weights = logits.reshape(shape[0], K, -1, *shape[2:]).softmax(dim=1).reshape(shape)
    return scales, means, weights


def _standard_normal_cdf(x: Tensor) -> Tensor:
    # Phi(x) = erfc(-x / sqrt(2)) / 2, via erfc for precision in the lower tail.
    return 0.5 * torch.erfc(-x / math.sqrt(2.0))


def mixture_quantized_cdfs(
    weights: Tensor,
    means: Tensor,
    scales: Tensor,
    tail_mass: float = MIXTURE_TAIL_MASS,
    precision: int = ENTROPY_CODER_PRECISION,
) -> tuple[list[list[int]], list[int], list[int]]:
    """Quantized CDF tables of Gaussian mixtures over the integers, one per symbol.

    Written here because CompressAI's ``GaussianMixtureConditional.compress`` builds its
    tables for a whole tensor at once, from a bound on |y| and a per-channel zero map
    that the decoder would have to be sent, so it cannot code one position at a time
    inside the serial context loop. The tables follow ``GaussianConditional``'s layout
    (support, then one escape symbol holding the tail mass) and are quantized with the
    same CompressAI routine, so ``compressai.ans`` codes with them directly.

    Args:
        weights, means, scales: (K, L) mixture parameters of L symbols; weights sum to
            1 over K; scales are clamped to CompressAI's [0.11, 256].
        tail_mass: mass outside each component's +-t*sigma range, t = -Phi^-1(tail/2);
            the support is also capped at 2 * ceil(t * 256) + 1 symbols.
        precision: bits of the coder's probabilities.

    Returns:
        ``(cdfs, cdf_lengths, offsets)`` as ``RansEncoder.encode_with_indexes`` takes
        them, symbol i using table i: the integer symbol v is coded as v - offsets[i].
    """
    scales = scales.clamp(SCALES_MIN, SCALES_MAX)
    t = float(-scipy.stats.norm.ppf(tail_mass / 2))
    # Support [lo, hi]: integers within t*sigma_k of some component mean mu_k, at most
    # as wide as GaussianConditional's widest table, around the heaviest component's
    # mean (symbols beyond it are still coded, through the escape symbol).
    lo = torch.floor((means - t * scales).min(dim=0).values)
    hi = torch.ceil((means + t * scales).max(dim=0).values)
    half_width = math.ceil(t * SCALES_MAX)
    center = torch.round(means.gather(0, weights.argmax(dim=0, keepdim=True))[0])
    lo = torch.maximum(lo, center - half_width)
    hi = torch.minimum(hi, center + half_width)
    n = (hi - lo + 1).long()
    v = lo[:, None] + torch.arange(int(n.max()), device=lo.device)  # (L, n_max)

    w, mu, s = weights[:, :, None], means[:, :, None], scales[:, :, None]
    # P(v) = sum_k w_k [Phi((v + 1/2 - mu_k)/s_k) - Phi((v - 1/2 - mu_k)/s_k)],
    # evaluated on the lower tail |v - mu_k| for precision (as GaussianConditional does).
    d = (v[None] - mu).abs()
    pmf = (w * (_standard_normal_cdf((0.5 - d) / s) - _standard_normal_cdf((-0.5 - d) / s))).sum(0)
    # Escape mass, outside [lo - 1/2, hi + 1/2]:
    #   sum_k w_k [Phi((lo - 1/2 - mu_k)/s_k) + Phi((mu_k - hi - 1/2)/s_k)]
    tail = (
        w[:, :, 0]
        * (
            _standard_normal_cdf((lo - 0.5 - means) / scales)
            + _standard_normal_cdf((means - hi - 0.5) / scales)
        )
    ).sum(0)

    rows = pmf.clamp_min(0).tolist()
    tails = tail.tolist()
    lengths = n.tolist()
    cdfs = [
        _pmf_to_quantized_cdf(row[:length] + [tail_i], precision)
        for row, length, tail_i in zip(rows, lengths, tails)
    ]
    return cdfs, [length + 2 for length in lengths], lo.int().tolist()


class MixtureSymbols:
    """Mixture symbols for :class:`nic_lib.models.context_coding.ContextCoder`: each
    latent's symbol is round(y) (a mixture has no single mean to subtract), coded with
    its own table from :func:`mixture_quantized_cdfs`; y_hat = the symbols.

    Args:
        K: mixture components of the entropy parameters (3KM per position).
    """

    def __init__(self, K: int):
        self.K = int(K)

    def tables(self, params: Tensor) -> tuple[list, list, list]:
        """Coder tables of a group's symbols, position-major then channel, from float64
        params (L, 3KM) snapped to the coder's grid."""
        L = params.shape[0]
        # (L, K*M) component-major per position -> (K, L*M), symbol l*M + m.
        scales, means, weights = (
            p.reshape(L, self.K, -1).transpose(0, 1).reshape(self.K, -1)
            for p in mixture_parameters(snap_to_grid(params), self.K)
        )
        return mixture_quantized_cdfs(weights, means, scales)

    def encode(self, encoder: BufferedRansEncoder, y: Tensor, params: Tensor) -> Tensor:
        """Code the symbols round(y) of y (L, M) with per-symbol mixture tables."""
        cdfs, lengths, offsets = self.tables(params)
        symbols = torch.round(y)
        encoder.encode_with_indexes(
            symbols.int().flatten().tolist(), list(range(len(cdfs))), cdfs, lengths, offsets
        )
        return symbols

    def finish(self, encoder: BufferedRansEncoder) -> None:
        """Nothing queued: every group went to the encoder as it came."""

    def decode(self, decoder: RansDecoder, params: Tensor) -> Tensor:
        """Decode one group's symbols (L, M); y_hat = the symbols."""
        cdfs, lengths, offsets = self.tables(params)
        symbols = decoder.decode_stream(list(range(len(cdfs))), cdfs, lengths, offsets)
        return torch.tensor(symbols, dtype=params.dtype, device=params.device).reshape(
            params.shape[0], -1
        )
