"""Learned image codecs: one module per paper family, one registry for all.

- ``google``: the mbt2018 family (Minnen, Ballé, Toderici 2018) and its ablations
  (factorized, hyperprior, mean-scale, context-only, joint, GMM, checkerboard).
- ``registry``: paper keys, quality -> (N, M) / lambda tables, the "cpu" and "full"
  profiles, checkpoint saving and loading.

Typical use::

    from nic_lib.models import get_model
    model = get_model("mbt2018", quality=3, profile="cpu")   # this project's weights
    out = model.compress(x)                                  # {"strings", "shape"}
    x_hat = model.decompress(out["strings"], out["shape"])["x_hat"]
"""

from .registry import (
    CPU_PROFILE_WIDTHS,
    FULL_WIDTHS,
    LAMBDA_MSE,
    MODELS,
    CheckpointError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    PretrainedWeightsUnavailableError,
    available_models,
    build_model,
    checkpoint_dir,
    checkpoint_path,
    default_config,
    get_model,
    load_checkpoint,
    model_name,
    register_model,
    save_checkpoint,
    widths,
)

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

__all__ = [
    "CPU_PROFILE_WIDTHS",
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "ContextOnlyPrior",
    "FULL_WIDTHS",
    "FactorizedPrior",
    "JointAutoregressiveHierarchicalPriors",
    "JointCheckerboardPrior",
    "JointGaussianMixturePrior",
    "LAMBDA_MSE",
    "MODELS",
    "MeanScaleHyperprior",
    "PretrainedWeightsUnavailableError",
    "ScaleHyperprior",
    "available_models",
    "build_model",
    "checkpoint_dir",
    "checkpoint_path",
    "default_config",
    "get_model",
    "google",
    "load_checkpoint",
    "model_name",
    "register_model",
    "save_checkpoint",
    "widths",
]
