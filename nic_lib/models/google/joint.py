"""The context models: mbt2018 (hyperprior + k x k context, CompressAI's class) and its
ablations written here, context-only (``mbt2018-context``) and the Gaussian mixture
(``mbt2018-gmm``). Part of :mod:`nic_lib.models.google`.
"""

from __future__ import annotations

import torch
from compressai.models import google as _compressai_google
from compressai.models.base import CompressionModel
from torch import Tensor

from .. import entropy_models
from ..context_coding import (
    CODING_DEVICE,
    CODING_DTYPE,
    DEFAULT_CONTEXT_SIZE,
    check_context_size,
    coding_copy,
)
from ..mixture import MixtureSymbols, mixture_parameters
from ..registry import register_model
from .blocks import (
    DEFAULT_M,
    DEFAULT_MIXTURE_COMPONENTS,
    DEFAULT_N,
    _FineScaleTable,
    analysis_transform,
    context_model,
    entropy_parameters_network,
    synthesis_transform,
)
from .transforms import _ContextModel


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
