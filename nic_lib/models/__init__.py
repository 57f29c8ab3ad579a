"""Learned image codecs: one module per paper family, one registry for all.

- ``google``: the mbt2018 family (Minnen, Ballé, Toderici 2018) and its ablations
  (factorized, hyperprior, mean-scale, context-only, joint, GMM, checkerboard).
- ``elic``: ELIC (He et al. 2022), CompressAI's architecture in this contract.
- ``context_coding``: the context models' coder (wavefront schedule, float64 parameter
  path); ``mixture``: the GMM's per-symbol tables. The models hand them their modules.
- ``registry``: paper keys, quality -> (N, M) / lambda tables, the "cpu" and "full"
  profiles, ``build_model``.
- ``checkpoints``: ``save_checkpoint`` / ``load_checkpoint``, one self-describing format.
- ``pqmim``: PQ-MIM (El-Nouby et al. 2023), registered as ``"pqmim"``; one checkpoint per
  rate point (M, K), named ``pqmim-M4-K256`` by :func:`~nic_lib.models.hub.get_model`.
- ``hub``: ``get_model``, the "cpu" profile's checkpoints or CompressAI's zoo (``zoo``).

Typical use::

    from nic_lib.models import get_model
    model = get_model("mbt2018", quality=3, profile="cpu")   # this project's weights
    out = model.compress(x)                                  # {"strings", "shape"}
    x_hat = model.decompress(out["strings"], out["shape"])["x_hat"]
"""

from . import checkpoints, hub, registry
from .checkpoints import *  # noqa: F403  checkpoints.__all__
from .hub import *  # noqa: F403  hub.__all__
from .registry import *  # noqa: F403  registry.__all__
from .zoo import PretrainedWeightsUnavailableError, ZooHashMismatchError

# Importing the model modules registers their classes in MODELS.
from . import google  # noqa: E402  isort: skip
from .google import (  # noqa: E402
    ContextOnlyPrior,
    FactorizedPrior,
    JointAutoregressiveHierarchicalPriors,
    JointCheckerboardPrior,
    JointGaussianMixturePrior,
    MeanScaleHyperprior,
    ScaleHyperprior,
)
from . import elic  # noqa: E402  isort: skip  (registers "elic2022")
from .elic import ELIC  # noqa: E402
from . import pqmim  # noqa: E402  isort: skip  (registers "pqmim")

#: The public names of registry, checkpoints and hub, the zoo's errors, the google module
#: and its model classes (its building blocks, e.g. ``hyper_analysis``, are reached as
#: ``nic_lib.models.google.<name>``).
__all__ = [
    *registry.__all__,
    *checkpoints.__all__,
    *hub.__all__,
    "PretrainedWeightsUnavailableError",
    "ZooHashMismatchError",
    "google",
    "elic",
    "ELIC",
    *(name for name in google.__all__ if isinstance(getattr(google, name), type)),
]
