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
sides are multiples of the model's ``downsampling_factor`` (pad first). Each model also
applies its gain units itself when it is variable-rate (:class:`_Transforms`:
``analysis``, ``synthesis``, ``forward_latents``; :mod:`nic_lib.models.variable_rate`).

Layer names are CompressAI's, so published weights load unchanged: the paper's
"context model" is ``context_prediction`` (alias ``context_model``), its "entropy
parameters" network ``entropy_parameters``, the hyper-analysis/synthesis ``h_a``/``h_s``.

Written here because CompressAI lacks it: the context-only model, and the glue that
gives the checkerboard codec the ``{"strings", "shape"}`` contract of the other models.
The context models' coder (a context of any size, a whole wavefront of latents per
network call, deterministic across thread counts) is :mod:`nic_lib.models.context_coding`;
the mixture's per-position quantized CDFs are :mod:`nic_lib.models.mixture`. The models
here hand them their modules.

Longer than this project's ~600-line mark on purpose: seven models of one family, each
with its data-flow diagram, read side by side. Building blocks first, then the shared
transforms (gains), tiling and context-model mixins, then one section per model.
"""

from __future__ import annotations

import torch
# CompressAI's classes for isinstance checks (this project's entropy models subclass them)
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.latent_codecs import (
    GaussianConditionalLatentCodec,
    HyperLatentCodec,
    HyperpriorLatentCodec,
)
from compressai.layers import GDN, CheckerboardMaskedConv2d, MaskedConv2d
from compressai.models import google as _compressai_google
from compressai.models.base import CompressionModel, SimpleVAECompressionModel
from compressai.models.utils import conv, deconv
from torch import Tensor, nn

from . import entropy_models, tables, tiling
from .context_coding import (
    CODING_DEVICE,
    CODING_DTYPE,
    DEFAULT_CODING_ORDER,
    DEFAULT_CONTEXT_SIZE,
    ContextCoder,
    GaussianSymbols,
    SymbolCoder,
    check_context_size,
    coding_copy,
    on_coding_device,
    scale_edges,
    scale_indexes,
    snap_to_grid,
)
# Re-exported for notebooks/01_mbt2018.py, which calls google.wavefront_slope.
from .context_coding import wavefront_slope  # noqa: F401
from .mixture import MixtureSymbols, mixture_parameters
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
    "synthesis_transform",
]

class _FineScaleTable:
    """``update()`` builds the Gaussian coders' CDFs for this project's scale table
    (:func:`nic_lib.models.tables.scale_table`, 256 scales) instead of CompressAI's 64,
    whose 13% steps cost up to 4% more bits than the likelihoods promise (measured in
    :mod:`nic_lib.models.tables`)."""

    def update(self, scale_table: Tensor | None = None, force: bool = False,
               update_quantiles: bool = False) -> bool:
        """CompressAI's ``update`` (the factorized densities' tables from the weights),
        with the Gaussian conditionals' tables from :func:`tables.set_scale_table`
        (float64, the same on every machine).

        Args:
            scale_table: scales (default :func:`nic_lib.models.tables.scale_table`).
            force: rebuild tables that exist.
            update_quantiles: as CompressAI (refit the factorized densities' range).

        Returns:
            True if some table was (re)built.
        """
        table = tables.scale_table() if scale_table is None else torch.as_tensor(scale_table)
        updated = False
        for module in self.modules():
            if isinstance(module, EntropyBottleneck):
                updated |= module.update(force=force, update_quantiles=update_quantiles)
            elif isinstance(module, GaussianConditional) and (
                    force or module._offset.numel() == 0):
                updated |= tables.set_scale_table(module, table, force=True)
        return updated



#: Default widths (N, M): the paper's and CompressAI's mbt2018 at its lower qualities.
DEFAULT_N, DEFAULT_M = 192, 192

#: Mixture components: Cheng et al. (CVPR 2020) found K=3 enough for discretized GMMs.
DEFAULT_MIXTURE_COMPONENTS = 3

#: h_a halves y's resolution twice, so y is 4x the size of z on each side.
Y_PER_Z = 4

#: dtype of g_s when decoding (and for the encoder's reconstruction, ``synthesize``).
#: What broke cross-thread exactness was not float32 but oneDNN: its float32 transposed
#: convolutions change their last bits with the thread count (kodim01, m192 q4: 603k of
#: 1.2M outputs differ between 1 and 2 threads, 7 pixels by one level). PyTorch's im2col
#: + MKL GEMM path in float32 gave bit-identical outputs on 1 and 2 threads, as float64
#: did, at 0.27 s instead of 0.68 s and half the memory
#: (``benchmarks/determinism.py --synthesis`` measures it per layer over Kodak x
#: qualities). So g_s runs in float32 under ``tiling.deterministic_convolutions``.
SYNTHESIS_DTYPE = torch.float32

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


def context_model(M: int, context_size: int = DEFAULT_CONTEXT_SIZE) -> MaskedConv2d:
    """The autoregressive context model: a k x k masked convolution (PixelCNN mask A).

    Position (i, j) sees only latents before it in raster order: rows above, and the
    same row to the left.

    Args:
        M: channels of y. context_size: k (odd).

    Returns:
        ``MaskedConv2d(M, 2M, k, padding=k // 2)`` (CompressAI's layer).
    """
    k = check_context_size(context_size)
    return MaskedConv2d(M, 2 * M, kernel_size=k, padding=k // 2, stride=1)


# ======================================================================================
# Transforms in tiles, and the context models' coder
# ======================================================================================


class _Transforms:
    r"""The transforms around every model's entropy model, with the gain units explicit.

    A variable-rate model (:func:`nic_lib.models.variable_rate.make_variable_rate`) holds
    ``gain`` and ``inverse_gain`` (:class:`~nic_lib.models.variable_rate.GainUnit`), each
    at the level :func:`~nic_lib.models.variable_rate.set_rate_level` chose; a fixed-rate
    model holds neither and its gains are 1:

        y   = g_a(x) ⊙ γ_l           (:meth:`analysis`)
        x̂   = g_s(ŷ ⊙ γ'_l)          (:meth:`synthesis`)

    ``forward(x)`` is :meth:`forward_latents` of ``g_a(x)``, and each model writes only
    the part in between, ``_latent_forward(y) -> (ŷ, likelihoods)``: its entropy model.

    The entropy models are this project's subclasses of CompressAI's
    (:mod:`nic_lib.models.entropy_models`: the training noise and the tail gradient are
    their settings); the models built on CompressAI's classes replace those its
    constructors build (``entropy_models.own_entropy_models``, same weights).
    """

    def apply_gain(self, y: Tensor) -> Tensor:
        """``y ⊙ γ_l`` at the current level (``y`` itself for a fixed-rate model)."""
        gain = self._modules.get("gain")
        return y if gain is None else gain(y)

    def apply_inverse_gain(self, y_hat: Tensor) -> Tensor:
        """``ŷ ⊙ γ'_l`` at the current level (``ŷ`` itself for a fixed-rate model)."""
        inverse_gain = self._modules.get("inverse_gain")
        return y_hat if inverse_gain is None else inverse_gain(y_hat)

    def analysis(self, x: Tensor) -> Tensor:
        """The latents the entropy model codes: ``y = g_a(x) ⊙ γ_l``."""
        return self.apply_gain(self.g_a(x))

    def synthesis(self, y_hat: Tensor) -> Tensor:
        """The reconstruction of (noisy or coded) latents: ``x̂ = g_s(ŷ ⊙ γ'_l)``, unclamped."""
        return self.g_s(self.apply_inverse_gain(y_hat))

    def forward(self, x: Tensor) -> dict:
        """Training/estimation pass, CompressAI's contract: ``{"x_hat", "likelihoods"}``.

        Uniform noise stands in for rounding in train mode; eval mode rounds (the
        coder's symbols, up to the context models' means: see ``coded_likelihoods``).
        """
        return self.forward_latents(self.g_a(x))

    def forward_latents(self, y0: Tensor, synthesize: bool = True) -> dict:
        """``forward`` from the analysis transform's output ``y₀ = g_a(x)`` on.

        For callers that compute ``g_a`` once for several rate levels (``nic_lib.bench``)
        or not at all (``nic_lib.train_entropy`` trains on cached ``y₀``).

        Args:
            y0: (B, M, h, w) output of ``g_a``, before the gain.
            synthesize: False skips ``g_s`` (``"x_hat"`` is then None).

        Returns:
            ``{"x_hat", "likelihoods"}`` as ``forward``.
        """
        y_hat, likelihoods = self._latent_forward(self.apply_gain(y0))
        x_hat = self.synthesis(y_hat) if synthesize else None
        return {"x_hat": x_hat, "likelihoods": likelihoods}

    def _latent_forward(self, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The entropy model's pass over ``y``: ``(ŷ, {"y": p(ŷ), ...})``."""
        raise NotImplementedError(f"{type(self).__name__} must define _latent_forward")


class _TiledTransforms(_Transforms):
    """g_a, h_a, h_s and g_s applied tile by tile (:mod:`nic_lib.models.tiling`): the
    working memory of a transform is one tile's, whatever the image size, and the
    output is bit for bit the whole-image computation on the deterministic GEMM path
    (the same for any tile size and thread count)."""

    #: Working memory of one tile of a transform, bytes (see tiling.tile_for_memory).
    tile_memory: int = tiling.DEFAULT_TILE_MEMORY

    def _tiled(self, module: nn.Module, x: Tensor, tile: int | None = None) -> Tensor:
        if tile is None:
            tile = tiling.tile_for_memory(module, x.shape[1], x.dtype, self.tile_memory)
        return tiling.run_tiled(module, x, tile)

    def _analyze(self, x: Tensor, tile: int | None = None) -> Tensor:
        """y = g_a(x) ⊙ γ_l (:meth:`analysis`), g_a in tiles."""
        return self.apply_gain(self._tiled(self.g_a, x, tile))

    @torch.no_grad()
    def synthesize(self, y_hat: Tensor, tile: int | None = None) -> Tensor:
        """The decoded image of coded latents: ``g_s(y_hat ⊙ γ'_l)`` clamped to [0, 1], g_s in tiles.

        What ``decompress`` returns, and the encoder's own reconstruction of
        ``compress(x, return_y_hat=True)["y_hat"]``, bit for bit whatever the thread
        count and the tile side (see :data:`SYNTHESIS_DTYPE`).

        Args:
            y_hat: (B, M, h, w) latents.
            tile: tile side in latents; default the largest within ``tile_memory``.

        Returns:
            (B, 3, 16h, 16w) in y_hat's dtype.
        """
        # the inverse gain in SYNTHESIS_DTYPE, as g_s computes
        x_hat = self._tiled(self.g_s, self.apply_inverse_gain(y_hat.to(SYNTHESIS_DTYPE)), tile)
        return x_hat.clamp_(0, 1).to(y_hat.dtype)


class _ContextModel(_TiledTransforms):
    r"""What the context models share: their coder and the rate of what it codes.

    Entropy coding of y goes through :class:`nic_lib.models.context_coding.ContextCoder`
    (any odd context size, wavefront-parallel, deterministic across thread counts:
    its module docstring says how), handed the model's ``context_prediction``,
    ``entropy_parameters`` and, per image, the symbol coder of its entropy model
    (``_symbols``: Gaussian by default).
    """

    context_prediction: MaskedConv2d
    entropy_parameters: nn.Module

    #: "wavefront" or "raster"; set per instance to compare (see
    #: ``context_coding.CODING_ORDERS``).
    coding_order: str = DEFAULT_CODING_ORDER

    @property
    def context_model(self) -> MaskedConv2d:
        """The paper's name for ``context_prediction``."""
        return self.context_prediction

    def _symbols(self) -> SymbolCoder:
        """One image's symbol coder: Gaussians with ``gaussian_conditional``'s tables."""
        return GaussianSymbols(self.gaussian_conditional)

    def _coder(self) -> ContextCoder:
        """The context coder over this model's networks, in ``coding_order``."""
        return ContextCoder(self.context_prediction, self.entropy_parameters,
                            self._symbols, self.coding_order)  # fmt: skip

    @torch.no_grad()
    def coded_likelihoods(self, x: Tensor, y_hat: Tensor) -> dict[str, Tensor]:
        """The likelihoods of the symbols the coder writes, in one parallel pass.

        The eval-mode ``forward`` feeds the context model ``round(y)``, while the coder
        feeds it the latents decoded so far, ``y_hat = round(y − μ) + μ`` with μ the
        serially predicted mean, so ``forward``'s Σ −log2 p is the rate of slightly
        different symbols. At low rate the two differ by up to ~20% on smooth images
        (measured on the cpu-profile context-only model, Kodak quality 1). Given the
        coder's ``y_hat`` (``compress(x, return_y_hat=True)["y_hat"]``) the masked
        convolution reads it in one pass: being causal, it sees at every position
        exactly the latents the serial coder had decoded, so the scales and means are
        the coder's (up to its float64 arithmetic and 2^-16 grid), and the Gaussian
        conditional, rounding ``y − μ``, returns the likelihoods of the coded symbols.

        Args:
            x: the input ``compress`` saw, (B, 3, H, W).
            y_hat: the coder's latents for it.

        Returns:
            ``forward(x)["likelihoods"]`` with the context model reading ``y_hat``.

        Raises:
            RuntimeError: the model is in training mode (noise, not rounding).
        """
        if self.training:
            raise RuntimeError("coded_likelihoods needs eval mode (call model.eval())")
        y = self.analysis(x)
        # the context model reads the coder's ŷ instead of round(y); the Gaussian (or the
        # mixture, whose ŷ = round(y) is the coder's too) prices it as forward does
        return self._latent_forward(y, y_hat.to(y.dtype))[1]


# ======================================================================================
# CompressAI's models, registered under the paper keys
# ======================================================================================


def _model_device(model: nn.Module) -> torch.device:
    """Where the model's synthesis transform runs (its decoded latents go there)."""
    return next(model.g_s.parameters()).device


@register_model("bmshj2018-factorized")
class FactorizedPrior(_TiledTransforms, _compressai_google.FactorizedPrior):
    """CompressAI's factorized prior (Ballé et al., ICLR 2018) with g_a and g_s in tiles on
    the deterministic GEMM path (:class:`_TiledTransforms`): bounded memory, and the
    decoded image is the same bit for bit whatever the thread count (CompressAI's g_s on
    oneDNN changes a few pixels by one level between 1 and 2 threads)."""

    def __init__(self, N: int, M: int, **kwargs):
        super().__init__(N, M, **kwargs)
        entropy_models.own_entropy_models(self)  # CompressAI's constructor built its classes

    def _latent_forward(self, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """ŷ and p(ŷ) from the factorized density (the entropy bottleneck)."""
        y_hat, y_likelihoods = self.entropy_bottleneck(y)
        return y_hat, {"y": y_likelihoods}

    @torch.no_grad()
    def compress(self, x: Tensor) -> dict:
        """Encode images to ``{"strings": [y_strings], "shape": y size}``."""
        y = self._analyze(x)
        return {"strings": [self.entropy_bottleneck.compress(y)], "shape": y.size()[-2:]}

    @torch.no_grad()
    def decompress(self, strings: list, shape) -> dict:
        """Decode ``compress``'s output to ``{"x_hat"}`` (clamped to [0, 1])."""
        if not (isinstance(strings, list) and len(strings) == 1):
            raise ValueError("expected strings = [y_strings] from compress()")
        y_hat = self.entropy_bottleneck.decompress(strings[0], shape)
        return {"x_hat": self.synthesize(y_hat.to(_model_device(self)))}


class _HyperpriorCoding(_FineScaleTable, _TiledTransforms):
    r"""The coder of the hyperprior models without context: z with the factorized
    density, y with a Gaussian per latent whose parameters h_s predicts from ẑ.

    Every transform runs in tiles on the deterministic GEMM path (:class:`_TiledTransforms`),
    and the coder's parameters come from a float64 copy of h_s, as the context models'
    (:mod:`nic_lib.models.context_coding`):

        σ, μ = h_s(ẑ) in float64,   index = #{s ∈ scale_table[:-1] : s < σ},
        μ snapped to 2^-16,         q = round(y − μ),   ŷ = q + μ.

    Float32 h_s is not bit-exact across thread counts, even on the GEMM path (measured
    2026-12-06: the mean-scale model's encoder wrote other bytes on 2 threads than on 1 for
    one of 4 Kodak images at q6); in float64 two summation orders differ by ~1e-16
    relative, and an index or a snapped mean moves only where that noise crosses an edge
    (chance ~1e-9 per value). h_s, the indexes and the Gaussian coder run on
    ``CODING_DEVICE`` (the CPU) whatever the model's device, so a file written on a GPU
    decodes on the CPU and vice versa.

    Scale calibration (:mod:`nic_lib.models.calibration`): a calibrated model holds the
    buffer ``scale_calibration``, one factor c_l per rate level (float64, so the coder
    multiplies by exactly the number that was fitted), and every σ it uses, in ``forward``
    and in the coder, is

        σ' = c_l · σ ,   μ unchanged        (:meth:`gaussian_parameters`).

    An uncalibrated model has no such buffer (c = 1), so the state dicts of every model
    written before the buffer existed are unchanged.
    """

    #: True when h_s predicts means as well as scales (σ then μ, CompressAI's layout).
    predicts_means: bool = False

    def __init__(self, N: int, M: int, **kwargs):
        super().__init__(N, M, **kwargs)
        entropy_models.own_entropy_models(self)  # CompressAI's constructor built its classes

    def scale_factor(self) -> float:
        """c_l: the scale calibration factor of the current level (1.0 when uncalibrated)."""
        factors = self._buffers.get("scale_calibration")
        if factors is None:
            return 1.0
        gain = self._modules.get("gain")  # the level lives in the gain units
        return float(factors[gain.level if gain is not None else 0])

    def _calibrated(self, params: Tensor) -> tuple[Tensor, Tensor | None]:
        """(σ' = c_l σ, μ or None) from h_s's output (σ, or σ then μ)."""
        scales, means = params.chunk(2, 1) if self.predicts_means else (params, None)
        c = self.scale_factor()
        return (scales if c == 1.0 else scales * c), means

    def gaussian_parameters(self, z_hat: Tensor) -> tuple[Tensor, Tensor | None]:
        """The Gaussian of each latent from ẑ, as ``forward`` uses it: σ' = c_l σ and μ
        (None for the scale hyperprior), with (σ, μ) = h_s(ẑ)."""
        return self._calibrated(self.h_s(z_hat))

    def _hyper_input(self, y: Tensor) -> Tensor:
        """What h_a reads: y (the mean-scale model) or |y| (the scale hyperprior)."""
        return y

    def _latent_forward(self, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """CompressAI's pass: z = h_a(y or |y|), ẑ from the factorized density,
        σ' (, μ) from h_s(ẑ) (:meth:`gaussian_parameters`), ŷ and p(ŷ) from the Gaussian
        conditional."""
        z = self.h_a(self._hyper_input(y))
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        scales, means = self.gaussian_parameters(z_hat)
        y_hat, y_likelihoods = self.gaussian_conditional(y, scales, means=means)
        return y_hat, {"y": y_likelihoods, "z": z_likelihoods}

    def _coder_parameters(self, z_hat: Tensor):
        """(Gaussian coder, scale indexes, snapped means or None) on ``CODING_DEVICE``."""
        params = self._tiled(coding_copy(self.h_s), z_hat.to(CODING_DEVICE, CODING_DTYPE))
        scales, means = self._calibrated(params)  # σ' = c_l σ in float64
        gc = on_coding_device(self.gaussian_conditional)
        means = snap_to_grid(means) if means is not None else None
        return gc, scale_indexes(scales, scale_edges(gc)), means

    @torch.no_grad()
    def compress(self, x: Tensor) -> dict:
        """Encode images to ``{"strings": [y_strings, z_strings], "shape": z size}``."""
        y = self._analyze(x)
        z = self._tiled(self.h_a, self._hyper_input(y))
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        gc, indexes, means = self._coder_parameters(z_hat)
        y_strings = gc.compress(y.to(CODING_DEVICE, CODING_DTYPE), indexes, means=means)
        return {"strings": [y_strings, z_strings], "shape": z.size()[-2:]}

    @torch.no_grad()
    def decompress(self, strings: list, shape) -> dict:
        """Decode ``compress``'s output to ``{"x_hat"}`` (float32, clamped to [0, 1])."""
        if not (isinstance(strings, list) and len(strings) == 2):
            raise ValueError("expected strings = [y_strings, z_strings] from compress()")
        z_hat = self.entropy_bottleneck.decompress(strings[1], shape)
        gc, indexes, means = self._coder_parameters(z_hat)
        y_hat = gc.decompress(strings[0], indexes, CODING_DTYPE, means=means)
        del means, indexes
        return {"x_hat": self.synthesize(y_hat.to(_model_device(self))).float()}


@register_model("bmshj2018-hyperprior")
class ScaleHyperprior(_HyperpriorCoding, _compressai_google.ScaleHyperprior):
    """CompressAI's scale hyperprior (Ballé et al., ICLR 2018): z = h_a(|y|), σ = h_s(ẑ),
    coded as :class:`_HyperpriorCoding` says, with this project's 256-scale table."""

    def _hyper_input(self, y: Tensor) -> Tensor:
        return torch.abs(y)


@register_model("mbt2018-mean")
class MeanScaleHyperprior(_HyperpriorCoding, _compressai_google.MeanScaleHyperprior):
    """CompressAI's mean-scale hyperprior (Minnen et al. 2018, the paper's "hyperprior"
    with means): z = h_a(y), (σ, μ) = h_s(ẑ), coded as :class:`_HyperpriorCoding` says,
    with this project's 256-scale table."""

    predicts_means = True


@register_model("mbt2018")
class JointAutoregressiveHierarchicalPriors(
    _FineScaleTable, _ContextModel, _compressai_google.JointAutoregressiveHierarchicalPriors
):
    r"""Joint autoregressive and hierarchical priors (Minnen, Ballé, Toderici, NeurIPS 2018).

    CompressAI's ``JointAutoregressiveHierarchicalPriors`` (same layers and keys, so
    the zoo's weights load) with the context model's size a constructor argument; its
    coder is rewritten here for any odd size, wavefront-parallel and deterministic
    (see :mod:`nic_lib.models.context_coding`; ``coding_order = "raster"`` for the
    serial order).

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
        self.context_size = check_context_size(context_size)
        self.context_prediction = context_model(M, self.context_size)
        entropy_models.own_entropy_models(self)  # CompressAI's constructor built its classes

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

    def _latent_forward(self, y: Tensor, y_hat: Tensor | None = None
                        ) -> tuple[Tensor, dict[str, Tensor]]:
        """CompressAI's pass: the hyperprior on z, the context model on ŷ (noise in
        train mode, round(y) in eval mode; ``y_hat`` when given: ``coded_likelihoods``),
        then the Gaussian of each latent."""
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        params = self.h_s(z_hat)
        if y_hat is None:
            y_hat = self.gaussian_conditional.quantize(y, "noise" if self.training else "dequantize")
        ctx_params = self.context_prediction(y_hat)
        gaussian_params = self.entropy_parameters(torch.cat((params, ctx_params), dim=1))
        return y_hat, {"y": self._y_likelihoods(y, gaussian_params), "z": z_likelihoods}

    def _y_likelihoods(self, y: Tensor, params: Tensor) -> Tensor:
        """The likelihood of ŷ under the entropy parameters: a Gaussian (scales, means)."""
        scales_hat, means_hat = params.chunk(2, 1)
        _, y_likelihoods = self.gaussian_conditional(y, scales_hat, means=means_hat)
        return y_likelihoods

    def _hyper_features(self, z_hat: Tensor) -> Tensor:
        """h_s(z_hat) as both coder sides compute it: in float64 on ``CODING_DEVICE``
        (:func:`nic_lib.models.context_coding.coding_copy`), in tiles."""
        return self._tiled(coding_copy(self.h_s), z_hat.to(CODING_DEVICE, CODING_DTYPE))

    @torch.no_grad()
    def compress(self, x: Tensor, return_y_hat: bool = False) -> dict:
        """Encode images to ``{"strings": [y_strings, z_strings], "shape": z size}``.

        Args:
            x: (B, 3, H, W) in [0, 1], sides multiples of ``downsampling_factor``.
            return_y_hat: also return ``"y_hat"``, the encoder's reconstruction of y,
                which ``decompress`` reproduces bit for bit.

        Returns:
            The dict above (y strings coded in ``self.coding_order``).
        """
        y = self._analyze(x)
        z = self._tiled(self.h_a, y)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        y_strings, y_hat = self._coder().compress(y, self._hyper_features(z_hat))
        out = {"strings": [y_strings, z_strings], "shape": z.size()[-2:]}
        return {**out, "y_hat": y_hat} if return_y_hat else out

    @torch.no_grad()
    def decompress(self, strings: list, shape) -> dict:
        """Decode ``compress``'s output to ``{"x_hat"}`` (clamped to [0, 1]).

        The y strings must have been written in ``self.coding_order``.
        """
        if not (isinstance(strings, list) and len(strings) == 2):
            raise ValueError("expected strings = [y_strings, z_strings] from compress()")
        z_hat = self.entropy_bottleneck.decompress(strings[1], shape)
        y_hat = self._coder().decompress(strings[0], self._hyper_features(z_hat))
        return {"x_hat": self.synthesize(y_hat)}


# ======================================================================================
# Context-only ablation
# ======================================================================================


@register_model("mbt2018-context")
class ContextOnlyPrior(_FineScaleTable, _ContextModel, CompressionModel):
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
        self.context_size = check_context_size(context_size)
        self.g_a = analysis_transform(N, M)
        self.g_s = synthesis_transform(N, M)
        self.context_prediction = context_model(M, self.context_size)
        self.entropy_parameters = entropy_parameters_network(2 * M, 2 * M)
        self.gaussian_conditional = entropy_models.GaussianConditional(None)

    @property
    def downsampling_factor(self) -> int:
        """Input sides must be multiples of this (g_a's four stride-2 layers)."""
        return 2**4

    def _latent_forward(self, y: Tensor, y_hat: Tensor | None = None
                        ) -> tuple[Tensor, dict[str, Tensor]]:
        """ŷ (uniform noise in train mode; ``y_hat`` when given: ``coded_likelihoods``),
        and p(ŷ) from the context model alone."""
        if y_hat is None:
            y_hat = self.gaussian_conditional.quantize(y, "noise" if self.training else "dequantize")
        scales, means = self.entropy_parameters(self.context_prediction(y_hat)).chunk(2, 1)
        _, y_likelihoods = self.gaussian_conditional(y, scales, means=means)
        return y_hat, {"y": y_likelihoods}

    def aux_loss(self) -> Tensor:
        """Zero: there is no entropy bottleneck to fit (differentiable, so a generic
        training step may call ``backward()`` on it)."""
        return torch.zeros((), requires_grad=True)

    @torch.no_grad()
    def compress(self, x: Tensor, return_y_hat: bool = False) -> dict:
        """Encode images to ``{"strings": [y_strings], "shape": y size}``.

        Args:
            x: (B, 3, H, W) in [0, 1], sides multiples of ``downsampling_factor``.
            return_y_hat: also return ``"y_hat"``, the encoder's reconstruction of y,
                which ``decompress`` reproduces bit for bit.

        Returns:
            The dict above (y strings coded in ``self.coding_order``).
        """
        y = self._analyze(x)
        y_strings, y_hat = self._coder().compress(y, None)
        out = {"strings": [y_strings], "shape": y.size()[-2:]}
        return {**out, "y_hat": y_hat} if return_y_hat else out

    @torch.no_grad()
    def decompress(self, strings: list, shape) -> dict:
        """Decode ``compress``'s output to ``{"x_hat"}`` (clamped to [0, 1]).

        The y strings must have been written in ``self.coding_order``.
        """
        if not (isinstance(strings, list) and len(strings) == 1):
            raise ValueError("expected strings = [y_strings] from compress()")
        y_hat = self._coder().decompress(strings[0], None, *shape)
        return {"x_hat": self.synthesize(y_hat)}


# ======================================================================================
# Gaussian-mixture ablation
# ======================================================================================


@register_model("mbt2018-gmm")
class JointGaussianMixturePrior(JointAutoregressiveHierarchicalPriors):
    r"""mbt2018 with a K-component Gaussian mixture for y (the paper's GMM discussion).

    Same transforms, hyperprior and context model as ``mbt2018``; the entropy
    parameters output, per latent, K weights (softmax), K means and K scales, and y is
    modelled by the mixture's mass on the unit bin (CompressAI's
    ``GaussianMixtureConditional`` gives the likelihood). y_hat = round(y) (no mean
    offset, a mixture has no single mean), so ``forward`` in eval mode and the decoder
    see the same latents. Coding goes wavefront by wavefront (as ``mbt2018``) with
    per-symbol tables from :func:`nic_lib.models.mixture.mixture_quantized_cdfs` and
    CompressAI's rANS.

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
        self.gaussian_conditional = entropy_models.GaussianMixtureConditional(K=self.K)

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

    def _y_likelihoods(self, y: Tensor, params: Tensor) -> Tensor:
        """The mixture's likelihood of ŷ (the rest of the pass is ``mbt2018``'s: uniform
        noise in train mode, the context model reads ``y_hat`` when given)."""
        scales, means, weights = mixture_parameters(params, self.K)
        _, y_likelihoods = self.gaussian_conditional(y, scales, means, weights)
        return y_likelihoods

    def _symbols(self) -> MixtureSymbols:
        """One image's symbol coder: per-symbol mixture tables, y_hat = round(y)."""
        return MixtureSymbols(self.K)


# ======================================================================================
# Checkerboard ablation
# ======================================================================================


@register_model("mbt2018-checkerboard")
class JointCheckerboardPrior(_FineScaleTable, _Transforms, SimpleVAECompressionModel):
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
        self.context_size = k = check_context_size(context_size)
        self.g_a = analysis_transform(N, M)
        self.g_s = synthesis_transform(N, M)
        self.latent_codec = HyperpriorLatentCodec(
            latent_codec={
                "y": entropy_models.CheckerboardLatentCodec(
                    latent_codec={"y": GaussianConditionalLatentCodec(
                        gaussian_conditional=entropy_models.GaussianConditional(None),
                        quantizer="noise")},
                    entropy_parameters=entropy_parameters_network(4 * M, 2 * M),
                    context_prediction=CheckerboardMaskedConv2d(
                        M, 2 * M, kernel_size=k, padding=k // 2
                    ),
                    forward_method=forward_method,
                ),
                "hyper": HyperLatentCodec(
                    entropy_bottleneck=entropy_models.EntropyBottleneck(N),
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

    def _latent_forward(self, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """CompressAI's hyperprior + checkerboard latent codec over y."""
        y_out = self.latent_codec(y)
        return y_out["y_hat"], y_out["likelihoods"]

    @torch.no_grad()
    def compress(self, x: Tensor) -> dict:
        """Encode images to ``{"strings": [anchor, non-anchor, z strings], "shape": z size}``."""
        out = self.latent_codec.compress(self.analysis(x))
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
        return {"x_hat": self.synthesis(y_hat).clamp_(0, 1)}