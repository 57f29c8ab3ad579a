"""The periodic evaluation of a training run: held-out Kodak crops, PSNR and estimated bpp.

Evaluating on Kodak is allowed; training on it is not (see
:func:`nic_lib.training.data.training_files`). The model runs in eval mode (rounding, no
noise) and its rate is the likelihoods' estimate, the quantity the loss trains.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from nic_lib import data, metrics

from .config import TrainConfig

#: Where Kodak comes from for the periodic evaluation (nic_lib.data look-up order).
EVAL_DATASET = "kodak"


def load_eval_images(cfg: TrainConfig) -> list[np.ndarray]:
    """The held-out images of the periodic evaluation: centre crops of the first Kodak images.

    Args:
        cfg: uses eval_images (how many) and eval_crop (side; 0 = whole image).

    Returns:
        uint8 (H, W, 3) arrays.

    Raises:
        DatasetNotFoundError: Kodak is not found (fix: ``python -m nic_lib.data download
            kodak``, or ``--eval-every 0``).
    """
    images = []
    for path in data.list_images(EVAL_DATASET, limit=cfg.eval_images):
        img = data.load_image(path)
        if cfg.eval_crop:
            h, w = img.shape[:2]
            c = min(cfg.eval_crop, h, w)
            y, x = (h - c) // 2, (w - c) // 2
            img = img[y:y + c, x:x + c]
        images.append(img)
    return images


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: list[np.ndarray], lmbda: float, metric: str,
             device: torch.device) -> dict:
    """Mean loss, MSE, PSNR and likelihood bpp of a model (eval mode: rounding, no noise).

    Args:
        model: the model (its train/eval mode is restored afterwards).
        images: uint8 (H, W, 3) arrays; padded to the model's downsampling factor.
        lmbda, metric: as :func:`rd_loss`.
        device: where to run.

    Returns:
        ``{"images", "loss", "mse", "psnr", "bpp"}`` averaged over images (PSNR: mean of
        per-image PSNR, as the papers report).
    """
    was_training = model.training
    model.eval()
    factor = int(getattr(model, "downsampling_factor", 1))
    rows = []
    for img in images:
        h, w = img.shape[:2]
        x = torch.tensor(img).permute(2, 0, 1)[None].float().div(255).to(device)
        ph, pw = (-h) % factor, (-w) % factor
        x_pad = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
        out = model(x_pad)
        out["x_hat"] = out["x_hat"][..., :h, :w]
        # bpp of the padded latents per pixel of the original image
        bits = sum(-torch.log2(v).sum() for v in out["likelihoods"].values())
        bpp = float(bits) / (h * w)
        rec = out["x_hat"].clamp(0, 1).mul(255).round().byte()[0].permute(1, 2, 0).cpu().numpy()
        mse = metrics.mse(img, rec)
        dist = 1 - metrics.ms_ssim(img, rec) if metric == "ms-ssim" else mse
        rows.append((lmbda * dist + bpp, mse, metrics.psnr(img, rec), bpp))
    model.train(was_training)
    loss, mse, psnr, bpp = np.mean(rows, axis=0)
    return {"images": len(images), "loss": loss, "mse": mse, "psnr": psnr, "bpp": bpp}

