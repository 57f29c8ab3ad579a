"""Variable-rate models: one network that codes at several λ, through gain units.

Training one model per rate point costs one training run per point; on this project's
2-core budget that is the difference between 6 rate points and 1. A *gain unit*
(Cui et al., "Asymmetric Gained Deep Image Compression With Continuous Rate Adaptation",
CVPR 2021) makes any model of the mbt2018 family variable-rate with 2·L·M extra numbers:

    y   = g_a(x)                       (the model's analysis transform, unchanged)
    y_l = y ⊙ γ_l                      (gain: one positive factor per channel and level l)
    ŷ_l = Q(y_l)                       (the model's own entropy model and coder, unchanged)
    x̂   = g_s(ŷ_l ⊙ γ'_l)              (inverse gain, then the synthesis transform)

Rounding ``y ⊙ γ`` to integers is a uniform quantizer of ``y`` with step ``Δ = 1/γ``
per channel, so the gain sets the rate: a small γ (large step) is a low rate. The
entropy model sees ``y_l`` and learns the level-dependent scales through the hyperprior
(``h_a`` reads ``y_l``), as in Cui et al.; the context model reads ``ŷ_l``.

Initialisation. At high rate, uniform quantization gives D ≈ Δ²/12 per latent and
R ≈ h − log2 Δ bits; minimising D + R/λ' over Δ gives Δ² ∝ 1/λ, so

    γ_l = (λ_l / λ_ref)^½ ,   γ'_l = 1/γ_l

which is exact for a model trained at the single rate λ_ref (warm start) and a good
start otherwise. Both are then learned (stored as logarithms, so they stay positive).

Training samples one level per step (:func:`level_for_step`, cyclic) and uses that
level's λ in the loss; evaluation and coding pick a level with :func:`set_rate_level`.
The factorized-prior model has no hyperprior to carry the level to its entropy model,
so it gets one entropy bottleneck per level (:class:`LeveledEntropyBottleneck`):
sharing one learned density across levels would code every level with the mixture of
all of them. The hyperprior models code their hyper-latents ``z`` with one factorized
density too; ``per_level_hyper_density=True`` gives them one per level as well (the
hyper-latents of the highest level can lie far outside a density shared with the lowest;
measured on the scale hyperprior by ``benchmarks/hyperprior_tails.py``).

The gain units live on the model as ``model.gain`` and ``model.inverse_gain`` (state-dict
keys ``gain.log_gain`` and ``inverse_gain.log_gain``, each (L, M)), and the model applies
them itself: every model of :mod:`nic_lib.models.google` computes ``y = g_a(x) ⊙ γ_l``
(``analysis``) and ``x̂ = g_s(ŷ ⊙ γ'_l)`` (``synthesis``) in its ``forward``, ``compress``
and ``decompress``, with gains of 1 when it holds no gain units. Every state-dict key of
the fixed-rate model is unchanged, so a fixed-rate checkpoint warm-starts a variable-rate
model by loading with ``strict=False``. The current level is state of the units
(``GainUnit.level``, ``LeveledEntropyBottleneck.level``), set together by
:func:`set_rate_level`; it is not saved (a loaded model starts at its top level).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from compressai.entropy_models import EntropyBottleneck  # isinstance: also this project's

from . import entropy_models
from torch import Tensor, nn

__all__ = [
    "GainUnit",
    "LeveledEntropyBottleneck",
    "is_variable_rate",
    "level_for_step",
    "make_variable_rate",
    "rate_levels",
    "set_rate_level",
]


class GainUnit(nn.Module):
    """Per-level, per-channel positive gains: ``y ↦ y ⊙ exp(log_gain[level])``.

    Args:
        channels: channels of the latent it multiplies (M).
        lmbdas: λ of each level, in level order.
        reference_lmbda: the λ whose gain is 1 (e.g. that of a warm-start model).
        inverse: True for the decoder-side unit (initialised to the reciprocal gains).
    """

    def __init__(self, channels: int, lmbdas: Sequence[float], reference_lmbda: float,
                 inverse: bool = False):
        super().__init__()
        if not lmbdas or any(lm <= 0 for lm in lmbdas) or reference_lmbda <= 0:
            raise ValueError(f"λ values must be positive, got {list(lmbdas)} and "
                             f"reference {reference_lmbda}")
        sign = -1.0 if inverse else 1.0
        # log γ_l = ½ log(λ_l / λ_ref)   (γ' = 1/γ for the inverse unit)
        init = torch.tensor([sign * 0.5 * math.log(lm / reference_lmbda) for lm in lmbdas])
        self.log_gain = nn.Parameter(init[:, None].repeat(1, channels).float())
        self.level = len(lmbdas) - 1

    @property
    def levels(self) -> int:
        """Number of levels."""
        return self.log_gain.shape[0]

    def gain(self) -> Tensor:
        """The gains of the current level, shaped (1, M, 1, 1) for broadcasting."""
        return self.log_gain[self.level].exp().view(1, -1, 1, 1)

    def forward(self, y: Tensor) -> Tensor:
        """``y ⊙ γ_level``, in y's dtype."""
        return y * self.gain().to(y.dtype)


