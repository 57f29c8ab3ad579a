"""Preparing a training run: its configuration on resume, devices, model, optimizers, data.

Each function is one step of :func:`nic_lib.training.loop.train`'s set-up, in the order
the loop calls them; the order matters for reproducibility (every rank seeds, then
builds the same model; a resumed run restores its generators after building).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import random
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.swa_utils import AveragedModel

from .config import RUNTIME_KEYS, TrainConfig, build_model
from .data import ImagePool, load_pool, training_files
from .recipes import under_prefixes
from .runs import default_runs_dir, load_train_state, set_rng_state


def resolve_config(cfg: TrainConfig, resume: str | os.PathLike | None,
                   overrides: dict | None) -> tuple[TrainConfig, dict | None, Path | None]:
    """The run's configuration, its saved state and folder (``None``, ``None`` when new).

    On resume the checkpoint's configuration is kept; only :data:`RUNTIME_KEYS` may be
    overridden. The schedule's horizon is fixed here (``lr_decay_steps``).
    """
    state, run_dir = (None, None)
    if resume is not None:
        state, run_dir = load_train_state(resume)
        cfg = TrainConfig(**state["config"])
        bad = sorted(set(overrides or {}) - set(RUNTIME_KEYS))
        if bad:
            raise ValueError(f"--resume keeps the run's settings; {', '.join(bad)} cannot change "
                             f"(only {', '.join(RUNTIME_KEYS)} can). Start a new run instead")
        cfg = dataclasses.replace(cfg, **(overrides or {}))
    if cfg.lr_decay_steps is None:
        # fix the schedule's horizon now: resuming with a larger --max-steps extends the run
        # at the final learning rate instead of re-stretching the schedule
        cfg = dataclasses.replace(cfg, lr_decay_steps=cfg.max_steps)
    return cfg, state, run_dir


def setup_distributed(cfg: TrainConfig) -> tuple[int, int, torch.device]:
    """(rank, world size, device); starts the process group when run under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if use_cuda:
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu" if cfg.device == "auto" else cfg.device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return rank, world, device


def set_compute(cfg: TrainConfig, world: int, device: torch.device) -> None:
    """Threads, deterministic algorithms, cuDNN autotuning (torch's global settings)."""
    # one compute thread per core, cores shared between the ranks of this machine
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // local_world))
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: autotune the convolutions


