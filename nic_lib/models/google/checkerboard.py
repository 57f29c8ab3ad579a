"""The checkerboard ablation (``mbt2018-checkerboard``): CompressAI's checkerboard latent
codec with the ``{"strings", "shape"}`` contract of the other models. Part of
:mod:`nic_lib.models.google`.
"""

from __future__ import annotations

import torch
from compressai.latent_codecs import GaussianConditionalLatentCodec, HyperLatentCodec, HyperpriorLatentCodec
from compressai.layers import CheckerboardMaskedConv2d
from compressai.models.base import SimpleVAECompressionModel
from torch import Tensor, nn

from .. import entropy_models
from ..context_coding import DEFAULT_CONTEXT_SIZE, check_context_size
from ..registry import register_model
from .blocks import (
    DEFAULT_CHECKERBOARD_FORWARD,
    DEFAULT_M,
    DEFAULT_N,
    Y_PER_Z,
    _FineScaleTable,
    analysis_transform,
    entropy_parameters_network,
    hyper_analysis,
    hyper_synthesis,
    synthesis_transform,
)
from .transforms import _Transforms


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
