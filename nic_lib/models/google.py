"""The mbt2018 family and its ablations, built on CompressAI 1.2.8.

Minnen, Ballé, Toderici, "Joint Autoregressive and Hierarchical Priors for Learned
Image Compression", NeurIPS 2018 (arXiv 1809.02736), and the models it compares with.

=======================  ==========================================  ==================
key                      entropy model of y                          source
=======================  ==========================================  ==================
bmshj2018-factorized     factorized (entropy bottleneck)             CompressAI
bmshj2018-hyperprior     zero-mean Gaussian, scale from h_s(z)       CompressAI
mbt2018-mean             Gaussian, mean and scale from h_s(z)        CompressAI
mbt2018                  Gaussian, from h_s(z) + k x k context       CompressAI, k free
mbt2018-context          Gaussian, from the k x k context only       here
mbt2018-gmm              K-Gaussian mixture, h_s(z) + context        here (+ CDFs)
mbt2018-checkerboard     Gaussian, h_s(z) + checkerboard context     CompressAI codecs
=======================  ==========================================  ==================

Every model follows CompressAI's contract: ``forward(x) -> {"x_hat", "likelihoods":
{"y", ("z")}}``, ``compress(x) -> {"strings", "shape"}``, ``decompress(strings, shape) ->
{"x_hat"}``, ``aux_loss()``, ``update(force=True)``. Inputs are RGB in [0, 1] whose
sides are multiples of the model's ``downsampling_factor`` (pad first).

Layer names are CompressAI's, so published weights load unchanged: the paper's
"context model" is ``context_prediction`` (alias ``context_model``), its "entropy
parameters" network ``entropy_parameters``, the hyper-analysis/synthesis ``h_a``/``h_s``.

Written here because CompressAI lacks it: the serial raster-scan coders for a context of
any size (CompressAI hard-codes 5x5), the context-only model, per-position quantized
CDFs of a Gaussian mixture, and the glue that gives the checkerboard codec the
``{"strings", "shape"}`` contract of the other models.
"""

from __future__ import annotations

import math

import scipy.stats
import torch
import torch.nn.functional as F
# The C++ pmf -> 16-bit CDF routine CompressAI's own entropy models build tables with.
from compressai._CXX import pmf_to_quantized_cdf as _pmf_to_quantized_cdf
from compressai.ans import BufferedRansEncoder, RansDecoder
from compressai.entropy_models import (
    EntropyBottleneck,
    GaussianConditional,
    GaussianMixtureConditional,
)
from compressai.latent_codecs import (
    CheckerboardLatentCodec,
    GaussianConditionalLatentCodec,
    HyperLatentCodec,
    HyperpriorLatentCodec,
)
from compressai.layers import GDN, CheckerboardMaskedConv2d, MaskedConv2d
from compressai.models import google as _compressai_google
from compressai.models.base import (
    SCALES_MAX,
    SCALES_MIN,
    CompressionModel,
    SimpleVAECompressionModel,
)
from compressai.models.google import FactorizedPrior, MeanScaleHyperprior, ScaleHyperprior
from compressai.models.utils import conv, deconv
from torch import Tensor, nn

from .registry import register_model

__all__ = [
    "ContextOnlyPrior",
    "FactorizedPrior",
    "JointAutoregressiveHierarchicalPriors",
    "JointCheckerboardPrior",
    "JointGaussianMixturePrior",
    "MeanScaleHyperprior",
    "ScaleHyperprior",
    "analysis_transform",
    "context_model",
    "entropy_parameters_network",
    "hyper_analysis",
    "hyper_synthesis",
    "mixture_quantized_cdfs",
    "synthesis_transform",
]

#: Default widths (N, M): the paper's and CompressAI's mbt2018 at its lower qualities.
DEFAULT_N, DEFAULT_M = 192, 192

#: Context sizes the tests cover; any odd size >= 3 is accepted.
CONTEXT_SIZES = (3, 5, 7)

