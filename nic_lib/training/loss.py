"""The training objective: the rate-distortion loss and the rate term's training variants.

One step minimises (CompressAI's ``RateDistortionLoss`` convention, x on the 0..1 scale)::

    bpp = Σ_k Σ_i −log2 p_k,i / (N·H·W)             rate of every latent k, per pixel
    L   = λ·255²·MSE(x_hat, x) + bpp                --metric mse
    L   = λ·(1 − MS-SSIM(x_hat, x)) + bpp           --metric ms-ssim

where the likelihoods p come from the model's entropy models on latents with uniform
noise standing in for rounding. Two training-only variants of that rate term live here,
beside the loss that consumes it:

- :class:`SampleKeyedNoise` (``--noise sample``, the default): the noise of each training
  image is a pure function of (seed, step, index in the global batch), so a run does not
  depend on how the batch is split across DDP ranks.
- :func:`tail_gradient` (``--tail-gradient``): the Gaussian likelihood keeps the gradient
  of its exact log for latents beyond CompressAI's likelihood floor.

Both replace one method of CompressAI modules on the instances of the training model (an
instance attribute, so the state dict is untouched and a saved model carries no trace).
"""

from __future__ import annotations

import types

import numpy as np
import torch
import torch.nn.functional as F
from compressai.entropy_models import EntropyBottleneck, EntropyModel, GaussianConditional
from compressai.latent_codecs import CheckerboardLatentCodec
from compressai.losses import RateDistortionLoss

#: Stream of the per-sample noise generators (an arbitrary constant, distinct from the
#: data order's and the crops' in :mod:`nic_lib.training.data`).
_NOISE_STREAM = 0x4015E


def rd_loss(out: dict, x: torch.Tensor, lmbda: float, metric: str) -> dict:
    """Rate-distortion loss of one batch (CompressAI's RateDistortionLoss convention).

    Args:
        out: model output ``{"x_hat", "likelihoods": {name: tensor}}``.
        x: the input batch on the 0..1 scale, (N, 3, H, W).
        lmbda: λ, the rate-distortion trade-off.
        metric: "mse" or "ms-ssim".

    Returns:
        ``{"loss", "bpp", "mse"}``: the loss to minimise, the estimated rate in bits per
        pixel and the MSE on the 0..255 scale (detached, for logging).
    """
    # bpp = Σ_k Σ_i −log2 p_k,i / (N·H·W)
    # mse: L = λ·255²·MSE(x_hat, x) + bpp ;  ms-ssim: L = λ·(1 − MS-SSIM(x_hat, x)) + bpp
    terms = RateDistortionLoss(lmbda=lmbda, metric=metric)(out, x)
    mse01 = terms.get("mse_loss")
    if mse01 is None:
        mse01 = F.mse_loss(out["x_hat"].detach(), x)
    # MSE on the 0..255 scale = 255² · MSE on the 0..1 scale
    return {"loss": terms["loss"], "bpp": terms["bpp_loss"], "mse": 255.0**2 * mse01.detach()}



class SampleKeyedNoise:
    """Uniform noise U(−½, ½) that depends only on (seed, step, sample, draw).

    CompressAI's entropy models add ``torch.empty_like(x).uniform_(-0.5, 0.5)`` during
    training, drawn from the process's global generator for the whole batch at once, so the
    noise a given image receives depends on how the batch is split across ranks. This class
    replaces that one line on the given model's instances (``EntropyModel.quantize`` in
    "noise" mode, and ``CheckerboardLatentCodec.quantize`` in training; other modes are
    untouched): the noise of row j of the global batch at draw d (the d-th noisy
    quantization in the forward pass) comes from its own seeded generator. Written by hand
    because CompressAI has no hook for the noise source.
    """

    def __init__(self, model: torch.nn.Module, seed: int):
        """Args:
            model: the model whose entropy models / latent codecs to patch.
            seed: run seed.
        """
        self.seed, self.step, self.rows, self.draws = seed, 0, None, 0
        self._generators: dict = {}
        for module in model.modules():
            if isinstance(module, EntropyModel):
                batch_dim = 1 if isinstance(module, EntropyBottleneck) else 0
                module.quantize = self._patched(module.quantize, batch_dim)
            elif isinstance(module, CheckerboardLatentCodec):
                # it calls EntropyModel.quantize(None, ...), bypassing the instances above
                module.quantize = self._patched_codec(module)

    @staticmethod
    def remove(model: torch.nn.Module) -> None:
        """Undo the patch on a model (or a copy of a patched model)."""
        for module in model.modules():
            module.__dict__.pop("quantize", None)

    def begin_step(self, step: int, rows: range) -> None:
        """Declare the step and which rows of the global batch this process holds."""
        self.step, self.rows, self.draws = step, list(rows), 0

    def _patched(self, original, batch_dim: int):
        def quantize(inputs, mode, means=None):
            if mode != "noise" or self.rows is None:
                return original(inputs, mode, means)
            return inputs + self._noise_like(inputs, batch_dim)
        return quantize

    def _patched_codec(self, codec):
        original = codec.quantize

        def quantize(y):
            if not codec.training or self.rows is None:
                return original(y)
            return y + self._noise_like(y, 0)
        return quantize

    def _noise_like(self, x: torch.Tensor, batch_dim: int) -> torch.Tensor:
        draw, self.draws = self.draws, self.draws + 1
        gen = self._generators.get(x.device)
        if gen is None:
            gen = self._generators[x.device] = torch.Generator(device=x.device)
        n = len(self.rows)
        layout_ok = (x.shape[1] == 1 and x.shape[2] % n == 0) if batch_dim == 1 else x.shape[0] == n
        if not layout_ok:
            raise RuntimeError(f"sample-keyed noise cannot tell the batch rows of a "
                               f"{tuple(x.shape)} tensor ({n} images); train this model with "
                               "--noise global")
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # contiguous: views below
        # EntropyBottleneck quantizes a (C, 1, N·H·W) view of (C, N, H, W); others (N, C, H, W).
        view = out.reshape(x.shape[0], n, -1) if batch_dim == 1 else out.reshape(n, -1)
        for j, row in enumerate(self.rows):
            key = np.random.SeedSequence([self.seed, self.step, row, draw, _NOISE_STREAM])
            gen.manual_seed(int(key.generate_state(1)[0]))
            target = view[:, j] if batch_dim == 1 else view[j]
            # u ~ U[0, 1) - 1/2 = U[-1/2, 1/2)
            target.copy_(torch.rand(target.shape, generator=gen, device=x.device,
                                    dtype=x.dtype) - 0.5)
        return out



