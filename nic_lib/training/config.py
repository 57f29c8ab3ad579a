"""The configuration of a training run: :class:`TrainConfig`, its defaults, and λ.

Every knob of a run is a field of :class:`TrainConfig` (a flag of ``python -m
nic_lib.train``) whose default is a named constant below, with the reason for its value.
The configuration is saved in the run's ``config.json``, ``ckpt.pt`` and ``final.pt``,
so its field names are a file format: add fields with defaults, never rename them.

λ has one path. :func:`rate_lambda` (fixed rate) and :func:`rate_lambdas` (one λ per
level of a variable-rate run) read the registry's quality tables (``LAMBDA_MSE``,
``LAMBDA_MSSSIM``) unless ``--lmbda`` is given; :func:`reference_lambda` picks the λ whose
gain starts at 1; :func:`rate_settings` puts them into the model configuration once,
over the registry's default, and :func:`model_config` is what ``final.pt`` stores.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import NamedTuple

import torch

from nic_lib import metrics, pruning
from nic_lib.models import registry, variable_rate

# ---------------------------------------------------------------------------------------
# Defaults. Each is what the papers / CompressAI's example used, or why we differ.

#: Default model: the paper this repository reproduces first (Minnen et al. 2018).
DEFAULT_MODEL = "mbt2018"
#: Quality 3 of 8: a mid rate (λ = 0.0067) that trains in reasonable time on a CPU.
DEFAULT_QUALITY = 3
#: Model-size profile of the registry: "cpu" (narrow, trainable here) or "full" (the zoo's).
DEFAULT_PROFILE = "cpu"
#: Training set: the umbrella dataset of nic_lib.data (bsd200, div2k, urban100, imagenet).
DEFAULT_DATA = "train"
#: 256x256 crops, as in Ballé et al. 2018, Minnen et al. 2018 and CompressAI's example.
DEFAULT_CROP = 256
#: Global batch (summed over DDP ranks): 8 as in Ballé et al. 2018 / Minnen et al. 2018.
DEFAULT_BATCH = 8
#: Adam learning rate of the papers and CompressAI's example.
DEFAULT_LR = 1e-4
#: Adam on the quantiles, as CompressAI's example (the aux loss only places the quantiles).
DEFAULT_AUX_LR = 1e-3
#: Linear warm-up: Adam's second-moment estimates are noisy in the first steps and GDN's
#: parameters react badly to full-size steps from a random start.
DEFAULT_WARMUP = 200
#: Cosine ends at 1e-5 = lr / 10, the final rate of the papers' step decay.
DEFAULT_MIN_LR_RATIO = 0.1
#: Step decay (``--lr-schedule step``): ×0.1 at these fractions of the horizon.
DEFAULT_LR_MILESTONES = (0.75, 0.9)
DEFAULT_LR_GAMMA = 0.1
#: Gradient-norm clipping of CompressAI's example (``--clip_max_norm 1.0``).
DEFAULT_CLIP = 1.0
#: Long enough for a real run; CPU sessions set --max-steps / --max-minutes.
DEFAULT_MAX_STEPS = 200_000
#: Every 10 steps: a CSV row costs nothing, and 30-step test runs still get 3 rows.
DEFAULT_LOG_EVERY = 10
#: Checkpoint every 500 steps (a save takes well under a second): a crash loses at most
#: ~10-20 CPU minutes at the cpu profile's widths; --max-minutes and Ctrl-C save anyway.
DEFAULT_CKPT_EVERY = 500
#: Evaluate every 1000 steps on a few Kodak crops: cheap enough to watch RD progress.
DEFAULT_EVAL_EVERY = 1000
#: First 4 Kodak images, centre crops of 256 (0 = whole 768x512 images, slower).
DEFAULT_EVAL_IMAGES = 4
DEFAULT_EVAL_CROP = 256

#: Keys that may differ on --resume: they change speed or bookkeeping, not the maths.
RUNTIME_KEYS = ("max_steps", "max_minutes", "log_every", "ckpt_every", "eval_every",
                "device", "threads", "compile", "progress")
#: Training forward precisions (``--precision``; see :mod:`nic_lib.training.precision`).
PRECISIONS = ("fp32", "bf16")
#: Spectral alterations of the training crops (``--data-filter KIND:SIGMA``, applied by
#: :func:`nic_lib.training.data.filter_crops`), each with the largest σ accepted: a blur
#: of σ = 16 px leaves a 128-px crop a flat colour, noise of σ = 128 grey levels is
#: mostly clipping; past these a value is a typo, not an experiment.
DATA_FILTERS = {"blur": 16.0, "noise": 128.0}


class DataFilter(NamedTuple):
    """A parsed ``--data-filter``: ``kind`` ("blur" or "noise") and its strength ``sigma``
    (blur: the Gaussian's σ in pixels; noise: σ in grey levels of 0..255)."""

    kind: str
    sigma: float


def parse_data_filter(spec: str) -> DataFilter:
    """Parse ``--data-filter``: ``blur:SIGMA`` or ``noise:SIGMA``, 0 < SIGMA <= the kind's
    bound in :data:`DATA_FILTERS`.

    A zero strength is refused rather than read as "no filter": unaltered crops are the
    absence of the flag (``data_filter=None``), so one set of training data has one
    spelling in ``config.json``.

    Args:
        spec: e.g. ``"blur:1.5"`` or ``"noise:8"``.

    Returns:
        The :class:`DataFilter`.

    Raises:
        ValueError: any other form, naming the accepted ones.
    """
    forms = " or ".join(f"{k}:SIGMA with 0 < SIGMA <= {v:g}" for k, v in DATA_FILTERS.items())
    kind, sep, value = str(spec).strip().partition(":")
    try:
        sigma = float(value)
    except ValueError:
        sigma = math.nan
    if not sep or kind not in DATA_FILTERS or not math.isfinite(sigma):
        why = "not KIND:SIGMA with a known KIND and a number"
    elif sigma <= 0:
        why = "σ must be above 0 (to train on unaltered crops, leave --data-filter out)"
    elif sigma > DATA_FILTERS[kind]:
        why = f"σ above {DATA_FILTERS[kind]:g} leaves no image to learn from"
    else:
        return DataFilter(kind, sigma)
    raise ValueError(f"--data-filter {spec!r}: {why}; use {forms}, e.g. blur:0.75 (Gaussian blur, "
                     "σ in pixels) or noise:40 (Gaussian noise, σ in grey levels of 0-255)")


@dataclasses.dataclass
class TrainConfig:
    """Every knob of a training run; saved in config.json, ckpt.pt and final.pt.

    Attributes mirror the command-line flags (``--max-steps`` is ``max_steps``); see
    ``python -m nic_lib.train --help`` and the DEFAULT_* constants for why each default.
    ``N``/``M`` override the registry's widths (tests and benchmarks use tiny ones);
    ``lmbda=None`` takes λ from the quality table. ``qualities`` trains one variable-rate
    model for all of them (gain units, :mod:`nic_lib.models.variable_rate`; each step
    uses one level, cyclically, with that quality's λ). ``init_from`` warm-starts from
    a checkpoint (``final.pt`` or ``ckpt.pt``): every tensor whose name and shape match
    is copied, the rest keeps its fresh initialisation; ``init_only`` restricts the copy
    to parameters under those name prefixes (``g_a g_s gain inverse_gain``: the
    transforms, with a fresh entropy model), and ``freeze`` keeps parameters under those
    prefixes at their warm-start values (the ablation protocol of notebook 01 trains
    each entropy model on one set of frozen transforms). ``start_step`` continues a
    schedule from a warm start: the step counter begins there (a shipped snapshot's step
    when its run folder, with the optimizer state, is gone); the warm-up then ramps to
    the schedule's rate at that step. ``prune`` (a fraction) zeroes that share of the
    warm-started model's transform kernels by global magnitude and keeps them zero while
    training (:mod:`nic_lib.pruning`; needs ``init_from``).
    ``schedule_clock="time"`` runs the learning-rate schedule on
    ``max(step/max_steps, elapsed/max_minutes)``, so a run cut short by ``--max-minutes``
    still finishes its decay. ``data_filter`` (``"blur:SIGMA"`` or ``"noise:SIGMA"``,
    :func:`parse_data_filter`) alters every training crop after cropping
    (:func:`nic_lib.training.data.filter_crops`), never the evaluation images; ``None``
    trains on the crops as they are.
    """

    model: str = DEFAULT_MODEL
    quality: int = DEFAULT_QUALITY
    profile: str = DEFAULT_PROFILE
    N: int | None = None
    M: int | None = None
    lmbda: float | None = None
    qualities: tuple[int, ...] | None = None
    context_size: int | None = None
    reference_lmbda: float | None = None
    init_from: str | None = None
    init_only: tuple[str, ...] | None = None
    start_step: int = 0
    freeze: tuple[str, ...] | None = None
    prefit_densities: int = 0
    per_level_hyper_density: bool = False
    tail_gradient: bool = False
    prune: float | None = None
    metric: str = "mse"
    data: tuple[str, ...] = (DEFAULT_DATA,)
    data_filter: str | None = None
    crop: int = DEFAULT_CROP
    batch_size: int = DEFAULT_BATCH
    lr: float = DEFAULT_LR
    aux_lr: float = DEFAULT_AUX_LR
    lr_schedule: str = "cosine"
    schedule_clock: str = "steps"
    warmup_steps: int = DEFAULT_WARMUP
    lr_decay_steps: int | None = None
    min_lr_ratio: float = DEFAULT_MIN_LR_RATIO
    lr_milestones: tuple[float, ...] = DEFAULT_LR_MILESTONES
    lr_gamma: float = DEFAULT_LR_GAMMA
    clip_grad_norm: float = DEFAULT_CLIP
    ema: float | None = None
    noise: str = "sample"
    seed: int = 0
    max_steps: int = DEFAULT_MAX_STEPS
    max_minutes: float | None = None
    log_every: int = DEFAULT_LOG_EVERY
    ckpt_every: int = DEFAULT_CKPT_EVERY
    eval_every: int = DEFAULT_EVAL_EVERY
    eval_images: int = DEFAULT_EVAL_IMAGES
    eval_crop: int = DEFAULT_EVAL_CROP
    out_dir: str | None = None
    device: str = "auto"
    threads: int | None = None
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = False
    precision: str = "fp32"
    progress: bool = True


# ---------------------------------------------------------------------------------------
# Model and λ: the only place that knows where models come from (nic_lib.models.registry).


def _table_lambda(quality: int, metric: str) -> float:
    """λ of a quality in the registry's table of a metric (MSE or MS-SSIM)."""
    table = registry.LAMBDA_MSSSIM if metric == "ms-ssim" else registry.LAMBDA_MSE
    return float(table[quality])


def rate_lambda(cfg: TrainConfig) -> float:
    """λ of the run: ``cfg.lmbda`` if set, else the quality table of the metric.

    Args:
        cfg: uses lmbda, quality, metric.

    Returns:
        λ (MSE: the registry's ``LAMBDA_MSE``; MS-SSIM: its ``LAMBDA_MSSSIM``).
    """
    if cfg.lmbda is not None:
        return float(cfg.lmbda)
    return _table_lambda(cfg.quality, cfg.metric)


def rate_lambdas(cfg: TrainConfig) -> list[float]:
    """λ of each level of a variable-rate run (``[]`` for a fixed-rate run).

    Args:
        cfg: uses qualities, metric.

    Returns:
        The table λ of each quality in ``cfg.qualities``, in that order.
    """
    return [_table_lambda(q, cfg.metric) for q in (cfg.qualities or ())]


def reference_lambda(cfg: TrainConfig) -> float | None:
    """Variable rate: the λ whose gain starts at 1 (``None`` for a fixed-rate run).

    Args:
        cfg: uses qualities, reference_lmbda, metric.

    Returns:
        ``cfg.reference_lmbda`` if set (e.g. the λ of the warm-start model), else the
        levels' geometric mean (:func:`nic_lib.models.variable_rate.default_reference_lmbda`).
    """
    if not cfg.qualities:
        return None
    if cfg.reference_lmbda is not None:
        return float(cfg.reference_lmbda)
    return variable_rate.default_reference_lmbda(rate_lambdas(cfg))


def rate_settings(cfg: TrainConfig) -> dict:
    """The rate entries of the run's model configuration: where λ is resolved, once.

    A fixed-rate run codes one point, λ = :func:`rate_lambda`; a variable-rate run codes
    one level per quality, with λ_l = :func:`rate_lambdas` and no single quality or λ.

    Args:
        cfg: uses lmbda, quality, qualities, reference_lmbda, metric.

    Returns:
        Fixed rate: ``{"lmbda", "metric"}``. Variable rate: ``{"lmbda": None, "metric",
        "qualities", "lmbdas", "reference_lmbda", "quality": None}``.
    """
    if not cfg.qualities:
        return {"lmbda": rate_lambda(cfg), "metric": cfg.metric}
    return {"lmbda": None, "metric": cfg.metric, "qualities": list(cfg.qualities),
            "lmbdas": rate_lambdas(cfg), "reference_lmbda": reference_lambda(cfg),
            "quality": None}


def model_config(cfg: TrainConfig) -> dict:
    """The registry configuration of the run's model (what final.pt stores).

    Args:
        cfg: uses model, quality, profile, N/M (width overrides), context_size, the rate
            settings (:func:`rate_settings`) and per_level_hyper_density.

    Returns:
        ``registry.default_config(model, quality, profile)`` with the run's widths, context
        size, rate settings (replacing the registry's default λ and metric) and options.

    Raises:
        KeyError: unknown model. ValueError: bad quality or profile, or a context size
            for a model without a context model.
    """
    config = registry.default_config(cfg.model, cfg.quality, cfg.profile)
    config.update({k: v for k, v in (("N", cfg.N), ("M", cfg.M)) if v is not None})
    if cfg.context_size is not None:
        if "context_size" not in config:
            raise ValueError(f"--context-size: {cfg.model} has no context model; use it with "
                             "mbt2018, mbt2018-context or mbt2018-gmm")
        config["context_size"] = int(cfg.context_size)
    config.update(rate_settings(cfg))
    if cfg.qualities and cfg.per_level_hyper_density:
        config["per_level_hyper_density"] = True
    return config


def build_model(cfg: TrainConfig) -> torch.nn.Module:
    """An untrained model of the run: ``registry.build_model(model, **model_config(cfg))``.

    Args:
        cfg: the run's configuration.

    Returns:
        A model whose ``forward(x)`` returns ``{"x_hat", "likelihoods": {...}}``.

    Raises:
        KeyError: unknown model. ValueError: bad quality or profile.
    """
    return registry.build_model(cfg.model, **model_config(cfg))


def check_config(cfg: TrainConfig, world: int, resuming: bool = False) -> None:
    """Refuse inconsistent settings before anything is built.

    Args:
        cfg: the run's configuration.
        world: number of DDP ranks (the global batch must divide by it).
        resuming: a resumed run restores its weights from ckpt.pt, so its ``init_from``
            file may be gone.

    Raises:
        ValueError: a bad or inconsistent setting; the message names the flag and the fix.
    """
    if cfg.batch_size % world:
        raise ValueError(f"--batch-size {cfg.batch_size} is the global batch and must divide "
                         f"by the {world} ranks; pass a multiple of {world}")
    if cfg.metric not in ("mse", "ms-ssim"):
        raise ValueError(f"--metric {cfg.metric}: use mse or ms-ssim")
    if cfg.metric == "ms-ssim" and cfg.crop < metrics.MS_SSIM_MIN_SIDE:
        raise ValueError(f"--metric ms-ssim needs --crop >= {metrics.MS_SSIM_MIN_SIDE} "
                         f"(5 scales of an 11-tap filter), got {cfg.crop}")
    if cfg.data_filter is not None:
        parse_data_filter(cfg.data_filter)
    if cfg.noise not in ("sample", "global"):
        raise ValueError(f"--noise {cfg.noise}: use sample or global")
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"--precision {cfg.precision}: use one of {', '.join(PRECISIONS)}")
    if cfg.lr_schedule not in ("cosine", "step", "constant"):
        raise ValueError(f"--lr-schedule {cfg.lr_schedule}: use cosine, step or constant")
    if cfg.schedule_clock not in ("steps", "time"):
        raise ValueError(f"--schedule-clock {cfg.schedule_clock}: use steps or time")
    if cfg.qualities is not None:
        bad = [q for q in cfg.qualities if q not in registry.LAMBDA_MSE]
        if bad or len(set(cfg.qualities)) != len(cfg.qualities) or not cfg.qualities:
            raise ValueError(f"--qualities {list(cfg.qualities)}: give distinct qualities from "
                             f"{sorted(registry.LAMBDA_MSE)}")
        if cfg.lmbda is not None:
            raise ValueError("--lmbda sets one λ; a variable-rate run (--qualities) takes each "
                             "level's λ from the quality table: drop one of the two")
    if cfg.per_level_hyper_density and not cfg.qualities:
        raise ValueError("--per-level-hyper-density gives each rate level its own z density: "
                         "it needs a variable-rate run (--qualities)")
    if (cfg.init_only or cfg.freeze) and cfg.init_from is None:
        raise ValueError("--init-only and --freeze act on a warm start: give --init-from too")
    if cfg.prune is not None:
        pruning.check_sparsity(cfg.prune)
        if cfg.init_from is None:
            raise ValueError("--prune prunes a trained model: give --init-from too (e.g. "
                             "--init-from checkpoints/mbt2018/n96.pt)")
    if cfg.start_step < 0 or cfg.start_step >= cfg.max_steps:
        raise ValueError(f"--start-step {cfg.start_step}: give a step in [0, --max-steps "
                         f"{cfg.max_steps})")
    if cfg.start_step and cfg.schedule_clock == "time":
        raise ValueError("--start-step continues a step-clock schedule; a time-clock one "
                         "(--schedule-clock time) would restart its clock at 0 s: continue "
                         "with --schedule-clock steps, or --resume the run's ckpt.pt")
    if cfg.start_step and cfg.init_from is None:
        raise ValueError("--start-step continues a schedule from a warm start: give "
                         "--init-from too (to continue a run with its optimizer, use --resume)")
    # a resumed run restores its weights from ckpt.pt: its warm-start source may be gone
    if cfg.init_from is not None and not resuming and not Path(cfg.init_from).is_file():
        raise ValueError(f"--init-from {cfg.init_from}: no such file (give a run's final.pt "
                         "or ckpt.pt)")