#: The paper's context model is a 5x5 masked convolution.
DEFAULT_CONTEXT_SIZE = 5

#: Mixture components: Cheng et al. (CVPR 2020) found K=3 enough for discretized GMMs.
DEFAULT_MIXTURE_COMPONENTS = 3

#: h_a halves y's resolution twice, so y is 4x the size of z on each side.
Y_PER_Z = 4

#: Probability mass a mixture's coder table leaves to the escape symbol: the same tail
#: mass CompressAI's GaussianConditional uses for its tables.
MIXTURE_TAIL_MASS = 1e-9

#: CompressAI's rANS works with 16-bit probabilities.
ENTROPY_CODER_PRECISION = 16

#: Checkerboard training pass: "onepass" (uniform noise, like mbt2018's own training,
#: so the ablation changes only the context) rather than CompressAI's STE "twopass".
DEFAULT_CHECKERBOARD_FORWARD = "onepass"


# ======================================================================================
# Building blocks
# ======================================================================================


def analysis_transform(N: int, M: int) -> nn.Sequential:
    """g_a of mbt2018: four stride-2 5x5 convolutions with GDN (CompressAI's layers).

    Args:
        N: hidden channels. M: channels of the latent y.

    Returns:
        ``x (3, H, W) -> y (M, H/16, W/16)``.
    """
    return nn.Sequential(
        conv(3, N, kernel_size=5, stride=2), GDN(N),
        conv(N, N, kernel_size=5, stride=2), GDN(N),
        conv(N, N, kernel_size=5, stride=2), GDN(N),
        conv(N, M, kernel_size=5, stride=2),
    )  # fmt: skip


def synthesis_transform(N: int, M: int) -> nn.Sequential:
    """g_s of mbt2018: four stride-2 5x5 transposed convolutions with inverse GDN.

    Args:
        N: hidden channels. M: channels of the latent y.

    Returns:
        ``y_hat (M, h, w) -> x_hat (3, 16h, 16w)``.
    """
    return nn.Sequential(
        deconv(M, N, kernel_size=5, stride=2), GDN(N, inverse=True),
        deconv(N, N, kernel_size=5, stride=2), GDN(N, inverse=True),
        deconv(N, N, kernel_size=5, stride=2), GDN(N, inverse=True),
        deconv(N, 3, kernel_size=5, stride=2),
    )  # fmt: skip


def hyper_analysis(N: int, M: int) -> nn.Sequential:
    """h_a of mbt2018: y (M, h, w) -> z (N, h/4, w/4), as in CompressAI.

    Args:
        N: channels of z. M: channels of y.

    Returns:
        The module.
    """
    return nn.Sequential(
        conv(M, N, stride=1, kernel_size=3), nn.LeakyReLU(inplace=True),
        conv(N, N, stride=2, kernel_size=5), nn.LeakyReLU(inplace=True),
        conv(N, N, stride=2, kernel_size=5),
    )  # fmt: skip


def hyper_synthesis(N: int, M: int) -> nn.Sequential:
    """h_s of mbt2018: z_hat (N, h, w) -> hyperprior features (2M, 4h, 4w).

    Args:
        N: channels of z. M: channels of y.

    Returns:
        The module.
    """
    return nn.Sequential(
        deconv(N, M, stride=2, kernel_size=5), nn.LeakyReLU(inplace=True),
        deconv(M, M * 3 // 2, stride=2, kernel_size=5), nn.LeakyReLU(inplace=True),
        conv(M * 3 // 2, M * 2, stride=1, kernel_size=3),
    )  # fmt: skip


def entropy_parameters_network(in_channels: int, out_channels: int) -> nn.Sequential:
    """The paper's "entropy parameters" network: three 1x1 convolutions.

    Hidden widths step linearly from input to output, which for mbt2018 (4M -> 2M)
    gives CompressAI's 10M/3 and 8M/3 exactly.

    Args:
        in_channels: context features (+ hyperprior features).
        out_channels: distribution parameters per latent (2M for a Gaussian, 3KM for a
            K-component mixture).

    Returns:
        The module. Being pointwise, it can run on one latent position at a time.
    """
    hidden_1 = (2 * in_channels + out_channels) // 3
    hidden_2 = (in_channels + 2 * out_channels) // 3
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden_1, 1), nn.LeakyReLU(inplace=True),
        nn.Conv2d(hidden_1, hidden_2, 1), nn.LeakyReLU(inplace=True),
        nn.Conv2d(hidden_2, out_channels, 1),
    )  # fmt: skip


