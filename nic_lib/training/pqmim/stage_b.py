"""Stage B: the masked-image-modelling (MIM) transformer on the frozen codes of stage A::

    codes = PQ(g_a(x)) with g_a and the codebooks frozen, of every training image once
    (CodeMapSampler); each step draws windows of crop_b/16 x crop_b/16 tokens
    mask ceil(γ·L) of the L = h·w·M codes, γ = cos(π r / 2), r ~ U[0, 1)   (MaskGIT)
    L_B = Σ_masked −ln P(c | visible codes) / #masked           (nats per code)
    (mask_law "schedule": γ at the fractions where the coding schedule codes a code,
    P(γ = 1 − C_{s−1}/L) = n_s/L, and L_B the mean over crops of each crop's mean;
    see nic_lib.models.pqmim.mask_ratio)

The step also counts the codes it saw into ``model.prior_counts``: the independent prior
that the MIM model is measured against. One CSV row (:data:`LOG_B_COLUMNS`) every
``log_every`` steps, written to ``log_b.csv``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from nic_lib.models import pqmim

from ..data import ImagePool
from ..runs import CsvLog
from ..schedule import warmup_cosine
from .config import PQMIMTrainConfig, step_generator, to_input

LOG_B_COLUMNS = ("step", "wall_s", "lr", "loss", "bits_per_code", "masked_fraction",
                 "images_per_s")
#: Stage B codes JPEG training images at 3/4 size (stage A's crops see them at 1/2-3/4:
#: the downscale hides their compression artefacts; 3/4 keeps the most context).
STAGE_B_JPEG_SCALE = 0.75
#: Streams of the per-step draws (arbitrary distinct constants): masks, window positions.
MASK_STREAM = 0x3A5C
_CODE_CROP_STREAM = 0xC0DE


class CodeMapSampler:
    """Stage B's batches: random (t x t)-token windows of code maps computed once.

    The frozen g_a and product quantizer turn every training image into its code map
    (h/16, w/16, M) once, at the start of stage B (JPEG sources first downscaled by
    :data:`STAGE_B_JPEG_SCALE`); a step then only runs the MIM transformer, and its
    windows come from anywhere in any image, not from a few fixed crops. Window choice
    depends on (seed, step) alone: image i with probability proportional to its number of
    windows, offset uniform.
    """

    def __init__(self, model: pqmim.PQMIM, pool: ImagePool, crop: int, batch: int, seed: int):
        """Args:
            model: the frozen autoencoder (eval mode).
            pool: decoded training images (:func:`nic_lib.training.load_pool`).
            crop: window side in pixels (multiple of 16).
            batch: windows per step.
            seed: run seed.

        Raises:
            ValueError: no image is large enough for one window.
        """
        from PIL import Image
        from tqdm.auto import tqdm

        self.tokens, self.batch, self.seed = crop // pqmim.DOWNSAMPLING, batch, seed
        self.maps = []
        for i in tqdm(range(len(pool.names)), desc="stage B: coding the training images",
                      leave=False, mininterval=2):
            img = pool.image(i)
            if pool.downscale[i]:
                h, w = img.shape[:2]
                size = (round(w * STAGE_B_JPEG_SCALE), round(h * STAGE_B_JPEG_SCALE))
                img = np.asarray(Image.fromarray(np.ascontiguousarray(img))
                                 .resize(size, Image.Resampling.BICUBIC))
            h, w = (d // pqmim.DOWNSAMPLING * pqmim.DOWNSAMPLING for d in img.shape[:2])
            if min(h, w) < crop:
                continue
            x = to_input(np.ascontiguousarray(img[None, :h, :w]))
            self.maps.append(model.codes(x)[0].to(torch.int16))
        if not self.maps:
            raise ValueError(f"no training image holds a {crop}x{crop} window for stage B; "
                             "use a smaller --crop-b")
        self.skipped = len(pool.names) - len(self.maps)
        windows = np.array([(m.shape[0] - self.tokens + 1) * (m.shape[1] - self.tokens + 1)
                            for m in self.maps], np.float64)
        self.weights = windows / windows.sum()

    def batch_codes(self, step: int) -> torch.Tensor:
        """(batch, t, t, M) long codes of step ``step``."""
        rng = np.random.default_rng([self.seed, step, _CODE_CROP_STREAM])
        t = self.tokens
        out = []
        for i in rng.choice(len(self.maps), self.batch, p=self.weights):
            m = self.maps[i]
            y = int(rng.integers(m.shape[0] - t + 1))
            x = int(rng.integers(m.shape[1] - t + 1))
            out.append(m[y:y + t, x:x + t])
        return torch.stack(out).long()


def run_stage_b(model: pqmim.PQMIM, opt: torch.optim.Optimizer, sampler: CodeMapSampler | None,
                cfg: PQMIMTrainConfig, run_dir: Path, step: int, elapsed: dict,
                save_state: Callable[[str, int], None], progress: dict, resumed: bool) -> int:
    """Train the MIM transformer from ``step`` to ``cfg.steps_b`` (or the time cap).

    Args:
        model: the PQ-MIM model; only ``entropy_model`` (and ``prior_counts``) change.
        opt: AdamW over ``model.entropy_model``'s parameters.
        sampler: stage B's code windows (``None`` when no step is left to run).
        cfg: the run configuration.
        run_dir: the run folder (``log_b.csv``).
        step: the step to start from (0, or a resumed run's).
        elapsed: training seconds per stage; ``elapsed["b"]`` is updated.
        save_state: ``save_state("b", step)`` writes ``ckpt.pt`` (every ``ckpt_every`` steps).
        progress: updated to the last finished step (where a Ctrl-C saves).
        resumed: a resumed run keeps its log rows up to ``step``.

    Returns:
        The step it stopped at.
    """
    log = CsvLog(run_dir / "log_b.csv", LOG_B_COLUMNS, keep_until_step=step if resumed else None)
    model.eval()  # frozen autoencoder and codebooks (no EMA updates)
    model.entropy_model.train()
    params = list(model.entropy_model.parameters())
    acc = np.zeros(4)  # Σ loss, bits, masked fraction; steps
    t0 = t_mark = time.time()
    start_elapsed = elapsed["b"]
    images = 0
    lr = cfg.lr_b
    while step < cfg.steps_b:
        elapsed["b"] = start_elapsed + time.time() - t0
        if cfg.max_minutes_b is not None and elapsed["b"] > 60 * cfg.max_minutes_b:
            break
        codes = sampler.batch_codes(step)  # (B, h, w, M)
        B, h, w, _ = codes.shape
        # one masking unit per code: ceil(γ·h·w·M) of each crop's codes hidden
        masked = pqmim.random_mask(B, h * w * cfg.M, step_generator(cfg.seed, MASK_STREAM, step),
                                   law=cfg.mask_law)
        masked = masked.reshape(B, h, w, cfg.M)
        lr = warmup_cosine(step, cfg.lr_b, cfg.warmup_steps, cfg.steps_b)
        for group in opt.param_groups:
            group["lr"] = lr
        out = model.mim_loss(codes, masked, per_crop=cfg.mask_law == "schedule")
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        if cfg.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
        opt.step()
        acc += [out["loss"].item(), float(out["bits_per_code"]), float(masked.float().mean()), 1]
        # counts of the training codes: the independent prior baseline
        model.prior_counts += torch.stack([torch.bincount(codes[..., m].reshape(-1),
                                                          minlength=cfg.K)
                                           for m in range(cfg.M)]).double()
        step += 1
        progress.update(stage="b", step=step)
        images += B
        if step % cfg.log_every == 0 or step == cfg.steps_b:
            t_mark, images = _write_row(log, step, start_elapsed + time.time() - t0, lr, acc,
                                        images, t_mark)
        if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.steps_b:
            elapsed["b"] = start_elapsed + time.time() - t0
            save_state("b", step)
    if acc[-1]:
        _write_row(log, step, start_elapsed + time.time() - t0, lr, acc, images, t_mark)
    elapsed["b"] = start_elapsed + time.time() - t0
    log.close()
    model.eval()
    return step


def _write_row(log: CsvLog, step: int, wall: float, lr: float, acc: np.ndarray, images: int,
               t_mark: float) -> tuple[float, int]:
    """One row of means over the steps since the last row; resets ``acc``."""
    loss, bits, frac = acc[:3] / acc[3]
    log.write({"step": step, "wall_s": wall, "lr": lr, "loss": loss, "bits_per_code": bits,
               "masked_fraction": frac,
               "images_per_s": images / max(time.time() - t_mark, 1e-9)})
    acc[:] = 0
    return time.time(), 0
