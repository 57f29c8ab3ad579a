"""CompressAI's factorized and hyperprior models, registered under the paper keys
(``bmshj2018-factorized``, ``bmshj2018-hyperprior``, ``mbt2018-mean``), with this project's
transforms, scale table and float64 coder parameters. Part of :mod:`nic_lib.models.google`.
"""

from __future__ import annotations

import torch
from compressai.models import google as _compressai_google
from torch import Tensor, nn

from .. import entropy_models
from ..context_coding import (
    CODING_DEVICE,
    CODING_DTYPE,
    coding_copy,
    on_coding_device,
    scale_edges,
    scale_indexes,
    snap_to_grid,
)
from ..registry import register_model
from .blocks import _FineScaleTable
from .transforms import _TiledTransforms


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