def _check_context_size(context_size: int) -> int:
    if context_size < 3 or context_size % 2 == 0:
        raise ValueError(
            f"context_size must be odd and >= 3 (the paper uses {DEFAULT_CONTEXT_SIZE}; "
            f"tested: {CONTEXT_SIZES}), got {context_size}"
        )
    return int(context_size)


def context_model(M: int, context_size: int = DEFAULT_CONTEXT_SIZE) -> MaskedConv2d:
    """The autoregressive context model: a k x k masked convolution (PixelCNN mask A).

    Position (i, j) sees only latents before it in raster order: rows above, and the
    same row to the left.

    Args:
        M: channels of y. context_size: k (odd).

    Returns:
        ``MaskedConv2d(M, 2M, k, padding=k // 2)`` (CompressAI's layer).
    """
    k = _check_context_size(context_size)
    return MaskedConv2d(M, 2 * M, kernel_size=k, padding=k // 2, stride=1)


class _SerialContextCoding:
    """Raster-scan entropy coding of y with a masked-convolution context model.

    Written here because CompressAI's ``_compress_ar``/``_decompress_ar`` are tied to a
    5x5 context and to the joint model. Both directions keep y_hat in a zero-padded
    buffer and evaluate the context with the masked kernel on the k x k crop around
    each position, so the encoder and decoder compute bit-identical parameters.
    Subclasses provide ``_code_position`` / ``_decode_position``.
    """

    context_prediction: MaskedConv2d
    entropy_parameters: nn.Module

    @property
    def context_model(self) -> MaskedConv2d:
        """The paper's name for ``context_prediction``."""
        return self.context_prediction

    def _masked_weight(self) -> Tensor:
        """The context kernel with its mask applied. The buffer holds zeros where
        nothing is decoded yet, so this only makes the causality explicit."""
        return self.context_prediction.weight * self.context_prediction.mask

    def _params_at(
        self, y_hat: Tensor, weight: Tensor, side: Tensor | None, h: int, w: int
    ) -> Tensor:
        """Entropy parameters of the latents at (h, w), shape (1, C).

        ``y_hat`` is the padded buffer, ``weight`` the masked context kernel, ``side``
        the hyperprior features or None.
        """
        k = weight.shape[-1]
        ctx = F.conv2d(y_hat[:, :, h : h + k, w : w + k], weight, self.context_prediction.bias)
        if side is not None:
            # Same order as CompressAI's mbt2018: hyperprior features first.
            ctx = torch.cat((side[:, :, h : h + 1, w : w + 1], ctx), dim=1)
        return self.entropy_parameters(ctx).flatten(1)

    def _compress_ar(self, y: Tensor, side: Tensor | None) -> bytes:
        """Code one image's y (1, M, H, W) in raster order; returns the rANS string."""
        pad = self.context_prediction.kernel_size[0] // 2
        _, m, height, width = y.shape
        y_hat = y.new_zeros((1, m, height + 2 * pad, width + 2 * pad))
        weight = self._masked_weight()
        encoder = BufferedRansEncoder()
        state = self._start_coding()
        for h in range(height):
            for w in range(width):
                params = self._params_at(y_hat, weight, side, h, w)
                y_hat[:, :, h + pad, w + pad] = self._code_position(
                    encoder, state, y[:, :, h, w], params
                )
        self._finish_coding(encoder, state)
        return encoder.flush()

    def _decompress_ar(self, string: bytes, side: Tensor | None, height: int, width: int) -> Tensor:
        """Decode one image's y_hat (1, M, height, width) from its rANS string."""
        pad = self.context_prediction.kernel_size[0] // 2
        m = self.context_prediction.in_channels
        device = self.context_prediction.weight.device
        y_hat = torch.zeros((1, m, height + 2 * pad, width + 2 * pad), device=device)
        weight = self._masked_weight()
        decoder = RansDecoder()
        decoder.set_stream(string)
        state = self._start_coding()
        for h in range(height):
            for w in range(width):
                params = self._params_at(y_hat, weight, side, h, w)
                y_hat[:, :, h + pad, w + pad] = self._decode_position(decoder, state, params)
        return y_hat[:, :, pad : pad + height, pad : pad + width]

    # Hooks: Gaussian coding with CompressAI's scale tables by default.

    def _start_coding(self) -> dict:
        """Per-image coder state: the Gaussian tables as lists, trimmed to their lengths."""
        gc = self.gaussian_conditional
        lengths = gc.cdf_length.tolist()
        return {
            "cdfs": [row[:n] for row, n in zip(gc.quantized_cdf.tolist(), lengths)],
            "lengths": lengths,
            "offsets": gc.offset.tolist(),
            "symbols": [],
            "indexes": [],
        }

    def _code_position(self, encoder, state: dict, y: Tensor, params: Tensor) -> Tensor:
        gc = self.gaussian_conditional
        scales, means = params.chunk(2, 1)
        # Symbol q = round(y - mu); the decoder sees y_hat = q + mu.
        symbols = gc.quantize(y, "symbols", means)
        state["symbols"] += symbols.flatten().tolist()
        state["indexes"] += gc.build_indexes(scales).flatten().tolist()
        return gc.dequantize(symbols, means)

    def _finish_coding(self, encoder, state: dict) -> None:
        if state["symbols"]:
            encoder.encode_with_indexes(
                state["symbols"], state["indexes"], state["cdfs"], state["lengths"],
                state["offsets"],
            )  # fmt: skip

    def _decode_position(self, decoder, state: dict, params: Tensor) -> Tensor:
        gc = self.gaussian_conditional
        scales, means = params.chunk(2, 1)
        indexes = gc.build_indexes(scales).flatten().tolist()
        symbols = decoder.decode_stream(indexes, state["cdfs"], state["lengths"], state["offsets"])
        symbols = torch.tensor(symbols, dtype=torch.int32, device=means.device).reshape(means.shape)
        return gc.dequantize(symbols, means)


# ======================================================================================
# CompressAI's models, registered under the paper keys
# ======================================================================================

register_model("bmshj2018-factorized")(FactorizedPrior)
register_model("bmshj2018-hyperprior")(ScaleHyperprior)
register_model("mbt2018-mean")(MeanScaleHyperprior)


@register_model("mbt2018")
class JointAutoregressiveHierarchicalPriors(
    _SerialContextCoding, _compressai_google.JointAutoregressiveHierarchicalPriors
):
    r"""Joint autoregressive and hierarchical priors (Minnen, Ballé, Toderici, NeurIPS 2018).

    CompressAI's ``JointAutoregressiveHierarchicalPriors`` (same layers and keys, so
    the zoo's weights load) with the context model's size a constructor argument; its
    serial coder is rewritten here for any odd size.

    .. code-block:: none

                  ┌───┐    y     ┌───┐  z  ┌───┐ z_hat      z_hat ┌───┐
            x ──►─┤g_a├──►─┬──►──┤h_a├──►──┤ Q ├───►───·⋯⋯·───►───┤h_s├─┐
                  └───┘    │     └───┘     └───┘        EB        └───┘ │
                           ▼                                            │
                         ┌─┴─┐                                          │
                         │ Q │                                   params ▼
                         └─┬─┘                                          │
                     y_hat ▼                  ┌─────┐                   │
                           ├──────────►───────┤ CM  ├────────►──────────┤
                           │                  └─────┘                   │
                           ▼                                            ▼
                           ·                  ┌─────┐                   │
                        GC : ◄────────◄───────┤ EP  ├────────◄──────────┘
                           ·   scales, means  └─────┘
                     y_hat ▼
                  ┌───┐    │
        x_hat ──◄─┤g_s├────┘
                  └───┘

        EB = entropy bottleneck (z)       GC = Gaussian conditional (y)
        CM = context model, k x k masked conv (context_prediction)
        EP = entropy parameters network (1x1 convs)

    Args:
        N: channels of g_a/g_s hidden layers and of z.
        M: channels of y.
        context_size: k of the k x k context model (paper: 5).
    """

    def __init__(
        self,
        N: int = DEFAULT_N,
        M: int = DEFAULT_M,
        context_size: int = DEFAULT_CONTEXT_SIZE,
        **kwargs,
    ):
        super().__init__(N=N, M=M, **kwargs)
        self.context_size = _check_context_size(context_size)
        self.context_prediction = context_model(M, self.context_size)

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, Tensor]):
        """A model sized from a state dict (N, M and the context size), weights loaded."""
        net = cls(
            N=state_dict["g_a.0.weight"].size(0),
            M=state_dict["g_a.6.weight"].size(0),
            context_size=state_dict["context_prediction.weight"].size(-1),
        )
        net.load_state_dict(state_dict)
        return net

    @torch.no_grad()
    def compress(self, x: Tensor) -> dict:
        """Encode images to ``{"strings": [y_strings, z_strings], "shape": z size}``."""
        y = self.g_a(x)
        z = self.h_a(y)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        side = self.h_s(z_hat)
        y_strings = [self._compress_ar(y[i : i + 1], side[i : i + 1]) for i in range(len(y))]
        return {"strings": [y_strings, z_strings], "shape": z.size()[-2:]}

    @torch.no_grad()
    def decompress(self, strings: list, shape) -> dict:
        """Decode ``compress``'s output to ``{"x_hat"}`` (clamped to [0, 1])."""
        if not (isinstance(strings, list) and len(strings) == 2):
            raise ValueError("expected strings = [y_strings, z_strings] from compress()")
        z_hat = self.entropy_bottleneck.decompress(strings[1], shape)
        side = self.h_s(z_hat)
        height, width = side.shape[-2:]
        y_hat = torch.cat([
            self._decompress_ar(s, side[i : i + 1], height, width)
            for i, s in enumerate(strings[0])
        ])  # fmt: skip
        return {"x_hat": self.g_s(y_hat).clamp_(0, 1)}


