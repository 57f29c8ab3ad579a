"""CompressAI's entropy models with this project's two training options as explicit settings.

Every model of :mod:`nic_lib.models.google` codes with these classes. Each is CompressAI's
class (same parameters, buffers and state-dict keys, so every checkpoint loads unchanged)
plus settings that are plain attributes, not in the state dict, and off by default:

- ``noise`` (every class here): where the uniform noise u ~ U(−½, ½) that stands in for
  rounding in training comes from. None: CompressAI's own draw
  (``torch.empty_like(x).uniform_(-½, ½)`` from the global generator, the whole batch at
  once). Otherwise a :class:`NoiseSource`, e.g. ``nic_lib.training.SampleKeyedNoise``
  (``--noise sample``), whose noise of each image depends only on (seed, step, image).
- ``tail_gradient`` (:class:`GaussianConditional`): the likelihood keeps the gradient of
  its exact log beyond CompressAI's likelihood floor (``--tail-gradient``; the equations
  are in :meth:`GaussianConditional._likelihood`).

:func:`set_noise` and :func:`set_tail_gradient` set them on every entropy model of a model.
Written here because CompressAI has no setting for either.
"""

from __future__ import annotations

from typing import Protocol

import torch
from compressai import entropy_models as _compressai
from compressai import latent_codecs as _codecs
from torch import Tensor, nn

__all__ = [
    "CheckerboardLatentCodec",
    "EntropyBottleneck",
    "GaussianConditional",
    "GaussianMixtureConditional",
    "NoiseSource",
    "own_entropy_models",
    "set_noise",
    "set_tail_gradient",
]


class NoiseSource(Protocol):
    """Where training noise comes from (the ``noise`` setting)."""

    def noise_like(self, x: Tensor, batch_dim: int) -> Tensor | None:
        """u ~ U(−½, ½) shaped as ``x`` (images along ``batch_dim``), or None for
        CompressAI's own draw."""


class _Noise:
    """The ``noise`` setting of an entropy model (mixed in before CompressAI's class)."""

    #: The training noise's source; None: CompressAI's draw.
    noise: NoiseSource | None = None
    #: Dimension of the images in the tensors ``quantize`` sees: EntropyBottleneck
    #: quantizes a (C, 1, N·H·W) view of (C, N, H, W), the others (N, C, H, W).
    _batch_dim: int = 0

    def quantize(self, inputs: Tensor, mode: str, means: Tensor | None = None) -> Tensor:
        """CompressAI's ``quantize``, with ``"noise"`` mode taking u from ``noise``:
        ``inputs + u``."""
        if mode == "noise" and self.noise is not None:
            u = self.noise.noise_like(inputs, self._batch_dim)
            if u is not None:
                return inputs + u
        return super().quantize(inputs, mode, means)


class EntropyBottleneck(_Noise, _compressai.EntropyBottleneck):
    """CompressAI's ``EntropyBottleneck`` (factorized density) with the ``noise`` setting."""

    _batch_dim = 1


class GaussianConditional(_Noise, _compressai.GaussianConditional):
    r"""CompressAI's ``GaussianConditional`` with the ``noise`` and ``tail_gradient`` settings.

    ``tail_gradient`` (off by default). CompressAI's likelihood of a quantized latent ŷ
    under N(μ, σ²),

        p(ŷ) = Φ(a) − Φ(b) ,  a = (½ − |ŷ − μ|)/σ ,  b = (−½ − |ŷ − μ|)/σ ,

    is clamped below at 1e-9 (29.9 bits). A latent far in the tail (|ŷ − μ| ≳ 6σ) has
    p below the floor, and there its gradient all but vanishes (measured ~1e-6 of the
    exact one): Φ's tail underflows in float32, and the floor is a constant. Training can
    then never learn to widen σ for it; such latents stay overconfident however long the
    model trains (measured on the scale hyperprior by ``benchmarks/hyperprior_tails.py``:
    ~1% of its latents at quality 6, 13σ out at the median). With the setting on, the
    value is CompressAI's (so the estimated bits are unchanged) with the gradient of the
    exact log-likelihood, computed in log space where the tail does not underflow,

        log p = log Φ(a) + log(1 − exp(log Φ(b) − log Φ(a))) ,
        p̃ = p                                  if p > floor
        p̃ = floor · exp(log p − sg[log p])     otherwise  (value: floor; gradient: floor · ∇log p)

    so −log2 p̃ pulls σ (and μ) toward the outlier with the force of its true cost.
    """

    #: Give the likelihood its exact gradient beyond the floor (training only).
    tail_gradient: bool = False

    def _likelihood(self, inputs: Tensor, scales: Tensor, means: Tensor | None = None) -> Tensor:
        if not self.tail_gradient:
            return super()._likelihood(inputs, scales, means)
        values = (inputs - means if means is not None else inputs).abs()
        scales = self.lower_bound_scale(scales)
        log_upper = torch.special.log_ndtr((0.5 - values) / scales)
        log_lower = torch.special.log_ndtr((-0.5 - values) / scales)
        # log(Φ(a) − Φ(b)) = log Φ(a) + log(−expm1(log Φ(b) − log Φ(a)))
        log_p = log_upper + torch.log(-torch.expm1(log_lower - log_upper).clamp(max=-1e-30))
        floor = self.likelihood_lower_bound.bound.to(log_p.dtype)
        below = floor * torch.exp(log_p - log_p.detach())
        return torch.where(log_p > torch.log(floor), torch.exp(log_p), below)


