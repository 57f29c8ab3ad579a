"""Magnitude pruning of a trained codec's convolution kernels, masks fixed while fine-tuning.

OOD-NIC compares dense and pruned codecs under distribution shift. A pruned codec here is
a trained model whose smallest-magnitude kernel weights are set to zero, then fine-tuned
with those zeros held (``python -m nic_lib.train --init-from n96.pt --prune 0.5``):

1. :func:`magnitude_masks`: over every prunable kernel together (global pruning), keep the
   weights whose magnitude is above the ``sparsity`` quantile of all their magnitudes:

       mask_l = |W_l| > t,   t = the k-th smallest of {|w| : w in W_1 ∪ ... ∪ W_L},
       k = round(sparsity · Σ_l |W_l|)

   Global rather than per-layer: a fixed fraction per layer would take as much from the
   3-channel first layer of g_a and the last of g_s (few weights, each one carrying a
   whole colour channel) as from the wide middle layers; a global threshold lets the
   trained magnitudes decide, and keeps the rule one line (Han et al. 2015, "Learning both
   weights and connections"; Blalock et al. 2020 found global magnitude pruning at least
   as good as per-layer at the same sparsity). The per-layer sparsities it lands on are
   reported (:func:`sparsity_report`), in the run's ``config.json`` under
   ``resolved.pruning``.
2. :func:`apply_masks` after every optimizer step (and :func:`mask_gradients` before the
   gradient is clipped, so the clip sees the live network): the pruned weights stay
   exactly zero, and so does their EMA (an average of zeros).

Which kernels: the convolutions and transposed convolutions of the transforms and the
hyper-transforms (``g_a``, ``g_s``, ``h_a``, ``h_s``, and their copies inside CompressAI's
latent codecs), which hold nearly all of a codec's weights. Not pruned: biases, GDN, the
gain units, the entropy models' densities, and the context and entropy-parameter networks
(the masked context convolution's own mask would count its structural zeros as pruned).

Nothing is attached to the model (no ``torch.nn.utils.prune`` re-parametrisation, no
hooks): the masks are plain tensors the training loop holds, so a pruned model's state
dict is a dense one with zeros, it saves and loads with
:func:`nic_lib.models.save_checkpoint` / :func:`~nic_lib.models.load_checkpoint` and codes
with the normal coder. A resumed run recovers its masks from the zeros
(:func:`masks_from_zeros`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "PRUNED_MODULES",
    "apply_masks",
    "magnitude_masks",
    "mask_gradients",
    "masks_from_zeros",
    "prunable_kernels",
    "sparsity_report",
]

#: Module-name parts whose convolution kernels are pruned: the analysis and synthesis
#: transforms and the hyper-transforms, at the top level (mbt2018 family) or inside a
#: latent codec (checkerboard, ELIC: ``latent_codec.hyper.h_a.0``).
PRUNED_MODULES = ("g_a", "g_s", "h_a", "h_s")


def prunable_kernels(model: nn.Module) -> dict[str, nn.Parameter]:
    """The convolution kernels :func:`magnitude_masks` prunes, by state-dict name.

    Args:
        model: a codec.

    Returns:
        ``{"g_a.0.weight": parameter, ...}``: the ``weight`` of every ``Conv2d`` /
        ``ConvTranspose2d`` under a module named in :data:`PRUNED_MODULES`, in module order.
    """
    kernels = {}
    for name, module in model.named_modules():
        parts = name.split(".")
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and any(
                p in PRUNED_MODULES for p in parts):
            kernels[f"{name}.weight"] = module.weight
    return kernels


@torch.no_grad()
def magnitude_masks(model: nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    """Global magnitude masks: zero the ``sparsity`` fraction of smallest prunable weights.

    Args:
        model: a trained codec (its weights decide; nothing is changed).
        sparsity: fraction of the prunable weights to remove, in [0, 1).

    Returns:
        ``{kernel name: bool mask}`` (True = kept), one per :func:`prunable_kernels` entry;
        exactly ``round(sparsity · total)`` weights are False (ties at the threshold are
        broken by position, so the count is exact).

    Raises:
        ValueError: sparsity outside [0, 1), or a model without prunable kernels.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity {sparsity}: give a fraction in [0, 1), e.g. --prune 0.5")
    kernels = prunable_kernels(model)
    if not kernels:
        raise ValueError(f"{type(model).__name__} has no convolution under "
                         f"{', '.join(PRUNED_MODULES)}: nothing to prune")
    magnitudes = torch.cat([w.detach().abs().flatten().float().cpu() for w in kernels.values()])
    # k = round(sparsity · Σ_l |W_l|): the k smallest magnitudes over all layers go
    k = int(round(sparsity * magnitudes.numel()))
    keep = torch.ones(magnitudes.numel(), dtype=torch.bool)
    if k:
        keep[torch.argsort(magnitudes, stable=True)[:k]] = False
    masks, start = {}, 0
    for name, w in kernels.items():
        masks[name] = keep[start:start + w.numel()].view(w.shape).to(w.device)
        start += w.numel()
    return masks


@torch.no_grad()
def masks_from_zeros(model: nn.Module) -> dict[str, torch.Tensor]:
    """The masks of an already pruned model: a prunable weight is kept where it is non-zero.

    A resumed run's masks (the optimizer never revives a masked weight, so the zeros of its
    checkpoint are exactly the pruned set, up to trained weights that are exactly 0.0).

    Args:
        model: a codec whose prunable kernels hold the pruned zeros.

    Returns:
        ``{kernel name: bool mask}`` as :func:`magnitude_masks`.
    """
    return {name: w.detach() != 0 for name, w in prunable_kernels(model).items()}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the pruned weights in place (after every optimizer step).

    Args:
        model: the codec the masks were made for.
        masks: :func:`magnitude_masks`' output.

    Raises:
        KeyError: a mask names a kernel the model lacks.
    """
    kernels = prunable_kernels(model)
    for name, mask in masks.items():
        kernels[name].mul_(mask.to(kernels[name].dtype))


@torch.no_grad()
def mask_gradients(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the gradients of pruned weights (before gradient clipping measures the norm)."""
    kernels = prunable_kernels(model)
    for name, mask in masks.items():
        if kernels[name].grad is not None:
            kernels[name].grad.mul_(mask.to(kernels[name].grad.dtype))


@torch.no_grad()
def sparsity_report(model: nn.Module) -> dict:
    """Fraction of zero weights per prunable kernel and over all of them.

    Args:
        model: a codec.

    Returns:
        ``{"sparsity": zeros / weights over every prunable kernel, "weights": their count,
        "layers": {kernel name: its zero fraction}}`` (fractions rounded to 4 digits).
    """
    kernels = prunable_kernels(model)
    zeros = {n: int((w == 0).sum()) for n, w in kernels.items()}
    total = sum(w.numel() for w in kernels.values())
    return {"sparsity": round(sum(zeros.values()) / max(total, 1), 4), "weights": total,
            "layers": {n: round(zeros[n] / w.numel(), 4) for n, w in kernels.items()}}


def check_sparsity(sparsity: float) -> float:
    """``--prune``'s value, checked: a fraction in (0, 1).

    Raises:
        ValueError: outside (0, 1); the message names the flag.
    """
    if not (isinstance(sparsity, (int, float)) and 0.0 < sparsity < 1.0) or math.isnan(sparsity):
        raise ValueError(f"--prune {sparsity}: give the fraction of kernel weights to zero, "
                         "in (0, 1), e.g. --prune 0.5")
    return float(sparsity)
