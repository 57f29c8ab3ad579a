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

One concern a file: :mod:`~nic_lib.models.google.blocks` (the transforms, the context
model, the shared widths and the 256-scale table), :mod:`~nic_lib.models.google.transforms`
(gains, tiling and the context-model coding mixins), then the models:
:mod:`~nic_lib.models.google.hyperprior` (factorized, scale, mean-scale),
:mod:`~nic_lib.models.google.joint` (mbt2018, context-only, GMM) and
:mod:`~nic_lib.models.google.checkerboard`. Import from ``nic_lib.models.google``.
"""

from __future__ import annotations

# Re-exported for notebooks/01_mbt2018.py (google.wavefront_slope) and the notebooks' notes
# on where the coder runs (google.CODING_DEVICE).
from ..context_coding import CODING_DEVICE, wavefront_slope  # noqa: F401
from .blocks import (  # noqa: F401  (Y_PER_Z, _FineScaleTable: nic_lib.models.elic)
    DEFAULT_CHECKERBOARD_FORWARD,
    DEFAULT_M,
    DEFAULT_MIXTURE_COMPONENTS,
    DEFAULT_N,
    SYNTHESIS_DTYPE,
    Y_PER_Z,
    _FineScaleTable,
    analysis_transform,
    context_model,
    entropy_parameters_network,
    hyper_analysis,
    hyper_synthesis,
    synthesis_transform,
)
from .transforms import _ContextModel, _TiledTransforms, _Transforms  # noqa: F401
# Importing the model modules registers their classes in MODELS, in this order.
from .hyperprior import FactorizedPrior, MeanScaleHyperprior, ScaleHyperprior, _HyperpriorCoding  # noqa: F401
from .joint import ContextOnlyPrior, JointAutoregressiveHierarchicalPriors, JointGaussianMixturePrior
from .checkerboard import JointCheckerboardPrior

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
