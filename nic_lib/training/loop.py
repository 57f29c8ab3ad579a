"""The one training loop of every learned compression model: :func:`train`.

What one step does: ``L = λ·255²·MSE(x_hat, x) + bpp`` (or ``λ·(1 − MS-SSIM) + bpp``,
:func:`nic_lib.training.loss.rd_loss`) minimised by Adam for every parameter except the
factorized densities' ``quantiles``, which a second Adam places with ``model.aux_loss()``
(CompressAI's example); the command line's docstring (:mod:`nic_lib.train`) draws it.

:func:`train` prepares a run (:mod:`nic_lib.training.prepare`), then the steps share one
:class:`_Run`: the model and its optimizers, the crop sampler, the clock, the log
accumulators and the run folder. Its methods are the four things the loop does:
:meth:`_Run.train_step`, :meth:`_Run.write_log`, :meth:`_Run.run_eval` and
:meth:`_Run.save_state`.

Reproducibility: the data order and the crops are a pure function of (seed, step), and
with ``--noise sample`` (default) the quantization noise of each training image is a pure
function of (seed, step, index in the global batch), so a resumed run is identical to an
uninterrupted one, whatever the number of DDP ranks (up to float rounding).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from nic_lib import fileio, pruning
from nic_lib.models import variable_rate

from .config import TrainConfig, check_config, rate_lambda, rate_lambdas
from .data import CropSampler
from .evaluation import evaluate, load_eval_images
from .loss import SampleKeyedNoise, rd_loss, tail_gradient
from .precision import for_this_machine, reduced_precision
from .prepare import (Optimizers, resolve_config, restore, run_folder, seeded_model,
                      set_compute, setup_distributed, shared_pool, wrap_model)
from .recipes import PREFIT_CROPS, prefit_densities, warm_start
from .runs import EVAL_COLUMNS, LOG_COLUMNS, TRAIN_STATE_FORMAT, CsvLog, rng_state, save_final
from .schedule import learning_rate


def train(cfg: TrainConfig, resume: str | os.PathLike | None = None,
          overrides: dict | None = None) -> Path:
    """Train a model; returns its run folder (see :mod:`nic_lib.training.runs` for its files).

    Args:
        cfg: the configuration (ignored when resuming, except ``overrides``).
        resume: a run folder or ckpt.pt to continue from; the configuration is the
            checkpoint's.
        overrides: with ``resume``, runtime settings to change (keys of RUNTIME_KEYS,
            e.g. ``{"max_steps": 40000}``).

    Returns:
        The run folder.

    Raises:
        ValueError: inconsistent settings, or overrides on resume that would change the
            maths of the run (start a new run for those).
    """
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        return _train(cfg, resume, overrides)
    finally:  # a library call leaves torch's global settings as it found them
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train(cfg: TrainConfig, resume: str | os.PathLike | None, overrides: dict | None) -> Path:
    """The body of :func:`train` (which restores torch's global settings around it)."""
    cfg, state, run_dir = resolve_config(cfg, resume, overrides)
    resuming = state is not None
    rank, world, device = setup_distributed(cfg)
    check_config(cfg, world, resuming=resuming)
    master = rank == 0
    set_compute(cfg, world, device)

    # -- model, optimizers (seeded: every rank builds the same initial weights) --
    model = seeded_model(cfg, device)
    warm = (warm_start(model, cfg.init_from, only=cfg.init_only)
            if (cfg.init_from and not resuming) else None)
    masks = None
    if cfg.prune and not resuming:
        # before the EMA copy is taken: the EMA of a pruned weight is then zero throughout
        masks = pruning.magnitude_masks(model, cfg.prune)
        pruning.apply_masks(model, masks)
    opt = Optimizers.of(model, cfg)
    ema = None
    if cfg.ema and master:
        # θ_ema ← d·θ_ema + (1 − d)·θ
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema))
    noise = SampleKeyedNoise(model, cfg.seed) if cfg.noise == "sample" else None
    if cfg.tail_gradient:
        tail_gradient(model)  # training's gradient only: values (and the EMA copy) unchanged
    start_step, elapsed0, acc = restore(state, model, opt, ema, cfg, rank, world, device)
    if cfg.prune and resuming:
        masks = pruning.masks_from_zeros(model)  # the checkpoint's zeros are the pruned set
    step_model = wrap_model(model, cfg, world, device, opt.aux_names)

    # -- data --
    pool = shared_pool(cfg, master, world)
    sampler = CropSampler(pool, cfg.crop, cfg.batch_size, cfg.seed, cfg.data_filter)
    prefit = None
    if cfg.prefit_densities and not resuming:
        # a fixed crop set of its own (another seed), the same on every rank, as filtered
        crops = CropSampler(pool, cfg.crop, PREFIT_CROPS, cfg.seed + 1, cfg.data_filter).batch(0)
        x_fit = torch.from_numpy(crops).to(device).permute(0, 3, 1, 2).float().div_(255)
        prefit = prefit_densities(model, x_fit, cfg.prefit_densities)
        if ema is not None:
            ema.module.load_state_dict(model.state_dict())
    eval_images = load_eval_images(cfg) if (cfg.eval_every and master) else []

    run_dir = run_folder(cfg, run_dir, world, master)
    lmbda, lmbdas = rate_lambda(cfg), rate_lambdas(cfg)  # lmbdas: [] unless variable-rate
    info = {"lmbda": lmbda, "N": getattr(model, "N", None), "M": getattr(model, "M", None),
            "world_size": world, "device": str(device), "threads": torch.get_num_threads(),
            "train_images": len(pool.names), "train_images_too_small": sampler.skipped,
            "torch": str(torch.__version__),
            "precision_computed": for_this_machine(cfg.precision, device.type),
            "parameters": sum(p.numel() for p in model.parameters()),
            "lmbdas": lmbdas, "warm_start": warm, "prefit_densities": prefit,
            "pruning": pruning.sparsity_report(model) if masks is not None else None}
    run = _Run(cfg=cfg, rank=rank, world=world, device=device, model=model,
               step_model=step_model, opt=opt, ema=ema, noise=noise, sampler=sampler,
               lmbda=lmbda, lmbdas=lmbdas, eval_images=eval_images, run_dir=run_dir,
               info=info, acc=acc, clock=_Clock(elapsed0), masks=masks)
    if master:
        run.open_records(keep_until_step=start_step if resuming else None)
    step = _loop(run, start_step)
    _finish(run, step)
    return run_dir


