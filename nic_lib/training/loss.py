"""The training objective: the rate-distortion loss and the rate term's training variants.

One step minimises (CompressAI's ``RateDistortionLoss`` convention, x on the 0..1 scale)::

    bpp = Σ_k Σ_i −log2 p_k,i / (N·H·W)             rate of every latent k, per pixel
    L   = λ·255²·MSE(x_hat, x) + bpp                --metric mse
    L   = λ·(1 − MS-SSIM(x_hat, x)) + bpp           --metric ms-ssim

where the likelihoods p come from the model's entropy models on latents with uniform
noise standing in for rounding. Two training-only variants of that rate term are settings
of the model's entropy models (:mod:`nic_lib.models.entropy_models`), switched on here:

- :class:`SampleKeyedNoise` (``--noise sample``, the default), their ``noise`` source: the
  noise of each training image is a pure function of (seed, step, index in the global
  batch), so a run does not depend on how the batch is split across DDP ranks.
- :func:`tail_gradient` (``--tail-gradient``), their ``tail_gradient`` setting: the
  Gaussian likelihood keeps the gradient of its exact log for latents beyond CompressAI's
  likelihood floor.

Neither is in the state dict, so a saved model carries no trace of them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from compressai.losses import RateDistortionLoss

from nic_lib.models import entropy_models

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
    noise a given image receives depends on how the batch is split across ranks. This
    class is the ``noise`` source of the model's entropy models and checkerboard codec
    (:mod:`nic_lib.models.entropy_models`): the noise of row j of the global batch at draw
    d (the d-th noisy quantization in the forward pass) comes from its own seeded
    generator. Before the first :meth:`begin_step` they draw CompressAI's noise.
    """

    def __init__(self, model: torch.nn.Module, seed: int):
        """Args:
            model: the model whose entropy models take their noise from this source
                (``entropy_models.set_noise``).
            seed: run seed.
        """
        self.seed, self.step, self.rows, self.draws = seed, 0, None, 0
        self._generators: dict = {}
        entropy_models.set_noise(model, self)

    def __deepcopy__(self, memo):
        # a copied model (EMA, the saved copy) shares the source, as it shares nothing
        # else of the run: :meth:`remove` it from copies that leave training
        return self

    @staticmethod
    def remove(model: torch.nn.Module) -> None:
        """Back to CompressAI's noise on a model (or a copy of one)."""
        entropy_models.set_noise(model, None)

    def begin_step(self, step: int, rows: range) -> None:
        """Declare the step and which rows of the global batch this process holds."""
        self.step, self.rows, self.draws = step, list(rows), 0

    def noise_like(self, x: torch.Tensor, batch_dim: int) -> torch.Tensor | None:
        """The noise of ``x`` (:class:`~nic_lib.models.entropy_models.NoiseSource`):
        None (CompressAI's draw) before the first :meth:`begin_step`."""
        if self.rows is None:
            return None
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

    Switches on the ``tail_gradient`` setting of every Gaussian conditional of the model
    (:class:`nic_lib.models.entropy_models.GaussianConditional`, whose docstring has the
    equations): the estimated bits are unchanged, the gradient of a latent beyond
    CompressAI's 1e-9 floor is that of its exact log-likelihood. Not in the state dict, so
    a saved model carries no trace of it.

    Args:
        model: a model of :mod:`nic_lib.models.google` with a Gaussian conditional.

    Returns:
        How many modules were set.

    Raises:
        ValueError: the model has no (non-mixture) ``GaussianConditional``.
    """
    return entropy_models.set_tail_gradient(model, True)