# ======================================================================================
# Context-only ablation
# ======================================================================================


@register_model("mbt2018-context")
class ContextOnlyPrior(_SerialContextCoding, CompressionModel):
    r"""The paper's "context-only" ablation: an autoregressive prior, no hyperprior.

    Minnen, Ballé, Toderici, NeurIPS 2018, Section 4 (the variant with the context
    model but without h_a/h_s). The entropy parameters see only the masked-convolution
    features of already-decoded latents; the first position has none (zero padding),
    so its Gaussian comes from the network's biases. There is no z and no entropy
    bottleneck, so ``aux_loss()`` is zero. Written here; CompressAI has no such model.

    .. code-block:: none

                  ┌───┐    y    ┌───┐  y_hat    ┌─────┐       ┌─────┐
            x ──►─┤g_a├──►──────┤ Q ├───►──┬───┤ CM  ├───►───┤ EP  ├──┐
                  └───┘         └───┘      │   └─────┘       └─────┘  │
                                           ▼                          │
                                           ·                          │
                                        GC : ◄────────◄───────────────┘
                                           ·         scales, means
                                     y_hat ▼
                  ┌───┐                    │
        x_hat ──◄─┤g_s├────────────────────┘
                  └───┘

        GC = Gaussian conditional   CM = context model (k x k masked conv)
        EP = entropy parameters network

    Args:
        N: channels of g_a/g_s hidden layers.
        M: channels of y.
        context_size: k of the context model (paper: 5).
    """

    def __init__(
        self, N: int = DEFAULT_N, M: int = DEFAULT_M, context_size: int = DEFAULT_CONTEXT_SIZE
    ):
        super().__init__()
        self.N, self.M = int(N), int(M)
        self.context_size = _check_context_size(context_size)
        self.g_a = analysis_transform(N, M)
        self.g_s = synthesis_transform(N, M)
        self.context_prediction = context_model(M, self.context_size)
        self.entropy_parameters = entropy_parameters_network(2 * M, 2 * M)
        self.gaussian_conditional = GaussianConditional(None)

    @property
    def downsampling_factor(self) -> int:
        """Input sides must be multiples of this (g_a's four stride-2 layers)."""
        return 2**4

    def forward(self, x: Tensor) -> dict:
        """Training/estimation pass: uniform noise for quantization in train mode."""
        y = self.g_a(x)
        y_hat = self.gaussian_conditional.quantize(y, "noise" if self.training else "dequantize")
        scales, means = self.entropy_parameters(self.context_prediction(y_hat)).chunk(2, 1)
        _, y_likelihoods = self.gaussian_conditional(y, scales, means=means)
        return {"x_hat": self.g_s(y_hat), "likelihoods": {"y": y_likelihoods}}

    def aux_loss(self) -> Tensor:
        """Zero: there is no entropy bottleneck to fit (differentiable, so a generic
        training step may call ``backward()`` on it)."""
        return torch.zeros((), requires_grad=True)

    @torch.no_grad()
    def compress(self, x: Tensor) -> dict:
        """Encode images to ``{"strings": [y_strings], "shape": y size}``."""
        y = self.g_a(x)
        y_strings = [self._compress_ar(y[i : i + 1], None) for i in range(len(y))]
        return {"strings": [y_strings], "shape": y.size()[-2:]}

    @torch.no_grad()
    def decompress(self, strings: list, shape) -> dict:
        """Decode ``compress``'s output to ``{"x_hat"}`` (clamped to [0, 1])."""
        if not (isinstance(strings, list) and len(strings) == 1):
            raise ValueError("expected strings = [y_strings] from compress()")
        height, width = shape
        y_hat = torch.cat([self._decompress_ar(s, None, height, width) for s in strings[0]])
        return {"x_hat": self.g_s(y_hat).clamp_(0, 1)}