class GaussianMixtureConditional(_Noise, _compressai.GaussianMixtureConditional):
    """CompressAI's ``GaussianMixtureConditional`` with the ``noise`` setting (its
    likelihood is CompressAI's: ``tail_gradient`` does not apply to mixtures)."""


class CheckerboardLatentCodec(_codecs.CheckerboardLatentCodec):
    """CompressAI's ``CheckerboardLatentCodec`` with the ``noise`` setting: it quantizes y
    itself (``EntropyModel.quantize(None, ...)``), not through an entropy model."""

    #: The training noise's source; None: CompressAI's draw.
    noise: NoiseSource | None = None

    def quantize(self, y: Tensor) -> Tensor:
        """``y + u`` in training (u from ``noise``), else CompressAI's ``quantize``."""
        if self.training and self.noise is not None:
            u = self.noise.noise_like(y, 0)
            if u is not None:
                return y + u
        return super().quantize(y)


def own_entropy_models(model: nn.Module) -> nn.Module:
    """Replace the CompressAI entropy models a CompressAI constructor built by these classes.

    Same settings and parameters: the new module loads the old one's state dict. Its
    constructor runs with the global random generator forked, so the generator's stream
    is the one CompressAI's constructor left (a seeded model's initial weights are
    unchanged). Nested modules are replaced too (ELIC's entropy models sit inside
    CompressAI's latent codecs); a CompressAI ``CheckerboardLatentCodec`` becomes this
    module's subclass in place (it holds no state of its own to copy).

    Args:
        model: a model whose modules may be CompressAI's ``EntropyBottleneck``,
            ``GaussianConditional`` or ``CheckerboardLatentCodec``.

    Returns:
        The model.
    """
    for parent in list(model.modules()):
        if type(parent) is _codecs.CheckerboardLatentCodec:
            parent.__class__ = CheckerboardLatentCodec
        for name, module in list(parent.named_children()):
            if type(module) is _compressai.EntropyBottleneck:
                with torch.random.fork_rng(devices=[]):  # its random init is overwritten below
                    ours = EntropyBottleneck(module.channels, tail_mass=module.tail_mass,
                                             init_scale=module.init_scale, filters=module.filters)
            elif type(module) is _compressai.GaussianConditional:
                ours = GaussianConditional(None, tail_mass=module.tail_mass)
            else:
                continue
            ours.load_state_dict(module.state_dict())
            setattr(parent, name, ours)  # the same key: the state dict's order is kept
    return model


def set_noise(model: nn.Module, source: NoiseSource | None) -> int:
    """Set the ``noise`` setting of every entropy model and latent codec of ``model``.

    Args:
        model: a model of :mod:`nic_lib.models.google`.
        source: the noise source, or None for CompressAI's draw.

    Returns:
        How many modules were set.

    Raises:
        ValueError: the model holds a CompressAI entropy model without the setting.
    """
    count = 0
    for module in model.modules():
        if isinstance(module, (_Noise, CheckerboardLatentCodec)):
            module.noise = source
            count += 1
        elif isinstance(module, (_compressai.EntropyModel, _codecs.CheckerboardLatentCodec)):
            raise ValueError(f"{type(module).__name__} is CompressAI's own class: build the model "
                             "with nic_lib.models.build_model, whose entropy models have a "
                             "noise setting (nic_lib.models.entropy_models)")
    return count


def set_tail_gradient(model: nn.Module, on: bool = True) -> int:
    """Set ``tail_gradient`` on every (non-mixture) Gaussian conditional of ``model``.

    Returns:
        How many modules were set.

    Raises:
        ValueError: the model has none (on=True).
    """
    modules = [m for m in model.modules() if isinstance(m, GaussianConditional)]
    if on and not modules:
        raise ValueError(f"--tail-gradient: {type(model).__name__} has no Gaussian conditional "
                         "(it applies to the hyperprior, mean-scale, context and joint models)")
    for module in modules:
        module.tail_gradient = bool(on)
    return len(modules)
