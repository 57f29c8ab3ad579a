"""How much a latent of a given width can hold: the PCA bound and the autoencoder ceiling.

A learned codec with M latent channels at stride 16 keeps M numbers for every 16×16×3 =
768 pixel values. Two measurements say what that width allows, before any entropy model:

- :func:`pca_bound` — the best *linear* code of that size: PCA on the image set's own
  16×16×3 blocks, keeping K components. With λ_1 ≥ λ_2 ≥ … the eigenvalues of the blocks'
  covariance (mean removed),

      MSE(K) = Σ_{i>K} λ_i / 768,        PSNR(K) = 10 log10(255² / MSE(K)).

  A learned transform is non-linear and may beat it, but on Kodak the M = 96 models
  flattened right at PCA(96) (issue 25).
- :func:`autoencoder_ceiling` — the trained model's own ceiling: PSNR of g_s(g_a(x)) with
  the gain units of a rate level and *no rounding*. Quantization and the entropy model can
  only lose from there, so no amount of entropy-model training lifts a curve above it.

Notebook 01 draws both against M; ``benchmarks/width_study.py`` measures them per width.
:func:`part_shapes` gives the table of section 1 there: what shape each part of a model
takes and gives, and its parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from nic_lib import metrics
from nic_lib.models import variable_rate

__all__ = ["pca_bound", "autoencoder_ceiling", "part_shapes", "PARTS"]

#: The parts of the mbt2018 family (a model has the ones it uses: the factorized prior only
#: g_a and g_s).
PARTS = ("g_a", "h_a", "h_s", "context_prediction", "entropy_parameters", "g_s")


def pca_bound(images: Iterable[np.ndarray], k_values: Sequence[int], block: int = 16
              ) -> pd.DataFrame:
    """PSNR of the best K-term linear code of the images' block×block×3 blocks.

    Args:
        images: HxWx3 uint8 arrays (e.g. ``[img for _, img in data.load_images("kodak")]``);
            each is cut into non-overlapping blocks, the border that does not fill a block
            is dropped.
        k_values: numbers of components K to report (each at most block²·3).
        block: block side in pixels (16: the stride of mbt2018's latent).

    Returns:
        One row per K: ``K``, ``fraction`` (K / block²·3), ``psnr_pca`` (dB, the mean
        over images of each image's PSNR, the convention of Kodak RD curves) and
        ``psnr_pca_pooled`` (dB, of the MSE pooled over all blocks). One basis for all
        images: the eigenvectors of the pooled covariance.

    Raises:
        ValueError: no complete block, or a K outside 1..block²·3.
    """
    blocks = []
    for img in images:
        h, w = (s // block * block for s in img.shape[:2])
        if h and w:
            b = img[:h, :w].reshape(h // block, block, w // block, block, 3).swapaxes(1, 2)
            blocks.append(b.reshape(-1, block * block * 3).astype(np.float64))
    if not blocks:
        raise ValueError(f"no complete {block}x{block} block in the images")
    X = np.concatenate(blocks)
    dims = X.shape[1]
    bad = [k for k in k_values if not 1 <= k <= dims]
    if bad:
        raise ValueError(f"K must be in 1..{dims} for {block}x{block}x3 blocks, got {bad}")
    mean = X.mean(0)
    eig, vec = np.linalg.eigh((X - mean).T @ (X - mean) / len(X))
    vec = vec[:, np.argsort(eig)[::-1]]
    # per image: the energy its blocks put on each principal direction, so that its MSE
    # with K components is the energy left on directions K+1, ..., 768
    energy = [((b - mean) @ vec) ** 2 for b in blocks]
    per_image = np.stack([e.sum(0) / e.size for e in energy])  # (images, dims), / (n·768)
    pooled = sum(e.sum(0) for e in energy) / X.size
    rows = []
    for k in k_values:
        mse_i = np.maximum(per_image[:, k:].sum(1), 1e-12)
        rows.append({"K": int(k), "fraction": k / dims,
                     "psnr_pca": float(np.mean(10 * np.log10(255.0**2 / mse_i))),
                     "psnr_pca_pooled": float(10 * np.log10(255.0**2 / max(pooled[k:].sum(), 1e-12)))})
    return pd.DataFrame(rows)


@torch.no_grad()
def autoencoder_ceiling(model: torch.nn.Module, images: Iterable[tuple[str, np.ndarray]],
                        level: int | None = None) -> float:
    """Mean PSNR of g_s(g_a(x) ⊙ γ_l ⊙ γ'_l) with no rounding: no entropy model can lift a
    curve above it.

    Args:
        model: a registry model (``analysis``, ``synthesis``: variable-rate, the gains of
            its level).
        images: ``(name, HxWx3 uint8)`` pairs, as ``data.load_images`` gives them; sides
            are cropped to a multiple of 64 (mbt2018's total downsampling).
        level: the rate level whose gains to use (variable-rate models); default: the
            level the model is set to (``set_rate_level``; a fresh model: its top one).

    Returns:
        Mean PSNR in dB over the images, of the reconstruction rounded to 8 bits.
    """
    if level is not None:
        variable_rate.set_rate_level(model, level)
    was_training = model.training
    model.eval()
    psnrs = []
    for _, img in images:
        h, w = (s // 64 * 64 for s in img.shape[:2])
        img = np.array(img[:h, :w])  # a writable copy: torch refuses read-only arrays
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255)
        # x̂ = g_s(g_a(x) ⊙ γ_l ⊙ γ'_l): the gains of the level, no rounding
        x_hat = model.synthesis(model.analysis(x)).clamp(0, 1)
        out = (x_hat[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        psnrs.append(metrics.psnr(img, out))
    model.train(was_training)
    return float(np.mean(psnrs))


@torch.no_grad()
def part_shapes(model: torch.nn.Module, height: int = 512, width: int = 768) -> pd.DataFrame:
    """The input and output shape and the parameter count of each part of a model.

    Traced on one random image of ``height`` x ``width`` through the model's ``forward``:
    a hook on each part records the first call's shapes and is removed after the pass.

    Args:
        model: a model of the mbt2018 family (its parts named as in :data:`PARTS`).
        height, width: the traced image's size (default: a landscape Kodak image).

    Returns:
        One row per part the model has, in the order the forward pass first calls them:
        ``part``, ``input`` and ``output`` (channels, height, width), ``parameters``.
    """
    rows, hooks = [], []
    for name in (n for n in PARTS if hasattr(model, n)):
        module = getattr(model, name)
        hooks.append(module.register_forward_hook(
            lambda m, args, out, name=name: rows.append(
                {"part": name, "input": tuple(args[0].shape[1:]), "output": tuple(out.shape[1:]),
                 "parameters": sum(p.numel() for p in m.parameters())})))
    try:
        model(torch.rand(1, 3, height, width))
    finally:
        for hook in hooks:
            hook.remove()
    return pd.DataFrame(rows, columns=["part", "input", "output", "parameters"]).drop_duplicates("part")