def tail_gradient(model: torch.nn.Module) -> int:
    """Give the Gaussian rate term a gradient beyond the likelihood floor (``--tail-gradient``).

    CompressAI's likelihood of a quantized latent ŷ under N(μ, σ²),

        p(ŷ) = Φ(a) − Φ(b) ,  a = (½ − |ŷ − μ|)/σ ,  b = (−½ − |ŷ − μ|)/σ ,

    is clamped below at 1e-9 (29.9 bits). A latent far in the tail (|ŷ − μ| ≳ 6σ) has
    p below the floor, and there its gradient all but vanishes (measured ~1e-6 of the
    exact one): Φ's tail underflows in float32, and the floor is a constant. Training can
    then never learn to widen σ for it; such latents stay overconfident however long the
    model trains (measured on the scale hyperprior by ``benchmarks/hyperprior_tails.py``:
    ~1% of its latents at quality 6, 13σ out at the median). This keeps the value
    CompressAI computes (so the estimated bits are unchanged) but gives it the gradient of
    the exact log-likelihood, computed in log space where the tail does not underflow,

        log p = log Φ(a) + log(1 − exp(log Φ(b) − log Φ(a))) ,
        p̃ = p                                  if p > floor
        p̃ = floor · exp(log p − sg[log p])     otherwise  (value: floor; gradient: floor · ∇log p)

    so −log2 p̃ pulls σ (and μ) toward the outlier with the force of its true cost.
    Patches every ``GaussianConditional`` of the model in place (an instance attribute;
    the state dict is unchanged, so a saved model carries no trace of it).

    Args:
        model: a model whose rate goes through CompressAI ``GaussianConditional`` modules.

    Returns:
        How many modules were patched.

    Raises:
        ValueError: the model has no ``GaussianConditional``.
    """
    patched = 0
    for module in model.modules():
        if isinstance(module, GaussianConditional):
            module._likelihood = types.MethodType(_tail_gradient_likelihood, module)
            patched += 1
    if not patched:
        raise ValueError(f"--tail-gradient: {type(model).__name__} has no Gaussian conditional "
                         "(it applies to the hyperprior, mean-scale, context and joint models)")
    return patched


def _tail_gradient_likelihood(self, inputs: torch.Tensor, scales: torch.Tensor,
                              means: torch.Tensor | None = None) -> torch.Tensor:
    """``GaussianConditional._likelihood`` with the tail gradient of :func:`tail_gradient`."""
    values = (inputs - means if means is not None else inputs).abs()
    scales = self.lower_bound_scale(scales)
    log_upper = torch.special.log_ndtr((0.5 - values) / scales)
    log_lower = torch.special.log_ndtr((-0.5 - values) / scales)
    # log(Φ(a) − Φ(b)) = log Φ(a) + log(−expm1(log Φ(b) − log Φ(a)))
    log_p = log_upper + torch.log(-torch.expm1(log_lower - log_upper).clamp(max=-1e-30))
    floor = self.likelihood_lower_bound.bound.to(log_p.dtype)
    below = floor * torch.exp(log_p - log_p.detach())
    return torch.where(log_p > torch.log(floor), torch.exp(log_p), below)

