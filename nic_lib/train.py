"""The command line of the training package :mod:`nic_lib.training`: ``python -m nic_lib.train``.

Run it from a shell (a GPU is used when present, ``--device auto``)::

    python -m nic_lib.train --model mbt2018 --quality 3 --max-steps 20000 --max-minutes 60
    python -m nic_lib.train --resume runs/mbt2018-q3-20250101-120000        # continue a run
    torchrun --nproc_per_node=2 -m nic_lib.train --model mbt2018 --quality 3  # DDP

or from Python: ``train(TrainConfig(model="mbt2018", quality=3, max_steps=2000))``. Every
public name of :mod:`nic_lib.training` is importable from here too (``from nic_lib import
train; train.TrainConfig``).

What one step does (CompressAI's convention, ``compressai.losses.RateDistortionLoss``)::

    x  ── model ──► x_hat, likelihoods {y, z}     (uniform noise stands in for rounding)
    bpp = Σ_k Σ_i −log2 p_k,i / (N·H·W)             rate of every latent k, per pixel
    L   = λ·255²·MSE(x_hat, x) + bpp                --metric mse    (x on the 0..1 scale)
    L   = λ·(1 − MS-SSIM(x_hat, x)) + bpp           --metric ms-ssim
    Adam on L for every parameter except the factorized densities' ``quantiles``;
    a second Adam on model.aux_loss() for the quantiles (CompressAI's example).

A run folder (default ``runs/<model>-q<quality>-<timestamp>/`` beside the repository;
``runs/`` is git-ignored, ``$NIC_RUNS_DIR`` moves it) receives, each file written atomically
or line by line:

- ``config.json``: the full configuration and what it resolved to (λ, widths, devices,
  number of training images).
- ``log.csv``: one row per ``--log-every`` steps: step, wall_s, lr, loss, mse (0..255
  scale), psnr, bpp, aux_loss, images_per_s (means over the rows' interval).
- ``eval.csv``: every ``--eval-every`` steps, PSNR and bpp (from the likelihoods) on a few
  Kodak images; with ``--ema`` each evaluation is written twice, ``weights`` = ``model``
  (the trained weights) and ``ema`` (their average), so the EMA lever is measured in the
  same run. Evaluating on Kodak is allowed; training on it is not (see
  :func:`training_files`).
- ``ckpt.pt``: everything needed to resume bit-for-bit (config, model, both optimizers,
  schedule, EMA, step, RNG states, log accumulators).
- ``final.pt``: the trained model (the EMA copy when ``--ema`` is on) in the model
  registry's checkpoint format.

Speed on a CPU-only machine comes from: decoding the training set once into a uint8 pool
(:mod:`nic_lib.training.data`) and cropping from memory in a background thread instead of
decoding files in data-loader processes that compete with the model for the cores;
channels-last tensors; libgomp's default wait policy (see the note on OpenMP below).
``benchmarks/train_throughput.py`` measures the effect against CompressAI's example loop.
``--compile`` (torch.compile) is off by default: on this project's 2-core CPU it compiled
for about a minute and then ran ~15% faster, worth it only for runs of thousands of steps.

``--data-filter blur:SIGMA`` / ``noise:SIGMA`` trains on spectrally altered crops (each crop
blurred, or with Gaussian noise added, after cropping; :func:`filter_crops`); the evaluation
images stay as they are.

Reproducibility: the data order and the crops are a pure function of (seed, step), and
with ``--noise sample`` (default) the uniform quantization noise of each training image is
a pure function of (seed, step, index in the global batch). A run is therefore identical
when resumed from any checkpoint and (up to float rounding) whatever the number of DDP
ranks sharing the global batch.
"""

from __future__ import annotations

import os