# ---------------------------------------------------------------------------------------
# A run in progress


class _Clock:
    """Wall-clock bookkeeping of a run: training time, and the current log interval.

    ``elapsed()`` counts from the run's first step over every session (``elapsed0`` is
    what earlier sessions spent); a log row's images/s divides the interval's images by
    its seconds minus those spent on evaluations and checkpoints (``paused``).
    """

    def __init__(self, elapsed0: float):
        self.elapsed0 = elapsed0
        self.start()

    def start(self) -> None:
        """Start this session's clock and the first log interval."""
        self.t0 = self.t_mark = time.time()
        self.paused, self.images = 0.0, 0  # seconds spent on evaluation/checkpoints; images

    def elapsed(self) -> float:
        """Training seconds of the run so far, every session included."""
        return self.elapsed0 + time.time() - self.t0

    @contextlib.contextmanager
    def pause(self):
        """Time spent inside the block does not count as training time of the interval."""
        t = time.time()
        try:
            yield
        finally:
            self.paused += time.time() - t

    def interval_seconds(self) -> float:
        """Training seconds since the last log row."""
        return time.time() - self.t_mark - self.paused

    def next_interval(self) -> None:
        """Start the next log interval."""
        self.t_mark, self.paused, self.images = time.time(), 0.0, 0


