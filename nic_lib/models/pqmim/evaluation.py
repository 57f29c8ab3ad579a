r"""PQ-MIM's rate points and one image end to end: tables of rates and quality.

:func:`quantizer_table` (rate and codebook size of each (M, K) choice, no model),
:func:`code_image` (compress and decompress one uint8 image, measuring the real, MIM,
independent-prior and fixed-length rates), :func:`rate_table` (one tidy row per
image x model x hybrid setting) and :func:`code_to_budget` (the most schedule steps that
fit a byte budget, the rest completed by the MIM model: the extreme regime).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from nic_lib import metrics
from nic_lib import coding  # the learned codecs' image -> bits path (not .coding: the rANS side)
from nic_lib.coding import from_tensor, pad_to, to_tensor

from .autoencoder import DOWNSAMPLING
from .coding import HYBRID_SEED, HYBRID_TEMPERATURE, estimate_bits, fixed_length_bits
from .model import PQMIM
from .schedule import DEFAULT_STEPS


def quantizer_table(latent_dim: int, Ms, Ks) -> list[dict]:
    """Rate and codebook size of each (M, K) choice for a latent of dimension D.

    Args:
        latent_dim: D.
        Ms: numbers of sub-quantizers (divisors of D).
        Ks: codebook sizes.

    Returns:
        Rows ``{"M", "K", "kind", "bits_per_position" (M log2 K), "bpp_fixed"
        (÷ 16²), "codebook_vectors" (M·K entries of D/M), "codebook_floats" (K·D),
        "log2_vq_entries" (one VQ codebook reaching the same rate: K^M entries)}``.
    """
    rows = []
    for M in Ms:
        if latent_dim % M:
            continue
        for K in Ks:
            kind = "VQ" if M == 1 else ("scalar" if M == latent_dim else "PQ")
            bits = M * math.log2(K)
            rows.append({"M": M, "K": K, "kind": kind, "bits_per_position": bits,
                         "bpp_fixed": bits / DOWNSAMPLING**2, "codebook_vectors": M * K,
                         "codebook_floats": K * latent_dim, "log2_vq_entries": bits})
    return rows


@torch.no_grad()
def code_image(model: PQMIM, img: np.ndarray, steps: int = DEFAULT_STEPS,
               transmit_steps: int | None = None, temperature: float = HYBRID_TEMPERATURE,
               seed: int = HYBRID_SEED, radius: int | None = None) -> dict:
    """Compress and decompress one uint8 image, measuring the three rates.

    Args:
        model: PQ-MIM in eval mode.
        img: uint8 (H, W, 3).
        steps, transmit_steps: schedule and hybrid mode (see :func:`encode_codes`).
        temperature, seed: sampler of generated steps (hybrid mode).
        radius: attention radius (default the model's tuned ``attention_radius``).

    Returns:
        ``{"bytes", "bpp" (real stream incl. header), "bpp_est" (Σ −log2 P of MIM),
        "bpp_independent", "bpp_fixed", "bits_per_step", "radius", "x_hat" (uint8), "exact"
        (decoded codes == encoded codes, for full transmission)}``.
    """
    h, w = img.shape[:2]
    # the learned codecs' one path (nic_lib.coding): replicate padding to the model's
    # factor, bpp = 8 · bytes of the streams / H·W, the coder's own estimate beside it
    out = coding.encode(model, img, steps=steps, transmit_steps=transmit_steps, radius=radius)
    dec = model.decompress(out["strings"], temperature=temperature, seed=seed)
    n_bytes = out["bits"] // 8
    codes = out["coded"]["codes"]
    pixels = h * w
    return {"bytes": n_bytes, "bpp": out["bpp"], "bpp_est": out["bpp_est"],
            "bpp_independent": estimate_bits(model.independent_prior().cpu(), codes.cpu()) / pixels,
            "bpp_fixed": fixed_length_bits(codes, model.K) / pixels,
            "bits_per_step": out["coded"]["bits_per_step"],
            "radius": out["coded"]["radius"],
            "x_hat": from_tensor(dec["x_hat"][..., :h, :w].cpu()),
            "exact": bool(torch.equal(dec["codes"], codes))}


#: Columns of :func:`rate_table`.
RATE_COLUMNS = ("image", "codec", "setting", "steps", "transmit_steps", "radius", "bytes", "bpp",
                "bpp_est", "bpp_independent", "bpp_fixed", "psnr_rgb", "ms_ssim", "exact")


def rate_table(models: dict[str, PQMIM], images, steps: int = DEFAULT_STEPS,
               transmit_steps=(None,), temperature: float = HYBRID_TEMPERATURE,
               radius: int | None = None) -> pd.DataFrame:
    """Code every image with every model (and every hybrid setting); one tidy row each.

    Args:
        models: ``{label: model}``; the label is the ``codec`` column.
        images: ``(name, uint8 (H, W, 3))`` pairs.
        steps: S.
        transmit_steps: values of s to run (None = all S steps, lossless code transmission).
        temperature: sampler of generated steps.
        radius: attention radius of every model (default: each model's tuned one).

    Returns:
        DataFrame with :data:`RATE_COLUMNS` (``setting`` = transmitted steps, S when all).
    """
    rows = []
    for label, model in models.items():
        for s in transmit_steps:
            for name, img in images:
                r = code_image(model, img, steps, s, temperature, radius=radius)
                rows.append({
                    "image": name, "codec": label, "setting": steps if s is None else s,
                    "steps": steps, "transmit_steps": steps if s is None else s,
                    **{k: r[k] for k in ("radius", "bytes", "bpp", "bpp_est", "bpp_independent",
                                         "bpp_fixed")},
                    "psnr_rgb": metrics.psnr(img, r["x_hat"]),
                    "ms_ssim": (metrics.ms_ssim(img, r["x_hat"])
                                if min(img.shape[:2]) >= metrics.MS_SSIM_MIN_SIDE
                                else float("nan")),
                    "exact": r["exact"]})
    return pd.DataFrame(rows, columns=list(RATE_COLUMNS))


#: Completions drawn by :func:`code_to_budget`: the argmax (temperature 0, one answer) and
#: this many seeded samples at the model's own temperature (1), to show how much of the
#: picture the transmitted codes pin down and how much the MIM model invents.
BUDGET_SAMPLES = 2


@torch.no_grad()
def code_to_budget(model: PQMIM, img: np.ndarray, max_bytes: int, steps: int = DEFAULT_STEPS,
                   samples: int = BUDGET_SAMPLES, radius: int | None = None) -> dict:
    """Code one image in at most ``max_bytes`` by transmitting fewer schedule steps (hybrid mode).

    The stream of the first s of S steps grows with s (each step adds codes, none removes
    any), so the largest s whose stream fits is found by counting down from a guess made
    from one full encode's bits per step (a few encodes in all); the decoder
    completes the codes of the other S − s steps with the MIM model, without retraining.
    The transmitted codes are the same for every
    completion, only the generated ones differ.

    Args:
        model: PQ-MIM in eval mode.
        img: uint8 (H, W, 3).
        max_bytes: byte budget of the whole stream (its 7-byte header included).
        steps: S.
        samples: seeded samples at temperature 1 (seeds 0..samples-1) besides the argmax.
        radius: attention radius (default the model's tuned one).

    Returns:
        ``{"transmit_steps" (s, 0 when not even one step fits), "bytes", "bpp", "fits"
        (bytes <= max_bytes), "completions": [{"completion" ("argmax" or "sample k"),
        "temperature", "seed", "x_hat" (uint8), "psnr_rgb"}]}``. When no s fits, s = 1 is
        coded (the smallest stream this model can send) and ``fits`` is False.

    Raises:
        ValueError: if ``max_bytes`` is not positive.
    """
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes!r}")
    h, w = img.shape[:2]
    x = pad_to(to_tensor(img), DOWNSAMPLING).to(next(model.parameters()).device)
    # one full encode gives every step's bits; the stream of s steps is ~ its header plus
    # ⌈Σ_{t<=s} bits_t / 8⌉, so counting down starts one step above that guess (the rANS
    # coder's few bytes of flush may push the guess over; the count-down then moves on)
    full = model.compress(x, steps, None, radius)
    cumulative = np.cumsum(full["bits_per_step"])
    guess = int(np.searchsorted(cumulative / 8.0, max_bytes, side="right"))
    for s in range(min(steps, guess + 1), 0, -1):
        out = full if s == steps else model.compress(x, steps, s, radius)
        n_bytes = len(out["strings"][0][0])
        if n_bytes <= max_bytes:
            break
    completions = []
    for name, temperature, seed in [("argmax", 0.0, HYBRID_SEED),
                                    *((f"sample {k}", HYBRID_TEMPERATURE, k) for k in range(samples))]:
        x_hat = from_tensor(model.decompress(out["strings"], temperature=temperature, seed=seed)["x_hat"][..., :h, :w].cpu())
        completions.append({"completion": name, "temperature": temperature, "seed": seed,
                            "x_hat": x_hat, "psnr_rgb": metrics.psnr(img, x_hat)})
    fits = n_bytes <= max_bytes
    return {"transmit_steps": s if fits else 0, "bytes": n_bytes, "bpp": 8.0 * n_bytes / (h * w),
            "fits": fits, "completions": completions}