# OpenMP wait policy: measured on this project's idle 2-core machine (mbt2018 N=64 M=96,
# 128 crops, batch 8), libgomp's default (spin, then sleep) trains at 54 img/s and
# OMP_WAIT_POLICY=PASSIVE (sleep at once) at 35 img/s, so the default is kept. On a machine
# whose cores are shared with other busy jobs, spinning threads whose partner was
# descheduled waste their slices (2-3x slower measured there): then start training with
# OMP_WAIT_POLICY=PASSIVE in the environment (it must be set before torch is imported).

import argparse
from pathlib import Path

import torch.distributed as dist

from nic_lib.training import *  # noqa: F403 (the package's public names, listed in its __all__)
from nic_lib.training import PRECISIONS, TrainConfig, train
from nic_lib.training import __all__ as _package_names

__all__ = [*_package_names, "main"]


def _parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m nic_lib.train", argument_default=argparse.SUPPRESS,
        description="Train a learned image compression model (see the module docstring).")
    a = p.add_argument
    a("--model", help=f"registry key (default {d.model})")
    a("--quality", type=int, help=f"quality 1..8: λ and widths (default {d.quality})")
    a("--profile", help=f"registry profile cpu|full (default {d.profile})")
    a("--N", type=int, help="override the width N (main transforms)")
    a("--M", type=int, help="override the width M (latent channels)")
    a("--lmbda", type=float, help="override λ (default: quality table)")
    a("--qualities", type=int, nargs="+", help="variable-rate model: one level per quality "
      "(λ from the table), trained cyclically (default: fixed rate)")
    a("--context-size", type=int, help="k of the k x k context model (3, 5, 7; default: "
      "the model's)")
    a("--reference-lmbda", type=float, help="variable rate: λ whose gain starts at 1 "
      "(default: geometric mean; use the warm-start model's λ)")
    a("--init-from", help="warm start from a final.pt / ckpt.pt (matching tensors copied)")
    a("--init-only", nargs="+", help="copy only these modules from --init-from (e.g. "
      "g_a g_s gain inverse_gain: the transforms, with a fresh entropy model)")
    a("--start-step", type=int, help="a warm start that continues a schedule: the step "
      "counter (learning-rate schedule, data stream, --max-steps) begins here, with a fresh "
      "warm-up to the schedule's rate (e.g. a shipped snapshot's step, when its run folder "
      "is gone; default 0)")
    a("--freeze", nargs="+", help="keep these modules at their --init-from values "
      "(e.g. g_a g_s gain inverse_gain: train only the entropy model)")
    a("--prefit-densities", type=int, help="before training, fit a variable-rate model's "
      "per-level densities and their quantiles (factorized prior; hyperprior with "
      "--per-level-hyper-density) for this many steps on latents of the "
      "warm-started transforms (see prefit_densities; default 0 = off)")
    a("--per-level-hyper-density", action=argparse.BooleanOptionalAction,
      help="variable rate, hyperprior models: one density of the hyper-latents z per level "
      "instead of one shared by all (start them with --prefit-densities; default off)")
    a("--tail-gradient", action=argparse.BooleanOptionalAction,
      help="Gaussian models: the rate term keeps its gradient for latents beyond the "
      "likelihood floor (see tail_gradient; values unchanged; default off)")
    a("--prune", type=float, help="prune the --init-from model: zero this fraction of the "
      "transforms' kernel weights by global magnitude and keep them zero while training "
      "(nic_lib.pruning; e.g. 0.5; default off)")
    a("--metric", choices=["mse", "ms-ssim"], help=f"distortion (default {d.metric})")
    a("--data", nargs="+", help=f"datasets or folders to train on (default {' '.join(d.data)})")
    a("--data-filter", help="alter every training crop after cropping: blur:SIGMA (Gaussian "
      "blur, σ in px) or noise:SIGMA (added Gaussian noise, σ in grey levels 0-255, rounded "
      "and clipped); a function of (seed, step) like the crops; evaluation images are never "
      "filtered (default off)")
    a("--crop", type=int, help=f"crop side in px (default {d.crop})")
    a("--batch-size", type=int, help=f"global batch over all ranks (default {d.batch_size})")
    a("--lr", type=float, help=f"peak learning rate (default {d.lr})")
    a("--aux-lr", type=float, help=f"aux (quantiles) learning rate (default {d.aux_lr})")
    a("--lr-schedule", choices=["cosine", "step", "constant"],
      help="after warm-up (default cosine)")
    a("--schedule-clock", choices=["steps", "time"], help="schedule progress by steps, or by "
      "max(steps, elapsed / --max-minutes) (default steps)")
    a("--warmup-steps", type=int, help=f"linear warm-up steps (default {d.warmup_steps})")
    a("--lr-decay-steps", type=int, help="schedule horizon (default --max-steps)")
    a("--min-lr-ratio", type=float, help=f"cosine floor / lr (default {d.min_lr_ratio})")
    a("--lr-milestones", type=float, nargs="+", help="step decay at these fractions of the "
      f"horizon (default {' '.join(map(str, d.lr_milestones))})")
    a("--lr-gamma", type=float, help=f"step decay factor (default {d.lr_gamma})")
    a("--clip-grad-norm", type=float, help=f"0 disables (default {d.clip_grad_norm})")
    a("--ema", type=float, help="EMA decay of the weights, e.g. 0.999 (default off)")
    a("--noise", choices=["sample", "global"], help="quantization noise: keyed by sample "
      "(reproducible across world sizes) or torch's global generator (default sample)")
    a("--seed", type=int, help=f"seeds init, data order, crops, noise (default {d.seed})")
    a("--max-steps", type=int, help=f"stop after this step (default {d.max_steps})")
    a("--max-minutes", type=float, help="stop after this wall-clock budget (default none)")
    a("--log-every", type=int, help=f"CSV row interval (default {d.log_every})")
    a("--ckpt-every", type=int,
      help=f"ckpt.pt interval, 0 = only at the end (default {d.ckpt_every})")
    a("--eval-every", type=int, help=f"Kodak evaluation interval, 0 = off (default {d.eval_every})")
    a("--eval-images", type=int, help=f"first K Kodak images (default {d.eval_images})")
    a("--eval-crop", type=int, help=f"centre crop side, 0 = whole image (default {d.eval_crop})")
    a("--out-dir", help="run folder (default $NIC_RUNS_DIR or runs/<model>-q<q>-<time>)")
    a("--device", help="auto|cpu|cuda (default auto: a GPU when present)")
    a("--threads", type=int, help="torch CPU threads (default: cores / local ranks)")
    a("--channels-last", action=argparse.BooleanOptionalAction, help="NHWC memory (default on)")
    a("--compile", action=argparse.BooleanOptionalAction, help="torch.compile (default off)")
    a("--deterministic", action=argparse.BooleanOptionalAction,
      help="torch deterministic algorithms (default off)")
    a("--precision", choices=PRECISIONS, help="fp32, or bf16: the networks' forward under "
      "bfloat16 autocast, densities and loss in float32 (default fp32; see reduced_precision)")
    a("--progress", action=argparse.BooleanOptionalAction, help="tqdm bar (default on)")
    a("--resume", help="run folder or ckpt.pt to continue (its settings are kept)")
    return p


def main(argv: list[str] | None = None) -> Path:
    """Command-line entry point: ``python -m nic_lib.train [flags]``.

    Args:
        argv: flags without the program name; default ``sys.argv[1:]``.

    Returns:
        The run folder.
    """
    given = vars(_parser().parse_args(argv))
    for key in ("data", "lr_milestones", "qualities", "init_only", "freeze"):
        if key in given:
            given[key] = tuple(given[key])
    resume = given.pop("resume", None)
    if resume is not None:
        return train(TrainConfig(), resume=resume, overrides=given)
    return train(TrainConfig(**given))


if __name__ == "__main__":
    run = main()
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run folder: {run}")
    if dist.is_initialized():
        dist.destroy_process_group()