def seeded_model(cfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    """The run's fresh model, built after seeding every generator with ``cfg.seed``.

    Raises:
        ValueError: the crop is not a multiple of the model's total downsampling.
    """
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    factor = int(getattr(model, "downsampling_factor", 1))
    if cfg.crop % factor:
        fit = max(factor, cfg.crop // factor * factor)
        raise ValueError(f"--crop {cfg.crop} must be a multiple of {factor}, the total "
                         f"downsampling of {cfg.model} (e.g. --crop {fit})")
    return model


class _NoOptimizer:
    """Stands in for the aux optimizer of a model without factorized densities."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass

    def step(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@dataclasses.dataclass
class Optimizers:
    """The two optimizers of a run and the parameters each one trains.

    Attributes:
        net_params: every trainable parameter but the quantiles (Adam on L, clipped).
        aux_names: names of the factorized densities' quantiles (Adam on the aux loss).
        optimizer: Adam at ``cfg.lr`` (the schedule sets its rate each step).
        aux_optimizer: Adam at ``cfg.aux_lr``, or a no-op for models without quantiles.
    """

    net_params: list[torch.nn.Parameter]
    aux_names: list[str]
    optimizer: torch.optim.Optimizer
    aux_optimizer: torch.optim.Optimizer | _NoOptimizer

    @classmethod
    def of(cls, model: torch.nn.Module, cfg: TrainConfig) -> Optimizers:
        """Freeze ``cfg.freeze``, then split the rest between the two optimizers.

        Raises:
            ValueError: a ``--freeze`` prefix names no parameter of the model.
        """
        named = dict(model.named_parameters())
        for prefix in cfg.freeze or ():
            if not any(under_prefixes(n, [prefix]) for n in named):
                raise ValueError(
                    f"--freeze {prefix}: {cfg.model} has no parameters under that name; "
                    f"its modules: {', '.join(sorted({n.split('.')[0] for n in named}))}")
        frozen = [n for n in named if cfg.freeze and under_prefixes(n, cfg.freeze)]
        for n in frozen:
            named[n].requires_grad_(False)
        aux_names = sorted(n for n in named if n.endswith(".quantiles") and n not in frozen)
        net_params = [p for n, p in named.items() if n not in aux_names and n not in frozen]
        optimizer = torch.optim.Adam(net_params, lr=cfg.lr)
        # models without a factorized density (context-only) have no quantiles to place
        aux_optimizer = (torch.optim.Adam([named[n] for n in aux_names], lr=cfg.aux_lr)
                         if aux_names else _NoOptimizer())
        return cls(net_params, aux_names, optimizer, aux_optimizer)


def restore(state: dict | None, model: torch.nn.Module, opt: Optimizers,
            ema: AveragedModel | None, cfg: TrainConfig, rank: int, world: int,
            device: torch.device) -> tuple[int, float, torch.Tensor]:
    """Load a checkpoint's weights, optimizers, EMA and RNG states (a new run: seed the noise).

    Returns:
        ``(start step, elapsed seconds, log accumulator)``; the accumulator holds the sums
        of loss, mse, bpp, aux loss and the number of steps since the last log row.
    """
    if state is None:
        if cfg.noise == "global":
            torch.manual_seed(cfg.seed + 1 + rank)  # distinct noise on every rank
        return cfg.start_step, 0.0, torch.zeros(5, dtype=torch.float64, device=device)
    model.load_state_dict(state["model"])
    opt.optimizer.load_state_dict(state["optimizer"])
    opt.aux_optimizer.load_state_dict(state["aux_optimizer"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    rng = state["rng"]
    if len(rng) == world:
        set_rng_state(rng[rank])
    elif cfg.noise == "global":
        warnings.warn(f"checkpoint was written by {len(rng)} ranks, resuming with {world}: "
                      "the global noise stream differs from the uninterrupted run",
                      stacklevel=3)
    return state["step"], state["elapsed_s"], state["log_acc"].to(device)


def wrap_model(model: torch.nn.Module, cfg: TrainConfig, world: int, device: torch.device,
               aux_names: list[str]) -> torch.nn.Module:
    """What the training forward calls: the model, under DDP on several ranks, compiled
    with ``--compile``."""
    step_model = model
    if world > 1:
        # quantiles are trained by the aux loss alone, identically on every rank: not synced
        DDP._set_params_and_buffers_to_ignore_for_model(model, aux_names)
        # buffers are constants (bounds, masks, CDF tables): no need to sync them every forward
        no_sync = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers" in inspect.signature(DDP).parameters
                   else {"broadcast_buffers": False})
        step_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                         **no_sync)
    if cfg.compile:
        step_model = torch.compile(step_model)
    return step_model


def shared_pool(cfg: TrainConfig, master: bool, world: int) -> ImagePool:
    """The training pool; rank 0 decodes and caches it first, the other ranks map the cache."""
    files = training_files(cfg.data)
    if master:
        pool = load_pool(files)
    if world > 1:
        dist.barrier()  # rank 0 has written the pool cache
    if not master:
        pool = load_pool(files)
    return pool


def run_folder(cfg: TrainConfig, run_dir: Path | None, world: int, master: bool) -> Path:
    """The run folder: the resumed one, ``--out-dir``, or a new timestamped one (rank 0
    names it; the others learn it)."""
    if run_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path(cfg.out_dir) if cfg.out_dir else (
            default_runs_dir() / f"{cfg.model}-q{cfg.quality}-{stamp}")
    if world > 1:
        box = [str(run_dir)]
        dist.broadcast_object_list(box, src=0)
        run_dir = Path(box[0])
    if master:
        run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir
