"""What every model of :mod:`nic_lib.models.google` computes around its entropy model:
the transforms with the gain units explicit (``_Transforms``), tile by tile (``_TiledTransforms``),
and the context models' coding (``_ContextModel``, with :mod:`nic_lib.models.context_coding`).
"""

from __future__ import annotations

import torch
from compressai.layers import MaskedConv2d
from torch import Tensor, nn

from .. import tiling
from ..context_coding import DEFAULT_CODING_ORDER, ContextCoder, GaussianSymbols, SymbolCoder
from .blocks import SYNTHESIS_DTYPE


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
