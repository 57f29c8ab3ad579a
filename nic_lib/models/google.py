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

Written here because CompressAI lacks it: the context models' coders for a context of
any size (CompressAI hard-codes 5x5), decoding a whole wavefront of latents per network
call and deterministic across thread counts (float64 parameters snapped to a grid; see
``_SerialContextCoding``), the context-only model, per-position quantized
CDFs of a Gaussian mixture, and the glue that gives the checkerboard codec the
``{"strings", "shape"}`` contract of the other models.
"""

from __future__ import annotations

import copy
import math

import scipy.stats
import torch
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
from compressai.models.google import FactorizedPrior
from compressai.models.utils import conv, deconv
from torch import Tensor, nn

from . import tables, tiling
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
    "CODING_ORDERS",
    "coding_schedule",
    "context_model",
    "entropy_parameters_network",
    "hyper_analysis",
    "hyper_synthesis",
    "mixture_quantized_cdfs",
    "snap_to_grid",
    "synthesis_transform",
    "wavefront_slope",
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

#: Symbol orders of the context models' coders (``model.coding_order``).
CODING_ORDERS = ("wavefront", "raster")

#: Wavefront: one network call per wavefront, a(H - 1) + W calls instead of H W, same
#: y_hat as raster; "raster" (CompressAI's order) is kept to compare against.
DEFAULT_CODING_ORDER = "wavefront"

#: The coder's parameter path (h_s, context model, entropy parameters) runs in float64:
#: two summation orders then disagree by ~1e-16 relative instead of ~1e-7.
CODING_DTYPE = torch.float64

#: Grid of predicted means (and mixture parameters) at coding time, 2^-16: dyadic, so
#: y_hat = q + mean is exact in float64; coarse next to float64 noise (a value hits an
#: edge with chance ~1e-9), fine next to a latent's unit bin (y_hat moves <= 2^-17,
#: which keeps it within the 1e-4 the tests allow against the float32 forward pass).
PARAMETER_GRID = 2.0**-16

#: dtype of g_s when decoding (and for the encoder's reconstruction, ``synthesize``).
#: What broke cross-thread exactness was not float32 but oneDNN: its float32 transposed
#: convolutions change their last bits with the thread count (kodim01, m192 q4: 603k of
#: 1.2M outputs differ between 1 and 2 threads, 7 pixels by one level). PyTorch's im2col
#: + MKL GEMM path in float32 gave bit-identical outputs on 1 and 2 threads, as float64
#: did, at 0.27 s instead of 0.68 s and half the memory
#: (``benchmarks/determinism.py --synthesis`` measures it per layer over Kodak x
#: qualities). So g_s runs in float32 under ``tiling.deterministic_convolutions``.
SYNTHESIS_DTYPE = torch.float32

#: Where the coder's parameter path runs (h_s, context model, entropy parameters, the
#: Gaussian coder's table indexes), whatever the model's device: the CPU, so that a file
#: encoded with the model on a GPU decodes with it on the CPU and vice versa (a GPU's
#: convolutions sum in other orders than the CPU's, and one scale on the other side of a
#: table edge derails rANS). The transforms g_a and g_s stay on the model's device.
CODING_DEVICE = torch.device("cpu")

#: Threads of the coder's per-wavefront products: at most ~H/a positions each, too small
#: to split, and on a busy machine every parallel region waits for the slowest thread
#: (kodim01, N=64, M=96, 2-core machine under load: 0.6 s CPU to decode on 1 thread,
#: 2.8 s on 2). h_s and g_s still use the caller's threads.
CODING_THREADS = 1

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


# ======================================================================================
# Coding order and deterministic parameters of the context models
# ======================================================================================


def wavefront_slope(context_size: int) -> int:
    r"""The smallest integer a for which the wavefront index t = a*i + j is a valid
    parallel schedule of a k x k raster-causal context: a = k // 2 + 1.

    With p = k // 2, the masked convolution (PixelCNN mask A) at latent (i, j) reads

    - the same row, left of it: (i, j') with j - p <= j' < j, and
    - the p rows above, the whole window width: (i', j') with i - p <= i' < i and
      |j' - j| <= p.

    Claim: t(i', j') < t(i, j) for every such dependency iff a >= p + 1.

    - Same row: t(i, j) - t(i, j') = j - j' >= 1 for any a.
    - Rows above: t(i, j) - t(i', j') = a (i - i') + (j - j') >= a * 1 - p, the
      minimum being at the nearest row (i - i' = 1, a > 0) and the rightmost column
      (j' - j = p). It is >= 1 iff a >= p + 1.
    - a = p fails: the up-right neighbour (i - 1, j + p) gets t = p(i - 1) + j + p =
      t(i, j), the same wavefront, yet it is an input of (i, j).

    Hence every input of a position lies on an earlier wavefront, all positions of one
    wavefront are independent given the earlier ones, and an H x W latent needs
    a (H - 1) + W network calls instead of H W: k = 3, 5, 7 give a = 2, 3, 4
    (5x5: t = 3i + j, as in the issue). Checked against the real mask for k = 3, 5, 7
    in ``tests/test_wavefront.py``.

    Args:
        context_size: k, odd and >= 3.

    Returns:
        a = k // 2 + 1.

    Raises:
        ValueError: if ``context_size`` is even or < 3.
    """
    return _check_context_size(context_size) // 2 + 1


def coding_schedule(
    height: int, width: int, context_size: int, order: str = DEFAULT_CODING_ORDER
) -> list[tuple[Tensor, Tensor]]:
    """The groups of latent positions coded together, in coding order.

    Encoder and decoder both walk this list, so they put symbols into and take them
    out of the rANS stream in the same order: group by group, inside a group by
    increasing row, and for each position its M channels in order.

    Args:
        height, width: the latent's size.
        context_size: k of the context model.
        order: ``"wavefront"`` (one group per wavefront t = a*i + j, a from
            :func:`wavefront_slope`, rows increasing inside it) or ``"raster"``
            (one position per group, row by row, as CompressAI).

    Returns:
        ``[(rows, cols), ...]``, int64 tensors of equal length per group.

    Raises:
        ValueError: for an unknown ``order``.
    """
    if order not in CODING_ORDERS:
        raise ValueError(
            f"unknown coding order {order!r}; use one of {CODING_ORDERS} "
            "(model.coding_order in nic_lib/models/google.py)"
        )
    rows, cols = (g.flatten() for g in torch.meshgrid(
        torch.arange(height), torch.arange(width), indexing="ij"))  # fmt: skip
    if order == "raster":
        return [(rows[n : n + 1], cols[n : n + 1]) for n in range(height * width)]
    # t = a*i + j; sort by (t, i), then cut at every change of t.
    t = wavefront_slope(context_size) * rows + cols
    perm = torch.argsort(t * height + rows)
    counts = torch.bincount(t).tolist()
    groups = torch.split(perm, [c for c in counts if c > 0])
    return [(rows[g], cols[g]) for g in groups]


def snap_to_grid(values: Tensor, grid: float = PARAMETER_GRID) -> Tensor:
    """Round to the nearest multiple of ``grid`` (a power of two, so it is exact).

    Args:
        values: float64 parameters.
        grid: spacing.

    Returns:
        round(values / grid) * grid, same dtype.
    """
    # v_snapped = grid * round(v / grid)
    return torch.round(values / grid) * grid


class _TiledTransforms:
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
        """y = g_a(x), in tiles."""
        return self._tiled(self.g_a, x, tile)

    @torch.no_grad()
    def synthesize(self, y_hat: Tensor, tile: int | None = None) -> Tensor:
        """The decoded image of coded latents: ``g_s(y_hat)`` clamped to [0, 1], in tiles.

        What ``decompress`` returns, and the encoder's own reconstruction of
        ``compress(x, return_y_hat=True)["y_hat"]``, bit for bit whatever the thread
        count and the tile side (see :data:`SYNTHESIS_DTYPE`).

        Args:
            y_hat: (B, M, h, w) latents.
            tile: tile side in latents; default the largest within ``tile_memory``.

        Returns:
            (B, 3, 16h, 16w) in y_hat's dtype.
        """
        x_hat = self._tiled(self.g_s, y_hat.to(SYNTHESIS_DTYPE), tile)
        return x_hat.clamp_(0, 1).to(y_hat.dtype)


class _SerialContextCoding(_TiledTransforms):
    r"""Entropy coding of y with a k x k masked-convolution context model.

    Written here because CompressAI's ``_compress_ar``/``_decompress_ar`` are tied to
    a 5x5 context, decode one position per network call and are not deterministic
    across thread counts. Two things are added:

    **Wavefront order** (``coding_order = "wavefront"``, the default). Positions on
    one wavefront t = a*i + j (a = k//2 + 1, see :func:`wavefront_slope` for the
    proof) do not depend on each other, so one call per wavefront gathers their
    causal k x k neighbourhoods from the y_hat buffer, applies the masked kernel as
    one matrix product, runs the entropy-parameters network on all of them and
    rANS-codes their symbols: a(H - 1) + W calls instead of H W (on
    ``CODING_THREADS`` threads: the products are small). ``"raster"`` codes
    one position per call in CompressAI's order; it exists to compare (the two
    orders write different bitstreams, decode a stream in the order that wrote it;
    they reconstruct the same y_hat).

    **Deterministic parameters.** rANS needs the decoder to pick exactly the table
    the encoder picked for every symbol, and the decoded y_hat feeds back into the
    context of later positions. In float32 the predicted scales and means depend on
    summation order, which changes with the thread count, the batch shape (one
    position or a wavefront) and the machine; a scale on the edge of a table bin
    then selects another table and the rest of the stream decodes garbage. Here,
    at coding time only (training is unchanged):

    1. h_s, the context model and the entropy-parameters network run in float64
       (copies of the float32 weights, made per call, so any module works), which
       shrinks the disagreement between two summation orders to ~1e-16 relative;
    2. the parameters are then snapped to a grid on both sides: a Gaussian's scale
       becomes its index in ``GaussianConditional.scale_table`` (an integer, the
       only thing rANS sees); its mean, and every mixture parameter, is rounded to
       the grid ``PARAMETER_GRID`` (2^-16). Encoder and decoder therefore hold the
       same integers and the same dyadic means, y_hat = q + mean is bit-identical,
       and so are the contexts computed from it.

    A float64 disagreement can only matter when a value lies within ~1e-14 of a bin
    edge: a chance of ~1e-14 per scale (edges 13% apart) and ~1e-9 per mean (edges
    2^-16 apart) per symbol. Exact determinism would need integer networks (Ballé,
    Johnston, Minnen, ICLR 2019); the grid keeps y_hat within 2^-17 of the float
    model's, a rate change far below measurement noise.

    Subclasses provide the per-group hooks ``_code_positions`` /
    ``_decode_positions`` (and ``_start_coding`` / ``_finish_coding``).
    """

    context_prediction: MaskedConv2d
    entropy_parameters: nn.Module

    #: "wavefront" or "raster"; set per instance to compare (see CODING_ORDERS).
    coding_order: str = DEFAULT_CODING_ORDER

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
        gc = self.gaussian_conditional
        method = type(gc).quantize

        # forward's only mean-free rounding is the context model's input: substitute
        def quantize(inputs, mode, means=None):
            if mode == "dequantize" and means is None:
                return y_hat.to(inputs.dtype)
            return method(gc, inputs, mode, means)

        gc.quantize = quantize  # an instance attribute shadows the method
        try:
            return self(x)["likelihoods"]
        finally:
            del gc.quantize

    @property
    def context_model(self) -> MaskedConv2d:
        """The paper's name for ``context_prediction``."""
        return self.context_prediction

    @staticmethod
    def _coding_copy(module: nn.Module) -> nn.Module:
        """A float64 copy of a network on ``CODING_DEVICE`` for the coder's parameter path."""
        return copy.deepcopy(module).to(device=CODING_DEVICE, dtype=CODING_DTYPE)

    def _hyper_features(self, z_hat: Tensor) -> Tensor:
        """h_s(z_hat) in float64 on ``CODING_DEVICE``, as both coder sides compute it, in tiles."""
        return self._tiled(self._coding_copy(self.h_s), z_hat.to(CODING_DEVICE, CODING_DTYPE))

    @staticmethod
    def _pointwise_path(module: nn.Module):
        """A float64 function (L, C_in) -> (L, C_out) computing a network of 1x1
        convolutions and leaky ReLUs (the entropy parameters) as matrix products.

        A 1x1 convolution of L positions is the product of an (L, C_in) matrix with the
        kernel; as ``addmm`` it runs ~5x faster than ``conv2d`` on (L, C_in, 1, 1) in
        float64 (L = 16, C_in = 768). Other networks run as their float64 copy.
        """
        layers = list(module) if isinstance(module, nn.Sequential) else [module]
        plain = all(
            (type(l) is nn.Conv2d and l.kernel_size == (1, 1) and l.groups == 1
             and l.stride == (1, 1) and l.padding == (0, 0) and l.bias is not None)
            or type(l) is nn.LeakyReLU for l in layers)
        if not plain:
            network = _SerialContextCoding._coding_copy(module)
            return lambda h: network(h[:, :, None, None]).flatten(1)
        steps = [(l.weight[:, :, 0, 0].T.to(CODING_DEVICE, CODING_DTYPE).contiguous(),
                  l.bias.to(CODING_DEVICE, CODING_DTYPE))
                 if isinstance(l, nn.Conv2d) else l.negative_slope for l in layers]

        def apply(h: Tensor) -> Tensor:
            for step in steps:
                if isinstance(step, tuple):  # h W^T + b: the 1x1 convolution
                    h = torch.addmm(step[1], h, step[0])
                else:
                    h = nn.functional.leaky_relu(h, step)
            return h

        return apply

    def _parameter_path(self, side: Tensor | None):
        """A function (y_hat buffer, rows, cols) -> entropy parameters (L, C), float64, on
        ``CODING_DEVICE``.

        ``side`` is one image's hyperprior features (2M, H, W) or None. The buffer is
        y_hat (M, H + 2p, W + 2p), zero-padded by p = k // 2.
        """
        conv = self.context_prediction
        # Window offsets the mask keeps (the causal half), e.g. 12 of 25 for 5x5.
        dy, dx = conv.mask[0, 0].nonzero(as_tuple=True)
        weight = conv.weight[:, :, dy, dx].to(CODING_DEVICE, CODING_DTYPE)  # (2M, M, n)
        weight = weight.reshape(weight.shape[0], -1).T.contiguous()  # (M n, 2M)
        bias = conv.bias.to(CODING_DEVICE, CODING_DTYPE)
        entropy_parameters = self._pointwise_path(self.entropy_parameters)
        dy, dx = dy.to(CODING_DEVICE), dx.to(CODING_DEVICE)

        def params_at(y_hat: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
            # patch[l, c, n] = y_hat[c, rows[l] + dy[n], cols[l] + dx[n]]
            patch = y_hat[:, rows[:, None] + dy, cols[:, None] + dx].permute(1, 0, 2)
            # ctx[l] = b + sum_{c, n} w[:, c, n] patch[l, c, n]: the masked convolution
            # at (rows[l], cols[l]), for all positions of the group in one product.
            ctx = torch.addmm(bias, patch.reshape(len(rows), -1), weight)
            if side is not None:
                # Same order as CompressAI's mbt2018: hyperprior features first.
                ctx = torch.cat((side[:, rows, cols].T, ctx), dim=1)
            return entropy_parameters(ctx)

        return params_at

    def _code_latents(self, side: Tensor | None, height: int, width: int, code) -> Tensor:
        """Walk the coding schedule; ``code(rows, cols, params) -> y_hat (L, M)``.

        Returns:
            y_hat (1, M, height, width), float64, on ``CODING_DEVICE``.
        """
        k = self.context_prediction.kernel_size[0]
        pad = k // 2
        m = self.context_prediction.in_channels
        device = CODING_DEVICE
        y_hat = torch.zeros((m, height + 2 * pad, width + 2 * pad), dtype=CODING_DTYPE,
                            device=device)  # fmt: skip
        params_at = self._parameter_path(None if side is None else side[0])
        threads = torch.get_num_threads()
        torch.set_num_threads(CODING_THREADS)
        try:
            for rows, cols in coding_schedule(height, width, k, self.coding_order):
                rows, cols = rows.to(device), cols.to(device)
                params = params_at(y_hat, rows, cols)
                y_hat[:, rows + pad, cols + pad] = code(rows, cols, params).T
        finally:
            torch.set_num_threads(threads)
        return y_hat[None, :, pad : pad + height, pad : pad + width]

    def _compress_ar(self, y: Tensor, side: Tensor | None) -> tuple[bytes, Tensor]:
        """Code one image's y (1, M, H, W); returns (rANS string, y_hat float64 on
        ``CODING_DEVICE``)."""
        y64 = y[0].to(CODING_DEVICE, CODING_DTYPE)
        encoder = BufferedRansEncoder()
        state = self._start_coding()
        y_hat = self._code_latents(
            side, y.shape[2], y.shape[3],
            lambda rows, cols, params: self._code_positions(
                encoder, state, y64[:, rows, cols].T, params),
        )  # fmt: skip
        self._finish_coding(encoder, state)
        return encoder.flush(), y_hat

    def _decompress_ar(self, string: bytes, side: Tensor | None, height: int, width: int) -> Tensor:
        """Decode one image's y_hat (1, M, height, width), float64, from its rANS string."""
        decoder = RansDecoder()
        decoder.set_stream(string)
        state = self._start_coding()
        return self._code_latents(
            side, height, width,
            lambda rows, cols, params: self._decode_positions(decoder, state, params),
        )  # fmt: skip

    def _compress_latents(self, y: Tensor, side: Tensor | None) -> tuple[list[bytes], Tensor]:
        """Code a batch of y (B, M, H, W): (one rANS string per image, y_hat in y's dtype
        and on y's device)."""
        coded = [
            self._compress_ar(y[i : i + 1], None if side is None else side[i : i + 1])
            for i in range(len(y))
        ]
        y_hat = torch.cat([y_hat for _, y_hat in coded])
        return [string for string, _ in coded], y_hat.to(device=y.device, dtype=y.dtype)

    def _decompress_latents(
        self, strings: list, side: Tensor | None, height: int | None = None,
        width: int | None = None,
    ) -> Tensor:  # fmt: skip
        """Decode one string per image to y_hat (B, M, H, W) in the model's dtype, on its
        device (for g_s); the size comes from ``side`` when there is one."""
        if side is not None:
            height, width = side.shape[-2:]
        y_hat = [
            self._decompress_ar(s, None if side is None else side[i : i + 1], height, width)
            for i, s in enumerate(strings)
        ]
        weight = self.context_prediction.weight
        # one image: convert without a float64 copy of the whole latent (cat copies)
        y_hat = y_hat[0] if len(y_hat) == 1 else torch.cat(y_hat)
        return y_hat.to(device=weight.device, dtype=weight.dtype)

    # Hooks: Gaussian coding with CompressAI's scale tables by default.

    def _start_coding(self) -> dict:
        """Per-image coder state: the Gaussian tables as lists, trimmed to their lengths."""
        gc = self.gaussian_conditional
        lengths = gc.cdf_length.tolist()
        return {
            "cdfs": [row[:n] for row, n in zip(gc.quantized_cdf.tolist(), lengths)],
            "lengths": lengths,
            "offsets": gc.offset.tolist(),
            "scale_edges": gc.scale_table[:-1].to(CODING_DEVICE, CODING_DTYPE).contiguous(),
            "symbols": [],
            "indexes": [],
        }

    @staticmethod
    def _gaussian(state: dict, params: Tensor) -> tuple[Tensor, Tensor]:
        """(table indexes, snapped means) of float64 params (L, 2M)."""
        scales, means = params.chunk(2, 1)
        # index = #{s in scale_table[:-1] : s < scale}: GaussianConditional.build_indexes,
        # computed in float64 (scales below the table's first entry get index 0, as
        # after its lower bound).
        indexes = torch.bucketize(scales.contiguous(), state["scale_edges"].to(scales.device))
        return indexes, snap_to_grid(means)

    def _code_positions(self, encoder, state: dict, y: Tensor, params: Tensor) -> Tensor:
        """Queue the symbols of y (L, M) for rANS; returns their y_hat (L, M)."""
        indexes, means = self._gaussian(state, params)
        # Symbol q = round(y - mu); the decoder sees y_hat = q + mu.
        symbols = torch.round(y - means)
        state["symbols"].append(symbols.int().flatten())
        state["indexes"].append(indexes.int().flatten())
        return symbols + means

    def _finish_coding(self, encoder, state: dict) -> None:
        """Hand the queued symbols to the rANS encoder, in coding order."""
        if state["symbols"]:
            encoder.encode_with_indexes(
                torch.cat(state["symbols"]).tolist(), torch.cat(state["indexes"]).tolist(),
                state["cdfs"], state["lengths"], state["offsets"],
            )  # fmt: skip

    def _decode_positions(self, decoder, state: dict, params: Tensor) -> Tensor:
        """Decode the symbols of one group; returns their y_hat (L, M)."""
        indexes, means = self._gaussian(state, params)
        # Only the table rows this group uses cross into C++ (every call converts the
        # lists it is given; the 256-scale table holds ~4x the 64-scale one's entries);
        # each symbol keeps its own CDF, so the decoded symbols are the same.
        used, local = torch.unique(indexes.flatten(), return_inverse=True)
        rows = used.tolist()
        symbols = decoder.decode_stream(
            local.tolist(), [state["cdfs"][i] for i in rows],
            [state["lengths"][i] for i in rows], [state["offsets"][i] for i in rows],
        )
        symbols = torch.tensor(symbols, dtype=means.dtype, device=means.device)
        return symbols.reshape(means.shape) + means


# ======================================================================================
# CompressAI's models, registered under the paper keys
# ======================================================================================


def _on_coding_device(module: nn.Module) -> nn.Module:
    """``module`` itself when it is on ``CODING_DEVICE`` (nothing copied, nothing changed
    on a CPU-only machine), else a copy there: the hyperpriors' h_s and Gaussian coder,
    so that their scale indexes are the CPU's whatever device the model runs on."""
    if all(t.device == CODING_DEVICE for t in (*module.parameters(), *module.buffers())):
        return module
    return copy.deepcopy(module).to(CODING_DEVICE)


def _model_device(model: nn.Module) -> torch.device:
    """Where the model's synthesis transform runs (its decoded latents go there)."""
    return next(model.g_s.parameters()).device


register_model("bmshj2018-factorized")(FactorizedPrior)

@register_model("bmshj2018-hyperprior")
class ScaleHyperprior(_FineScaleTable, _compressai_google.ScaleHyperprior):
    """CompressAI's scale hyperprior (Ballé et al., ICLR 2018), coded with this
    project's 256-scale table (:class:`_FineScaleTable`).

    ``compress``/``decompress`` are CompressAI's with h_s, the scale indexes and the
    Gaussian coder on ``CODING_DEVICE`` (the CPU) whatever the model's device, so a
    file written with the model on a GPU decodes on the CPU and vice versa.
    """

    @torch.no_grad()
    def compress(self, x: Tensor) -> dict:
        """Encode images to ``{"strings": [y_strings, z_strings], "shape": z size}``."""
        y = self.g_a(x)
        z = self.h_a(torch.abs(y))
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        scales_hat = _on_coding_device(self.h_s)(z_hat.to(CODING_DEVICE))
        gc = _on_coding_device(self.gaussian_conditional)
        y_strings = gc.compress(y.to(CODING_DEVICE), gc.build_indexes(scales_hat))
        return {"strings": [y_strings, z_strings], "shape": z.size()[-2:]}

    @torch.no_grad()
    def decompress(self, strings: list, shape) -> dict:
        """Decode ``compress``'s output to ``{"x_hat"}`` (clamped to [0, 1])."""
        if not (isinstance(strings, list) and len(strings) == 2):
            raise ValueError("expected strings = [y_strings, z_strings] from compress()")
        z_hat = self.entropy_bottleneck.decompress(strings[1], shape)
        scales_hat = _on_coding_device(self.h_s)(z_hat.to(CODING_DEVICE))
        gc = _on_coding_device(self.gaussian_conditional)
        y_hat = gc.decompress(strings[0], gc.build_indexes(scales_hat), z_hat.dtype)
        return {"x_hat": self.g_s(y_hat.to(_model_device(self))).clamp_(0, 1)}


@register_model("mbt2018-mean")
class MeanScaleHyperprior(_FineScaleTable, _TiledTransforms,
                          _compressai_google.MeanScaleHyperprior):
    """CompressAI's mean-scale hyperprior (Minnen et al. 2018, the paper's "hyperprior"
    with means), coded with this project's 256-scale table (:class:`_FineScaleTable`).

    ``compress``/``decompress`` are CompressAI's with every transform applied in tiles on
    the deterministic GEMM path (:class:`_TiledTransforms`): memory bounded by a tile,
    and h_s gives the decoder the encoder's scales and means bit for bit whatever the
    thread counts of the two sides (oneDNN's float32 h_s does not promise that). h_s,
    the scale indexes and the Gaussian coder run on ``CODING_DEVICE`` (the CPU) whatever
    the model's device, so a file written on a GPU decodes on the CPU and vice versa.
    """

    def _coder_parameters(self, z_hat: Tensor):
        """(Gaussian coder, scale indexes, means) on ``CODING_DEVICE`` from z_hat."""
        scales_hat, means_hat = self._tiled(_on_coding_device(self.h_s), z_hat.to(CODING_DEVICE)).chunk(2, 1)
        gc = _on_coding_device(self.gaussian_conditional)
        return gc, gc.build_indexes(scales_hat), means_hat

    @torch.no_grad()
    def compress(self, x: Tensor) -> dict:
        """Encode images to ``{"strings": [y_strings, z_strings], "shape": z size}``."""
        y = self._analyze(x)
        z = self._tiled(self.h_a, y)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        gc, indexes, means_hat = self._coder_parameters(z_hat)
        y_strings = gc.compress(y.to(CODING_DEVICE), indexes, means=means_hat)
        return {"strings": [y_strings, z_strings], "shape": z.size()[-2:]}

    @torch.no_grad()
    def decompress(self, strings: list, shape) -> dict:
        """Decode ``compress``'s output to ``{"x_hat"}`` (clamped to [0, 1])."""
        if not (isinstance(strings, list) and len(strings) == 2):
            raise ValueError("expected strings = [y_strings, z_strings] from compress()")
        z_hat = self.entropy_bottleneck.decompress(strings[1], shape)
        gc, indexes, means_hat = self._coder_parameters(z_hat)
        y_hat = gc.decompress(strings[0], indexes, means=means_hat)
        del means_hat, indexes
        return {"x_hat": self.synthesize(y_hat.to(_model_device(self)))}


@register_model("mbt2018")
class JointAutoregressiveHierarchicalPriors(
    _FineScaleTable, _SerialContextCoding, _compressai_google.JointAutoregressiveHierarchicalPriors
):
    r"""Joint autoregressive and hierarchical priors (Minnen, Ballé, Toderici, NeurIPS 2018).

    CompressAI's ``JointAutoregressiveHierarchicalPriors`` (same layers and keys, so
    the zoo's weights load) with the context model's size a constructor argument; its
    coder is rewritten here for any odd size, wavefront-parallel and deterministic
    (see ``_SerialContextCoding``; ``coding_order = "raster"`` for the serial order).

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
        y_strings, y_hat = self._compress_latents(y, self._hyper_features(z_hat))
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
        y_hat = self._decompress_latents(strings[0], self._hyper_features(z_hat))
        return {"x_hat": self.synthesize(y_hat)}


# ======================================================================================
# Context-only ablation
# ======================================================================================


@register_model("mbt2018-context")
class ContextOnlyPrior(_FineScaleTable, _SerialContextCoding, CompressionModel):
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
        y_strings, y_hat = self._compress_latents(y, None)
        out = {"strings": [y_strings], "shape": y.size()[-2:]}
        return {**out, "y_hat": y_hat} if return_y_hat else out

    @torch.no_grad()
    def decompress(self, strings: list, shape) -> dict:
        """Decode ``compress``'s output to ``{"x_hat"}`` (clamped to [0, 1]).

        The y strings must have been written in ``self.coding_order``.
        """
        if not (isinstance(strings, list) and len(strings) == 1):
            raise ValueError("expected strings = [y_strings] from compress()")
        y_hat = self._decompress_latents(strings[0], None, *shape)
        return {"x_hat": self.synthesize(y_hat)}


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
    see the same latents. Coding goes wavefront by wavefront (as ``mbt2018``) with
    per-symbol tables from :func:`mixture_quantized_cdfs` (written here) and
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
        """Coder tables of a group's symbols, position-major then channel, from float64
        params (L, 3KM) snapped to ``PARAMETER_GRID`` (see ``_SerialContextCoding``)."""
        L = params.shape[0]
        # (L, K*M) component-major per position -> (K, L*M), symbol l*M + m.
        scales, means, weights = (
            p.reshape(L, self.K, -1).transpose(0, 1).reshape(self.K, -1)
            for p in self._mixture(snap_to_grid(params))
        )
        return mixture_quantized_cdfs(weights, means, scales)

    def _start_coding(self) -> dict:
        return {}

    def _code_positions(self, encoder, state: dict, y: Tensor, params: Tensor) -> Tensor:
        """Code the symbols round(y) of y (L, M) with per-symbol mixture tables."""
        cdfs, lengths, offsets = self._position_tables(params)
        symbols = torch.round(y)
        encoder.encode_with_indexes(
            symbols.int().flatten().tolist(), list(range(len(cdfs))), cdfs, lengths, offsets
        )
        return symbols

    def _finish_coding(self, encoder, state: dict) -> None:
        pass

    def _decode_positions(self, decoder, state: dict, params: Tensor) -> Tensor:
        """Decode one group's symbols (L, M); y_hat = the symbols."""
        cdfs, lengths, offsets = self._position_tables(params)
        symbols = decoder.decode_stream(list(range(len(cdfs))), cdfs, lengths, offsets)
        return torch.tensor(symbols, dtype=params.dtype, device=params.device).reshape(
            params.shape[0], -1
        )


# ======================================================================================
# Checkerboard ablation
# ======================================================================================


@register_model("mbt2018-checkerboard")
class JointCheckerboardPrior(_FineScaleTable, SimpleVAECompressionModel):
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