class LeveledEntropyBottleneck(nn.Module):
    """One :class:`~compressai.entropy_models.EntropyBottleneck` per rate level.

    Stands in for a model's ``entropy_bottleneck`` and forwards ``forward``,
    ``compress`` and ``decompress`` to the bottleneck of the current level. The inner
    bottlenecks are ordinary submodules, so CompressAI's ``update()`` and ``aux_loss()``
    (which walk ``named_modules``) build and train every one of them.

    Args:
        channels: channels of the latent.
        levels: number of rate levels.
    """

    def __init__(self, channels: int, levels: int):
        super().__init__()
        self.bottlenecks = nn.ModuleList(entropy_models.EntropyBottleneck(channels)
                                         for _ in range(levels))
        self.level = levels - 1

    def _current(self) -> EntropyBottleneck:
        return self.bottlenecks[self.level]

    def forward(self, *args, **kwargs):
        """``EntropyBottleneck.forward`` of the current level."""
        return self._current()(*args, **kwargs)

    def compress(self, *args, **kwargs):
        """``EntropyBottleneck.compress`` of the current level."""
        return self._current().compress(*args, **kwargs)

    def decompress(self, *args, **kwargs):
        """``EntropyBottleneck.decompress`` of the current level."""
        return self._current().decompress(*args, **kwargs)


def default_reference_lmbda(lmbdas: Sequence[float]) -> float:
    """The λ whose gain starts at 1 when none is given: the levels' geometric mean.

    The middle of the range on a log scale, so the initial gains spread symmetrically,

        λ_ref = exp( (1/L) Σ_l log λ_l ) .

    Args:
        lmbdas: λ of each level (positive).

    Returns:
        λ_ref.
    """
    return math.exp(sum(math.log(v) for v in lmbdas) / len(lmbdas))