# ======================================================================================
# Gaussian-mixture ablation
# ======================================================================================


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


@register_model("mbt2018-gmm")
class JointGaussianMixturePrior(JointAutoregressiveHierarchicalPriors):
    r"""mbt2018 with a K-component Gaussian mixture for y (the paper's GMM discussion).

    Same transforms, hyperprior and context model as ``mbt2018``; the entropy
    parameters output, per latent, K weights (softmax), K means and K scales, and y is
    modelled by the mixture's mass on the unit bin (CompressAI's
    ``GaussianMixtureConditional`` gives the likelihood). y_hat = round(y) (no mean
    offset, a mixture has no single mean), so ``forward`` in eval mode and the decoder
    see the same latents. Coding is serial over positions with per-symbol tables from
    :func:`mixture_quantized_cdfs` (written here) and CompressAI's rANS.

    .. code-block:: none

            x ─► g_a ─► y ─► h_a ─► Q ─► EB ─► h_s ────────────────┐ params
                        │                                          ▼
                        Q ─► y_hat ─► CM (k x k masked conv) ─► EP ─► w_k, mu_k, s_k
                        │                                          │
                  y_hat ◄ GMM ◄────────────────────────────────────┘
                        │
            x_hat ◄ g_s ┘

        GMM = sum_k w_k N(mu_k, s_k^2) integrated over [y_hat - 1/2, y_hat + 1/2]

    Args:
        N, M, context_size: as ``mbt2018``.
        K: mixture components.
    """

    def __init__(
        self,
        N: int = DEFAULT_N,
        M: int = DEFAULT_M,
        context_size: int = DEFAULT_CONTEXT_SIZE,
        K: int = DEFAULT_MIXTURE_COMPONENTS,
        **kwargs,
    ):
        super().__init__(N=N, M=M, context_size=context_size, **kwargs)
        self.K = int(K)
        self.entropy_parameters = entropy_parameters_network(4 * M, 3 * self.K * M)
        self.gaussian_conditional = GaussianMixtureConditional(K=self.K)

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, Tensor]):
        """A model sized from a state dict (N, M, context size, K), weights loaded."""
        m = state_dict["g_a.6.weight"].size(0)
        net = cls(
            N=state_dict["g_a.0.weight"].size(0),
            M=m,
            context_size=state_dict["context_prediction.weight"].size(-1),
            K=state_dict["entropy_parameters.4.weight"].size(0) // (3 * m),
        )
        net.load_state_dict(state_dict)
        return net

    def _mixture(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Split (B, 3KM, ...) into scales, means, weights, each (B, KM, ...) laid out
        component-major as GaussianMixtureConditional expects; weights softmaxed over K."""
        scales, means, logits = params.chunk(3, 1)
        shape = logits.shape
        weights = logits.reshape(shape[0], self.K, -1, *shape[2:]).softmax(dim=1).reshape(shape)
        return scales, means, weights

    def forward(self, x: Tensor) -> dict:
        """Training/estimation pass: uniform noise for quantization in train mode."""
        y = self.g_a(x)
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        side = self.h_s(z_hat)
        y_hat = self.gaussian_conditional.quantize(y, "noise" if self.training else "dequantize")
        ctx = self.context_prediction(y_hat)
        params = self.entropy_parameters(torch.cat((side, ctx), dim=1))
        scales, means, weights = self._mixture(params)
        _, y_likelihoods = self.gaussian_conditional(y, scales, means, weights)
        return {
            "x_hat": self.g_s(y_hat),
            "likelihoods": {"y": y_likelihoods, "z": z_likelihoods},
        }

    def _position_tables(self, params: Tensor) -> tuple[list, list, list]:
        scales, means, weights = (p.reshape(self.K, -1) for p in self._mixture(params))
        return mixture_quantized_cdfs(weights, means, scales)

    def _start_coding(self) -> dict:
        return {}

    def _code_position(self, encoder, state: dict, y: Tensor, params: Tensor) -> Tensor:
        cdfs, lengths, offsets = self._position_tables(params)
        symbols = torch.round(y).int()
        encoder.encode_with_indexes(
            symbols.flatten().tolist(), list(range(len(cdfs))), cdfs, lengths, offsets
        )
        return symbols.to(y.dtype)

    def _finish_coding(self, encoder, state: dict) -> None:
        pass

    def _decode_position(self, decoder, state: dict, params: Tensor) -> Tensor:
        cdfs, lengths, offsets = self._position_tables(params)
        symbols = decoder.decode_stream(list(range(len(cdfs))), cdfs, lengths, offsets)
        return torch.tensor(symbols, dtype=params.dtype, device=params.device).reshape(1, -1)


# ======================================================================================
# Checkerboard ablation
# ======================================================================================


@register_model("mbt2018-checkerboard")
class JointCheckerboardPrior(SimpleVAECompressionModel):
    r"""mbt2018 with a checkerboard context (He et al., "Checkerboard Context Model for
    Efficient Learned Image Compression", CVPR 2021).

    Same transforms and hyperprior as ``mbt2018``; y is coded in two passes instead of
    one position at a time: the anchors (h + w even) with the hyperprior alone, then the
    non-anchors with the hyperprior plus a checkerboard-masked convolution that reads
    only anchors. Built from CompressAI's ``HyperpriorLatentCodec``,
    ``CheckerboardLatentCodec`` and ``CheckerboardMaskedConv2d``; written here is only
    the mapping to the ``{"strings", "shape": z size}`` contract of the other models.

    .. code-block:: none

            x ─► g_a ─► y ─► h_a ─► Q ─► EB ─► h_s ─────────────┐ params
                        │                                       ▼
                        ├─ pass 1: anchors ◄─ GC ◄─ EP(0, params)
                        │          │
                        │          ▼ y_hat(anchors)
                        │     CM (checkerboard mask) ─► EP(ctx, params)
                        ├─ pass 2: non-anchors ◄─ GC ◄──┘
                        │
            x_hat ◄ g_s ┘ y_hat

            anchors ◌, non-anchors ■:   ◌ ■ ◌ ■
                                        ■ ◌ ■ ◌

    Args:
        N, M, context_size: as ``mbt2018`` (the checkerboard kernel is k x k).
        forward_method: CompressAI's training pass, ``"onepass"`` (uniform noise, as
            mbt2018 is trained) or ``"twopass"`` (straight-through rounding).
    """

    def __init__(
        self,
        N: int = DEFAULT_N,
        M: int = DEFAULT_M,
        context_size: int = DEFAULT_CONTEXT_SIZE,
        forward_method: str = DEFAULT_CHECKERBOARD_FORWARD,
    ):
        super().__init__()
        self.N, self.M = int(N), int(M)
        self.context_size = k = _check_context_size(context_size)
        self.g_a = analysis_transform(N, M)
        self.g_s = synthesis_transform(N, M)
        self.latent_codec = HyperpriorLatentCodec(
            latent_codec={
                "y": CheckerboardLatentCodec(
                    latent_codec={"y": GaussianConditionalLatentCodec(quantizer="noise")},
                    entropy_parameters=entropy_parameters_network(4 * M, 2 * M),
                    context_prediction=CheckerboardMaskedConv2d(
                        M, 2 * M, kernel_size=k, padding=k // 2
                    ),
                    forward_method=forward_method,
                ),
                "hyper": HyperLatentCodec(
                    entropy_bottleneck=EntropyBottleneck(N),
                    h_a=hyper_analysis(N, M),
                    h_s=hyper_synthesis(N, M),
                    quantizer="noise",
                ),
            }
        )

    @property
    def downsampling_factor(self) -> int:
        """Input sides must be multiples of this (g_a and h_a's six stride-2 layers)."""
        return 2 ** (4 + 2)

    @property
    def forward_method(self) -> str:
        """Training pass of the checkerboard codec ("onepass" or "twopass")."""
        return self.latent_codec["y"].forward_method

    @property
    def context_prediction(self) -> CheckerboardMaskedConv2d:
        """The checkerboard context model (paper: context model)."""
        return self.latent_codec["y"].context_prediction

    context_model = context_prediction

    @property
    def entropy_parameters(self) -> nn.Module:
        """The entropy parameters network (input: context features, then params)."""
        return self.latent_codec["y"].entropy_parameters

    @torch.no_grad()
    def compress(self, x: Tensor) -> dict:
        """Encode images to ``{"strings": [anchor, non-anchor, z strings], "shape": z size}``."""
        out = self.latent_codec.compress(self.g_a(x))
        return {"strings": out["strings"], "shape": out["shape"]["hyper"]}

    @torch.no_grad()
    def decompress(self, strings: list, shape) -> dict:
        """Decode ``compress``'s output to ``{"x_hat"}`` (clamped to [0, 1])."""
        if not (isinstance(strings, list) and len(strings) == 3):
            raise ValueError("expected strings = [anchor, non_anchor, z] lists from compress()")
        h, w = shape
        y_shape = (self.M, h * Y_PER_Z, w * Y_PER_Z)
        shapes = {"y": y_shape, "hyper": tuple(shape)}
        y_hat = self.latent_codec.decompress(strings, shapes)["y_hat"]
        return {"x_hat": self.g_s(y_hat).clamp_(0, 1)}