@dataclasses.dataclass
class _Run:
    """What the steps, log rows, evaluations and checkpoints of a run share.

    ``model`` is the unwrapped model (state dicts, aux loss, EMA, rate level);
    ``step_model`` is what the training forward calls (the model, DDP- or
    compile-wrapped). ``acc`` sums loss, mse, bpp and aux loss of the steps since the last
    log row, and counts them, on the device (no host sync per step).
    """

    cfg: TrainConfig
    rank: int
    world: int
    device: torch.device
    model: torch.nn.Module
    step_model: torch.nn.Module
    opt: Optimizers
    ema: AveragedModel | None
    noise: SampleKeyedNoise | None
    sampler: CropSampler
    lmbda: float
    lmbdas: list[float]
    eval_images: list[np.ndarray]
    run_dir: Path
    info: dict
    acc: torch.Tensor
    clock: _Clock
    log: CsvLog | None = None
    evlog: CsvLog | None = None
    bar: tqdm | None = None
    last_lr: float = 0.0
    masks: dict | None = None  # --prune: kept weights of the pruned kernels (nic_lib.pruning)

    @property
    def master(self) -> bool:
        """Rank 0 writes the run's files."""
        return self.rank == 0

    def open_records(self, keep_until_step: int | None) -> None:
        """Write config.json and open log.csv / eval.csv (rank 0; on resume, rows after
        ``keep_until_step`` are dropped: they will be logged again)."""
        fileio.atomic_write_text(self.run_dir / "config.json", json.dumps(
            {"config": dataclasses.asdict(self.cfg), "resolved": self.info}, indent=1))
        self.log = CsvLog(self.run_dir / "log.csv", LOG_COLUMNS, keep_until_step=keep_until_step)
        if self.cfg.eval_every:
            self.evlog = CsvLog(self.run_dir / "eval.csv", EVAL_COLUMNS,
                                keep_until_step=keep_until_step)

    def out_of_time(self) -> bool:
        """``--max-minutes`` is spent (rank 0's clock decides: every rank stops at one step)."""
        cfg = self.cfg
        out = cfg.max_minutes is not None and self.clock.elapsed() > 60 * cfg.max_minutes
        if self.world > 1:
            flag = torch.tensor([float(out)], device=self.device)
            dist.broadcast(flag, src=0)
            out = bool(flag.item())
        return out

    def train_step(self, step: int, crops: np.ndarray) -> None:
        """One optimisation step on this rank's crops of the global batch.

        Minimises L = R + λ·D (:func:`~nic_lib.training.loss.rd_loss`) with Adam, then the
        aux loss of the quantiles with the second Adam, then updates the EMA.
        """
        cfg, model, opt = self.cfg, self.model, self.opt
        x = torch.from_numpy(crops).to(self.device, non_blocking=True)
        # (N, H, W, 3) uint8 -> (N, 3, H, W) float in [0, 1], channels-last in memory
        x = x.permute(0, 3, 1, 2).float().div_(255)
        if not cfg.channels_last:
            x = x.contiguous()
        if self.noise is not None:
            per_rank = cfg.batch_size // self.world
            self.noise.begin_step(step, range(self.rank * per_rank, (self.rank + 1) * per_rank))

        lr = self.last_lr = learning_rate(step, cfg, self.clock.elapsed())
        for group in opt.optimizer.param_groups:
            group["lr"] = lr
        step_lmbda = self.lmbda
        if self.lmbdas:  # variable rate: this step trains one level, with its λ
            level = variable_rate.level_for_step(step, len(self.lmbdas))
            variable_rate.set_rate_level(model, level)
            step_lmbda = self.lmbdas[level]
        opt.optimizer.zero_grad(set_to_none=True)
        opt.aux_optimizer.zero_grad(set_to_none=True)
        # bf16 only where the machine computes it natively (resolved once, in info)
        with reduced_precision(model, self.info["precision_computed"], self.device.type):
            out = self.step_model(x)
        terms = rd_loss(out, x, step_lmbda, cfg.metric)
        terms["loss"].backward()
        if self.masks is not None:
            pruning.mask_gradients(model, self.masks)  # the clip measures the live network
        if cfg.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(opt.net_params, cfg.clip_grad_norm)
        opt.optimizer.step()
        if self.masks is not None:
            pruning.apply_masks(model, self.masks)  # Adam's momentum would revive them
        aux_loss = model.aux_loss()  # on the unwrapped model: no DDP sync needed
        aux_loss.backward()
        opt.aux_optimizer.step()
        if self.ema is not None:
            self.ema.update_parameters(model)

        # interval sums stay on the device: no host sync per step
        self.acc += torch.stack([terms["loss"].detach(), terms["mse"], terms["bpp"].detach(),
                                 aux_loss.detach(), torch.ones((), device=self.device)]).double()

    def write_log(self, step: int) -> None:
        """Append the log row of the interval that ends at ``step`` (means over its steps
        and ranks) and start the next interval."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # GPU work is asynchronous: wait before timing
        seconds = self.clock.interval_seconds()
        total = self.acc.clone()
        if self.world > 1:
            dist.all_reduce(total)  # sum over ranks of per-rank batch means
        if self.master and total[4] > 0:
            loss, mse, bpp, aux = (total[:4] / total[4]).tolist()  # means over steps
            # PSNR = 10 log10(255² / MSE)
            psnr = 10 * math.log10(255.0**2 / mse) if mse > 0 else float("inf")
            self.log.write({"step": step, "wall_s": self.clock.elapsed(),
                            "lr": self.last_lr, "loss": loss, "mse": mse,
                            "psnr": psnr, "bpp": bpp, "aux_loss": aux,
                            "images_per_s": self.clock.images / max(seconds, 1e-9)})
            self.bar.set_postfix(loss=f"{loss:.4g}", psnr=f"{psnr:.2f}", bpp=f"{bpp:.3f}")
        self.acc.zero_()
        self.clock.next_interval()

    def run_eval(self, step: int) -> None:
        """Evaluate the weights (and their EMA) at every rate point; one eval.csv row each."""
        with self.clock.pause():
            if not (self.master and self.eval_images):
                return
            cfg, lmbdas = self.cfg, self.lmbdas
            targets = [("model", self.model)] + (
                [("ema", self.ema.module)] if self.ema is not None else [])
            points = (list(zip(cfg.qualities, lmbdas)) if lmbdas
                      else [(cfg.quality if cfg.lmbda is None else None, self.lmbda)])
            for weights, target in targets:
                for level, (quality, lm) in enumerate(points):
                    if lmbdas:
                        variable_rate.set_rate_level(target, level)
                    r = evaluate(target, self.eval_images, lm, cfg.metric, self.device)
                    self.evlog.write({"step": step, "wall_s": self.clock.elapsed(),
                                      "quality": quality, "lmbda": lm, **r, "weights": weights})

    def save_state(self, step: int) -> None:
        """Write ckpt.pt: everything needed to resume bit for bit (every rank's RNG)."""
        with self.clock.pause():
            rng = [rng_state()]
            if self.world > 1:
                rng = [None] * self.world
                dist.all_gather_object(rng, rng_state())
            if not self.master:
                return
            cfg = self.cfg
            snapshot = {
                "format": TRAIN_STATE_FORMAT, "config": dataclasses.asdict(cfg),
                "resolved": self.info, "step": step, "elapsed_s": self.clock.elapsed(),
                "model": self.model.state_dict(), "optimizer": self.opt.optimizer.state_dict(),
                "aux_optimizer": self.opt.aux_optimizer.state_dict(),
                "scheduler": {"kind": cfg.lr_schedule,
                              "lr": learning_rate(step, cfg, self.clock.elapsed())},
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "log_acc": self.acc.cpu(), "rng": rng}
            with fileio.atomic_path(self.run_dir / "ckpt.pt") as tmp:
                torch.save(snapshot, tmp)


# ---------------------------------------------------------------------------------------
# The loop


def _loop(run: _Run, start_step: int) -> int:
    """Train from ``start_step`` until ``--max-steps`` or ``--max-minutes``; returns the step
    reached. The crops of the next step are cut in a background thread meanwhile."""
    cfg = run.cfg
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)  # crops of the next step
    next_batch = executor.submit(run.sampler.batch, start_step, run.rank, run.world)
    run.bar = tqdm(total=cfg.max_steps, initial=start_step,
                   disable=not (run.master and cfg.progress), desc=run.run_dir.name,
                   dynamic_ncols=True)
    run.clock.start()
    run.last_lr = learning_rate(start_step, cfg, run.clock.elapsed0)
    step = start_step
    try:
        while step < cfg.max_steps:
            if run.out_of_time():
                break
            crops = next_batch.result()
            if step + 1 < cfg.max_steps:
                next_batch = executor.submit(run.sampler.batch, step + 1, run.rank, run.world)
            run.train_step(step, crops)
            step += 1
            run.clock.images += cfg.batch_size
            run.bar.update(1)
            if step % cfg.log_every == 0:
                run.write_log(step)
            if cfg.eval_every and step % cfg.eval_every == 0:
                run.run_eval(step)
            if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.max_steps:
                run.save_state(step)
    except KeyboardInterrupt:
        if run.world == 1:
            run.save_state(step)  # resumable from where it was stopped
            print(f"\ninterrupted at step {step}; resume with --resume {run.run_dir}")
        raise
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        run.bar.close()
    return step


def _finish(run: _Run, step: int) -> None:
    """The last log row and evaluation, ckpt.pt, and final.pt (the EMA weights when on)."""
    cfg = run.cfg
    if run.acc[4] > 0:
        run.write_log(step)  # the partial interval since the last row
    if cfg.eval_every and step % cfg.eval_every and run.eval_images:
        run.run_eval(step)
    run.save_state(step)
    if run.master:
        final = run.ema.module if run.ema is not None else run.model
        save_final(final, run.run_dir / "final.pt", cfg, {"step": step, "train_info": run.info})
        run.log.close()
        if run.evlog is not None:
            run.evlog.close()
    if run.world > 1:
        dist.barrier()
