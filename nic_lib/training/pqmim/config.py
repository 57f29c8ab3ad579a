"""Every knob of a PQ-MIM run (stages A and B), its defaults, and what may change on resume.

:class:`PQMIMTrainConfig` is saved in ``config.json``, ``ckpt.pt`` and ``final.pt``;
:func:`resumed_config` rebuilds it from a checkpoint, letting only the settings that do not
change the run's maths (:data:`RUNTIME_KEYS`) take new values. Stage C has its own
configuration (:class:`nic_lib.training.pqmim.stage_c.PerceptualTrainConfig`).

Also here, because every stage uses them: the generator of a step's random draws, keyed by
(seed, stream, step) so that a resumed run is identical to an uninterrupted one, and the
uint8 crops -> model input conversion.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from nic_lib.models import pqmim

from ..config import DEFAULT_DATA, PRECISIONS

#: 256x256 crops (16x16 tokens), as the papers quoted for PQ-MIM (ImageNet, 256 crops).
DEFAULT_CROP = 256
#: Batch 8 (mbt2018's; the paper's 256 is far beyond a CPU budget).
DEFAULT_BATCH = 8
#: Adam 2e-4 for the VQ-VAE (van den Oord et al. 2017 use 2e-4).
DEFAULT_LR_A = 2e-4
#: AdamW 3e-4 for the transformer (a common small-transformer rate; MaskGIT uses 1e-4
#: at batch 256 and many more steps).
DEFAULT_LR_B = 3e-4
#: AdamW weight decay of the transformer's matrices.
DEFAULT_WEIGHT_DECAY_B = 0.01
#: Stage B's masking law (:data:`nic_lib.models.pqmim.MASK_LAWS`). ``"schedule"``: stage B
#: of M2-K256 from scratch, 4,000 steps, left 4.9% fewer bits on the 12 photos-hr tuning
#: crops than the same run with MaskGIT's cosine law (213,265 vs 224,144); the full
#: 12,000-step stage B, 1.7% (M2) and 2.0% (M4) fewer (README). The shipped M8-K256 was
#: trained with the cosine law (its checkpoint's config says so).
DEFAULT_MASK_LAW = "schedule"
#: Linear warm-up of both stages (transformers diverge without one).
DEFAULT_WARMUP = 200
#: Steps per stage: long enough for a real run; CPU sessions set --max-minutes-a/-b.
DEFAULT_STEPS = 20_000
#: Gradient-norm clipping (as nic_lib.train).
DEFAULT_CLIP = 1.0
#: CSV row every 10 steps, checkpoint every 500 (as nic_lib.train).
DEFAULT_LOG_EVERY = 10
DEFAULT_CKPT_EVERY = 500
#: Stage A's training forward in float32 unless asked: the shipped checkpoints were trained
#: so. ``"bf16"`` (g_a and g_s under bfloat16 autocast, the quantizer in float32) was
#: 1.8-2.0x faster per step on an AVX512-BF16 CPU (``benchmarks/pqmim_precision.py``:
#: M4-K256 0.71 -> 0.36 s/step); ``scripts/train_pqmim_cpu.py``'s recipes ask for it.
DEFAULT_PRECISION = "fp32"
#: Settings that may change on --resume (speed and bookkeeping, not the maths; like
#: ``nic_lib.train``'s, ``precision`` is not among them: a run keeps its arithmetic).
RUNTIME_KEYS = ("steps_a", "steps_b", "max_minutes_a", "max_minutes_b", "log_every",
                "ckpt_every", "threads", "export")
#: Settings that may also change on ``--resume --restart-b`` (stage B starts again from
#: scratch on the finished autoencoder: the MIM model's size and its training).
STAGE_B_KEYS = ("width", "layers", "heads", "crop_b", "batch_size_b", "lr_b",
                "weight_decay_b", "warmup_steps", "mask_law")
#: Settings added after runs were saved, with the value every run saved before them used
#: (no run was continued from a snapshot before ``init_from`` existed; every run trained in
#: float32 before ``precision`` existed), so their ``ckpt.pt``, snapshots and exported
#: checkpoints still resume, continue and restart stage B.
ADDED_SETTINGS = {"init_from": None, "start_step": 0, "precision": "fp32"}
#: Version tag of ckpt.pt (:mod:`.run` writes it, :mod:`.snapshot` reads it).
TRAIN_STATE_FORMAT = "nic-repro/pqmim-train-state/1"


@dataclasses.dataclass
class RunSettings:
    """What every PQ-MIM stage's run shares (stages A/B: :class:`PQMIMTrainConfig`; stage
    C: ``PerceptualTrainConfig``): the training data and crops, the warm-up and gradient
    clip, the seed, how often to log and checkpoint, where to write, threads. A run's
    configuration is saved and resumed by field name, so the order of fields is free."""

    data: tuple[str, ...] = (DEFAULT_DATA,)
    crop: int = DEFAULT_CROP
    batch_size: int = DEFAULT_BATCH
    warmup_steps: int = DEFAULT_WARMUP
    clip_grad_norm: float = DEFAULT_CLIP
    seed: int = 0
    log_every: int = DEFAULT_LOG_EVERY
    ckpt_every: int = DEFAULT_CKPT_EVERY
    out_dir: str | None = None
    export: str | None = None
    threads: int | None = None


@dataclasses.dataclass
class PQMIMTrainConfig(RunSettings):
    """Every knob of a PQ-MIM run (saved in config.json, ckpt.pt and final.pt).

    Architecture: N, latent_dim, M, K, width, layers, heads (see
    :class:`nic_lib.models.pqmim.PQMIM`). ``crop``/``batch_size``: stage A's crops;
    ``crop_b``/``batch_size_b``: stage B's (default: stage A's; larger crops give the MIM
    model larger token grids, i.e. more context). ``steps_a``/``steps_b``: steps per stage;
    ``max_minutes_a``/``_b``: wall-clock cap per stage. ``mask_law``: stage B's masking law
    (:data:`nic_lib.models.pqmim.MASK_LAWS`; ``"schedule"`` also takes the per-crop mean
    loss). ``init_from``/``start_step``: stage A continued from a snapshot (a PQ-MIM
    checkpoint of an unfinished run, :func:`~nic_lib.training.pqmim.export_snapshot`) at
    the snapshot's step: the step counter, crops, learning-rate schedule and ``steps_a``
    continue from there, the optimizer state starts afresh and the rate ramps up again
    over ``warmup_steps`` (:func:`~nic_lib.training.schedule.warmup_cosine`).
    ``precision``: stage A's training forward, ``"fp32"`` or ``"bf16"`` (g_a and g_s under
    bfloat16 autocast; computed in fp32 on a CPU without native bfloat16,
    :func:`~nic_lib.training.precision.for_this_machine`); evaluation, stage B, stage C and
    the coder always compute in float32. Other fields mirror the flags of ``python -m
    nic_lib.train_pqmim --help``.
    """

    N: int = pqmim.DEFAULT_N
    latent_dim: int = pqmim.DEFAULT_LATENT_DIM
    M: int = pqmim.DEFAULT_SUBQUANTIZERS
    K: int = pqmim.DEFAULT_CODEBOOK_SIZE
    width: int = pqmim.MIM_WIDTH
    layers: int = pqmim.MIM_LAYERS
    heads: int = pqmim.MIM_HEADS
    crop_b: int | None = None
    batch_size_b: int | None = None
    lr_a: float = DEFAULT_LR_A
    lr_b: float = DEFAULT_LR_B
    weight_decay_b: float = DEFAULT_WEIGHT_DECAY_B
    mask_law: str = DEFAULT_MASK_LAW
    steps_a: int = DEFAULT_STEPS
    steps_b: int = DEFAULT_STEPS
    max_minutes_a: float | None = None
    max_minutes_b: float | None = None
    init_from: str | None = None
    start_step: int = 0
    precision: str = DEFAULT_PRECISION


def check_config(cfg: PQMIMTrainConfig) -> None:
    """Refuse settings the stages cannot run.

    Raises:
        ValueError: an unknown masking law or precision, a crop side that is not a
            multiple of :data:`nic_lib.models.pqmim.DOWNSAMPLING` (16), or a ``start_step``
            outside stage A or without ``init_from``.
    """
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"--precision {cfg.precision!r} is not a training precision; use "
                         f"one of {', '.join(PRECISIONS)}")
    if cfg.start_step < 0 or cfg.start_step >= max(cfg.steps_a, 1):
        raise ValueError(f"--start-step {cfg.start_step} is not a step of stage A [0, "
                         f"--steps-a {cfg.steps_a}); a snapshot whose stage A is finished "
                         "starts stage B with --resume SNAPSHOT --restart-b --out-dir NEW_FOLDER")
    if cfg.start_step and cfg.init_from is None:
        raise ValueError("--start-step continues stage A from a snapshot: give --init-from "
                         "SNAPSHOT too (to continue a run folder with its optimizer, use "
                         "--resume RUN_FOLDER)")
    if cfg.init_from is not None and not cfg.start_step:
        raise ValueError(f"--init-from {cfg.init_from} continues a stage-A snapshot at its "
                         "step: add --start-step STEP (the snapshot's 'snapshot' entry, "
                         "e.g. 1500)")
    if cfg.mask_law not in pqmim.MASK_LAWS:
        raise ValueError(f"--mask-law {cfg.mask_law!r} is not a masking law; use one of "
                         f"{', '.join(pqmim.MASK_LAWS)}")
    crop_b = cfg.crop_b or cfg.crop
    if crop_b % pqmim.DOWNSAMPLING:
        raise ValueError(f"--crop-b {crop_b} must be a multiple of {pqmim.DOWNSAMPLING}")
    if cfg.crop % pqmim.DOWNSAMPLING:
        raise ValueError(f"--crop {cfg.crop} must be a multiple of {pqmim.DOWNSAMPLING} "
                         f"(e.g. --crop {max(16, cfg.crop // 16 * 16)})")


def resumed_config(cls, saved: dict, runtime_keys: tuple[str, ...], overrides: dict | None):
    """A resumed run's configuration: the saved one, with ``overrides`` of ``runtime_keys`` only.

    Args:
        cls: the configuration class (:class:`PQMIMTrainConfig` or stage C's).
        saved: the configuration stored in the checkpoint (``dataclasses.asdict``); it must
            hold every field (a run saved before a setting existed cannot take a default
            that may not be what it ran with), except :data:`ADDED_SETTINGS`, whose
            defaults every older run used.
        runtime_keys: the fields ``overrides`` may set.
        overrides: new values, or ``None``.

    Returns:
        The configuration to continue with.

    Raises:
        ValueError: an override outside ``runtime_keys`` (it would change the run's maths),
            or a saved configuration that lacks a setting.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    saved = {**{k: v for k, v in ADDED_SETTINGS.items() if k in names}, **saved}
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in saved]
    if missing:
        raise ValueError(f"the saved run's configuration lacks {', '.join(missing)} (saved "
                         "before the setting existed); its default may not be what the run "
                         "used, so it cannot be resumed: start a new run")
    cfg = cls(**{k: tuple(v) if k == "data" else v for k, v in saved.items()})
    bad = sorted(set(overrides or {}) - set(runtime_keys))
    if bad:
        raise ValueError(f"--resume keeps the run's settings; {', '.join(bad)} cannot "
                         f"change (only {', '.join(runtime_keys)}). Start a new run instead")
    return dataclasses.replace(cfg, **(overrides or {}))


def exported_config(cfg) -> dict:
    """The configuration as plain values for ``final.pt`` (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def step_generator(seed: int, stream: int, step: int) -> torch.Generator:
    """The generator of one step's random draws (codebook restarts, masks).

    Keyed by (seed, stream, step) through NumPy's SeedSequence, so a step draws the same
    numbers whether or not the run was resumed before it, and ``ckpt.pt`` needs no RNG state.
    """
    key = np.random.SeedSequence([seed, stream, step]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(key))


def to_input(crops: np.ndarray) -> torch.Tensor:
    """uint8 crops (B, H, W, 3) -> model input (B, 3, H, W), float on the 0..1 scale."""
    # x = v8 / 255
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float().div_(255)
