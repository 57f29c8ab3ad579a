"""The mbt2018 family's building blocks: the transforms g_a, g_s, h_a, h_s, the entropy
parameters network, the masked context model, the widths and dtypes every model shares, and
``_FineScaleTable`` (the Gaussian coders' 256-scale table). Part of :mod:`nic_lib.models.google`.
"""

from __future__ import annotations

import torch
# CompressAI's classes for isinstance checks (this project's entropy models subclass them)
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.layers import GDN, MaskedConv2d
from compressai.models.utils import conv, deconv
from torch import Tensor, nn

from .. import tables
from ..context_coding import DEFAULT_CONTEXT_SIZE, check_context_size


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
