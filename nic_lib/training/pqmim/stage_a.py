"""Stage A: the autoencoder g_a, g_s and the product quantizer, trained together::

    x ── g_a ── product quantizer (EMA codebooks, restarts) ── g_s ──► x_hat
    L_A = MSE(x_hat, x) + β‖z − sg(e)‖²          (x on the 0..1 scale)

Crops come from :class:`nic_lib.training.CropSampler` (a function of (seed, step)); the
quantizer's random draws (codebook initialisation, dead-code restarts) from
:func:`~nic_lib.training.pqmim.config.step_generator`. One CSV row (:data:`LOG_A_COLUMNS`)
every ``log_every`` steps, written to ``log_a.csv``. With ``precision="bf16"`` g_a and g_s
compute under bfloat16 autocast and everything from the quantizer on in float32
(:func:`train_step`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from nic_lib.models import pqmim

from ..data import CropSampler
from ..precision import reduced_precision
from ..runs import CsvLog
from ..schedule import warmup_cosine
from .config import DEFAULT_PRECISION, PQMIMTrainConfig, step_generator, to_input

LOG_A_COLUMNS = ("step", "wall_s", "lr", "loss", "mse", "psnr", "commitment", "perplexity",
                 "restarts", "images_per_s")
#: Stream of the quantizer's per-step generator (an arbitrary constant, distinct from stage B's).
QUANTIZER_STREAM = 0x0B0E


def run_stage_a(model: pqmim.PQMIM, opt: torch.optim.Optimizer, params: list, sampler: CropSampler,
                cfg: PQMIMTrainConfig, run_dir: Path, step: int, elapsed: dict,
                save_state: Callable[[str, int], None], progress: dict, resumed: bool,
                precision: str) -> int:
    """Train the autoencoder and quantizer from ``step`` to ``cfg.steps_a`` (or the time cap).

    Args:
        model: the PQ-MIM model (its ``entropy_model`` is not trained here).
        opt: Adam over ``params``.
        params: the autoencoder's and quantizer's parameters (clipped together).
        sampler: stage A's crops.
        cfg: the run configuration.
        run_dir: the run folder (``log_a.csv``).
        step: the step to start from (0, a resumed run's, or ``cfg.start_step`` of a run
            continued from a snapshot; the rate then ramps up again from there).
        elapsed: training seconds per stage; ``elapsed["a"]`` is updated.
        save_state: ``save_state("a", step)`` writes ``ckpt.pt`` (every ``ckpt_every`` steps).
        progress: updated to the last finished step (where a Ctrl-C saves).
        resumed: a resumed (or continued) run keeps its log rows up to ``step``.
        precision: what the training forward computes in on this machine (``cfg.precision``
            through :func:`~nic_lib.training.precision.for_this_machine`; :func:`train_step`).

    Returns:
        The step it stopped at.
    """
    log = CsvLog(run_dir / "log_a.csv", LOG_A_COLUMNS, keep_until_step=step if resumed else None)
    model.train()
    acc = np.zeros(6)  # Σ loss, mse, commitment, perplexity, restarts; steps
    t0 = t_mark = time.time()
    start_elapsed = elapsed["a"]
    images = 0
    while step < cfg.steps_a:
        elapsed["a"] = start_elapsed + time.time() - t0
        if cfg.max_minutes_a is not None and elapsed["a"] > 60 * cfg.max_minutes_a:
            break
        x = to_input(sampler.batch(step))
        lr = warmup_cosine(step, cfg.lr_a, cfg.warmup_steps, cfg.steps_a, cfg.start_step)
        for group in opt.param_groups:
            group["lr"] = lr
        out = train_step(model, opt, params, x, step_generator(cfg.seed, QUANTIZER_STREAM, step),
                         cfg.clip_grad_norm, precision)
        loss, mse = out["loss"], out["mse"]
        acc += [loss.item(), 255.0**2 * mse.item(), out["commitment_loss"].item(),
                float(out["perplexity"]), out["restarts"], 1]
        step += 1
        progress.update(stage="a", step=step)
        images += x.shape[0]
        if step % cfg.log_every == 0 or step == cfg.steps_a:
            t_mark, images = _write_row(log, step, start_elapsed + time.time() - t0, lr, acc,
                                        images, t_mark)
        if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.steps_a:
            elapsed["a"] = start_elapsed + time.time() - t0
            save_state("a", step)
    if acc[-1]:
        _write_row(log, step, start_elapsed + time.time() - t0, lr, acc, images, t_mark)
    elapsed["a"] = start_elapsed + time.time() - t0
    log.close()
    return step


def train_step(model: pqmim.PQMIM, opt: torch.optim.Optimizer, params: list, x: torch.Tensor,
               generator: torch.Generator | None, clip_grad_norm: float,
               precision: str = DEFAULT_PRECISION) -> dict:
    """One step of stage A: forward, L_A, backward, clipped Adam step.

    Under ``precision="bf16"`` g_a and g_s compute in bfloat16
    (:func:`~nic_lib.training.precision.reduced_precision`: the model's networks named in
    ``REDUCED_PRECISION_MODULES``; of PQ-MIM's, g_a and g_s) and hand float32 outputs on, so
    the product quantizer's distances, its EMA codebooks, the commitment loss and the MSE
    are computed in float32 as under ``"fp32"``; the MIM model is not in this pass.

    Args:
        model: the PQ-MIM model, in training mode.
        opt: the optimizer over ``params``.
        params: the parameters clipped together.
        x: crops (B, 3, H, W) on the 0..1 scale (:func:`.config.to_input`).
        generator: the quantizer's random draws of this step (initialisation, restarts).
        clip_grad_norm: gradient-norm clip; 0 disables it.
        precision: ``"fp32"`` or ``"bf16"``, as computed on this machine
            (:func:`~nic_lib.training.precision.for_this_machine`).

    Returns:
        The model's outputs (``x_hat``, ``codes``, ``commitment_loss``, ``perplexity``,
        ``restarts``) with ``loss`` (L_A) and ``mse`` (on the 0..1 scale).

    Raises:
        ValueError: an unknown ``precision``.
    """
    with reduced_precision(model, precision):
        out = model(x, generator=generator)
    mse = F.mse_loss(out["x_hat"], x)
    # L_A = MSE + β‖z − sg(e)‖²
    loss = mse + out["commitment_loss"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
    opt.step()
    return {**out, "loss": loss, "mse": mse}


def _write_row(log: CsvLog, step: int, wall: float, lr: float, acc: np.ndarray, images: int,
               t_mark: float) -> tuple[float, int]:
    """One row of means over the steps since the last row; resets ``acc``."""
    loss, mse, commit, perp, restarts = acc[:5] / acc[5]
    # PSNR = 10 log10(255² / MSE)
    log.write({"step": step, "wall_s": wall, "lr": lr, "loss": loss, "mse": mse,
               "psnr": 10 * math.log10(255.0**2 / mse), "commitment": commit,
               "perplexity": perp, "restarts": float(restarts),
               "images_per_s": images / max(time.time() - t_mark, 1e-9)})
    acc[:] = 0
    return time.time(), 0