def make_variable_rate(model: nn.Module, lmbdas: Sequence[float],
                       reference_lmbda: float | None = None,
                       per_level_hyper_density: bool = False) -> nn.Module:
    """Turn a model of the mbt2018 family into a variable-rate model, in place.

    Args:
        model: a model of :mod:`nic_lib.models.google` (every registered model): one whose
            ``forward``/``compress``/``decompress`` apply ``model.gain`` and
            ``model.inverse_gain`` when present (``apply_gain``), with ``g_a``, ``g_s``, ``M``.
        lmbdas: λ of each level, in level order (e.g. the quality table's λ for q1..q6).
        reference_lmbda: λ whose gain starts at 1; default the geometric mean of
            ``lmbdas``. Use the λ of a fixed-rate model you warm-start from.
        per_level_hyper_density: also give a hyperprior model (one with ``h_a``) one
            density of its hyper-latents ``z`` per level instead of one shared by all.

    Returns:
        The same model, with ``gain``, ``inverse_gain`` (and, for the factorized prior,
        a :class:`LeveledEntropyBottleneck`), ``lmbdas`` and ``reference_lmbda`` set,
        at the highest level.

    Raises:
        ValueError: the model lacks ``g_a``/``g_s``/``M`` or does not apply gains (e.g.
            CompressAI's own classes: fold the gains into their weights instead), is already variable-rate,
            λ values are not positive, or ``per_level_hyper_density`` is asked of a model
            without a hyperprior density.
    """
    if is_variable_rate(model):
        raise ValueError("the model is already variable-rate")
    if not all(hasattr(model, k) for k in ("g_a", "g_s", "M")):
        raise ValueError(f"{type(model).__name__} has no g_a/g_s/M: gain units need a "
                         "model of the mbt2018 family")
    if not (callable(getattr(model, "apply_gain", None))
            and callable(getattr(model, "apply_inverse_gain", None))):
        raise ValueError(f"{type(model).__name__} does not apply gain units (no apply_gain): "
                         "build it with nic_lib.models.build_model, whose classes do")
    lmbdas = [float(v) for v in lmbdas]
    if reference_lmbda is None:
        reference_lmbda = default_reference_lmbda(lmbdas)
    model.gain = GainUnit(model.M, lmbdas, reference_lmbda)
    model.inverse_gain = GainUnit(model.M, lmbdas, reference_lmbda, inverse=True)
    # the factorized prior codes y with a fixed density: one per level
    bottleneck = getattr(model, "entropy_bottleneck", None)
    hyper = hasattr(model, "h_a")
    if per_level_hyper_density and not (hyper and isinstance(bottleneck, EntropyBottleneck)):
        raise ValueError(f"per_level_hyper_density: {type(model).__name__} has no hyperprior "
                         "density (h_a and entropy_bottleneck); drop the option for this model")
    if isinstance(bottleneck, EntropyBottleneck) and (
            per_level_hyper_density
            or (not hyper and not hasattr(model, "gaussian_conditional"))):
        model.entropy_bottleneck = LeveledEntropyBottleneck(bottleneck.channels, len(lmbdas))
    model.lmbdas = lmbdas
    model.reference_lmbda = float(reference_lmbda)
    model.per_level_hyper_density = bool(per_level_hyper_density)
    return model


def is_variable_rate(model: nn.Module) -> bool:
    """True if :func:`make_variable_rate` was applied to the model."""
    return isinstance(getattr(model, "gain", None), GainUnit)


def rate_levels(model: nn.Module) -> list[float]:
    """λ of each level of a variable-rate model (``[]`` for a fixed-rate one)."""
    return list(getattr(model, "lmbdas", [])) if is_variable_rate(model) else []


def set_rate_level(model: nn.Module, level: int) -> nn.Module:
    """Select the rate level used by forward, compress and decompress.

    Args:
        model: a variable-rate model.
        level: 0-based level (0 = lowest λ = lowest rate).

    Returns:
        The model.

    Raises:
        ValueError: the model is not variable-rate or the level is out of range.
    """
    levels = rate_levels(model)
    if not levels:
        raise ValueError(f"{type(model).__name__} is a fixed-rate model; build it with "
                         "make_variable_rate (or a config with 'lmbdas') to select levels")
    if not 0 <= int(level) < len(levels):
        raise ValueError(f"level {level} out of range: the model has levels 0..{len(levels) - 1} "
                         f"(λ = {levels})")
    for module in model.modules():
        if isinstance(module, (GainUnit, LeveledEntropyBottleneck)):
            module.level = int(level)
    return model


def level_for_step(step: int, levels: int) -> int:
    """Training level of a step: cyclic, so every level gets every L-th step.

    Args:
        step: 0-based training step.
        levels: number of levels L.

    Returns:
        ``step mod L``.
    """
    return step % levels
