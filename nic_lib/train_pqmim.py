"""Train PQ-MIM in two stages: the autoencoder with its product quantizer, then the MIM model.

Run it from a shell::

    python -m nic_lib.train_pqmim --M 4 --K 256 --steps-a 20000 --steps-b 20000 \\
        --export checkpoints/pqmim/M4-K256.pt
    python -m nic_lib.train_pqmim --resume runs/pqmim-M4-K256-20250101-120000
    python -m nic_lib.train_pqmim --resume checkpoints/pqmim/M4-K256.pt --restart-b \\
        --mask-law schedule --out-dir runs/M4-K256-b --export runs/M4-K256-b.pt

(the last: stage B again, from scratch, on the autoencoder of an exported checkpoint)

or from Python: ``train(PQMIMTrainConfig(M=4, K=256, steps_a=2000, steps_b=2000))``.

Stage C, the perceptual variant, fine-tunes the decoder of a finished model::

    python -m nic_lib.train_pqmim --perceptual-from checkpoints/pqmim/M4-K256.pt \\
        --max-minutes-c 10 --export checkpoints/pqmim/M4-K256-perceptual.pt
    python -m nic_lib.train_pqmim --resume runs/pqmim-M4-K256-perceptual-20250101-120000

What the stages do (stage B starts when stage A has finished its steps or minutes)::

    A  x ── g_a ── product quantizer (EMA codebooks, restarts) ── g_s ──► x_hat
       L_A = MSE(x_hat, x) + β‖z − sg(e)‖²          (x on the 0..1 scale)
    B  codes = PQ(g_a(x)) with g_a and the codebooks frozen, of every training image once
       (CodeMapSampler); each step draws windows of crop_b/16 x crop_b/16 tokens
       mask ceil(γ·L) of the L = h·w·M codes, γ = cos(π r / 2), r ~ U[0, 1)   (MaskGIT)
       L_B = Σ_masked −ln P(c | visible codes) / #masked           (nats per code)
       (--mask-law schedule: γ at the fractions where the coding schedule codes a code,
       P(γ = 1 − C_{s−1}/L) = n_s/L, and L_B the mean over crops of each crop's mean;
       see nic_lib.models.pqmim.mask_ratio)
    C  (separate command) g_a, codebooks and MIM model frozen: same codes, same bitstream
       x_hat = g_s(z_q);  D = PatchGAN discriminator (nic_lib.perceptual), alternately:
       L_G = MSE(x_hat, x) [+ w_ms (1 − MS-SSIM)] + w_adv · L_adv(D(x_hat))   (g_s only)
       L_D = GAN loss of D(x) vs D(sg(x_hat))                                   (D only)

Training data and crops come from :mod:`nic_lib.training`
(:func:`~nic_lib.training.training_files` refuses evaluation sets,
:func:`~nic_lib.training.load_pool` decodes once into a cached pool,
:class:`~nic_lib.training.CropSampler` gives crops that depend only on (seed, step)). Every
other random draw (codebook initialisation, dead-code restarts, masks) comes from a
generator seeded by (seed, stage, step), so a resumed run is identical to an uninterrupted
one and ``ckpt.pt`` needs no RNG state.

A run folder (default ``runs/pqmim-M<M>-K<K>-<time>``; ``$NIC_RUNS_DIR`` moves ``runs/``)
receives ``config.json``, ``log_a.csv`` / ``log_b.csv`` (one row per ``--log-every``
steps), ``ckpt.pt`` (resumable: model, optimizer, stage, step; plain values, readable with
``weights_only=True``) and ``final.pt`` (:func:`nic_lib.models.pqmim.save_pqmim` format);
``--export PATH`` copies ``final.pt`` there (the notebooks look in
``checkpoints/pqmim/M<M>-K<K>.pt``).

Stage C writes ``config_c.json``, ``log_c.csv``, ``ckpt_c.pt`` and ``final_c.pt`` (names that
cannot clash with stages A/B): into the run folder when ``--perceptual-from`` names one,
else into ``runs/pqmim-M<M>-K<K>-perceptual-<time>``. ``final_c.pt`` carries an extra
``"perceptual"`` entry (with the digest of the frozen weights, equal to the base model's)
that :func:`nic_lib.models.pqmim.find_checkpoints` uses to tell it from base checkpoints;
export it next to its base as ``M<M>-K<K>-perceptual.pt``. ``--resume`` takes a folder
holding ``ckpt_c.pt`` only, or the ``ckpt_c.pt`` file itself (in an A/B run folder).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from nic_lib import fileio, perceptual
from nic_lib import training as base
from nic_lib.models import pqmim

# ---------------------------------------------------------------------------------------
# Defaults

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
#: trained with the cosine law, :data:`LEGACY_MASK_LAW`, which a run saved before this
#: setting existed keeps when resumed.
DEFAULT_MASK_LAW = "schedule"
LEGACY_MASK_LAW = "cosine"
#: Linear warm-up of both stages (transformers diverge without one).
DEFAULT_WARMUP = 200
#: Steps per stage: long enough for a real run; CPU sessions set --max-minutes-a/-b.
DEFAULT_STEPS = 20_000
#: Gradient-norm clipping (as nic_lib.train).
DEFAULT_CLIP = 1.0
#: CSV row every 10 steps, checkpoint every 500 (as nic_lib.train).
DEFAULT_LOG_EVERY = 10
DEFAULT_CKPT_EVERY = 500
#: Version tag of ckpt.pt.
TRAIN_STATE_FORMAT = "nic-repro/pqmim-train-state/1"
#: Settings that may change on --resume (speed and bookkeeping, not the maths).
RUNTIME_KEYS = ("steps_a", "steps_b", "max_minutes_a", "max_minutes_b", "log_every",
                "ckpt_every", "threads", "export")
#: Settings that may also change on ``--resume --restart-b`` (stage B starts again from
#: scratch on the finished autoencoder: the MIM model's size and its training).
STAGE_B_KEYS = ("width", "layers", "heads", "crop_b", "batch_size_b", "lr_b",
                "weight_decay_b", "warmup_steps", "mask_law")
LOG_A_COLUMNS = ("step", "wall_s", "lr", "loss", "mse", "psnr", "commitment", "perplexity",
                 "restarts", "images_per_s")
LOG_B_COLUMNS = ("step", "wall_s", "lr", "loss", "bits_per_code", "masked_fraction",
                 "images_per_s")
#: Streams of the per-step generators (arbitrary distinct constants).
_QUANTIZER_STREAM, _MASK_STREAM = 0x0B0E, 0x3A5C


@dataclasses.dataclass
class PQMIMTrainConfig:
    """Every knob of a PQ-MIM run (saved in config.json, ckpt.pt and final.pt).

    Architecture: N, latent_dim, M, K, width, layers, heads (see
    :class:`nic_lib.models.pqmim.PQMIM`). ``crop``/``batch_size``: stage A's crops;
    ``crop_b``/``batch_size_b``: stage B's (default: stage A's; larger crops give the MIM
    model larger token grids, i.e. more context). ``steps_a``/``steps_b``: steps per stage;
    ``max_minutes_a``/``_b``: wall-clock cap per stage. ``mask_law``: stage B's masking law
    (:data:`nic_lib.models.pqmim.MASK_LAWS`; ``"schedule"`` also takes the per-crop mean
    loss). Other fields mirror the flags of
    ``python -m nic_lib.train_pqmim --help``.
    """

    N: int = pqmim.DEFAULT_N
    latent_dim: int = pqmim.DEFAULT_LATENT_DIM
    M: int = pqmim.DEFAULT_SUBQUANTIZERS
    K: int = pqmim.DEFAULT_CODEBOOK_SIZE
    width: int = pqmim.MIM_WIDTH
    layers: int = pqmim.MIM_LAYERS
    heads: int = pqmim.MIM_HEADS
    data: tuple[str, ...] = (base.DEFAULT_DATA,)
    crop: int = DEFAULT_CROP
    batch_size: int = DEFAULT_BATCH
    crop_b: int | None = None
    batch_size_b: int | None = None
    lr_a: float = DEFAULT_LR_A
    lr_b: float = DEFAULT_LR_B
    weight_decay_b: float = DEFAULT_WEIGHT_DECAY_B
    warmup_steps: int = DEFAULT_WARMUP
    mask_law: str = DEFAULT_MASK_LAW
    clip_grad_norm: float = DEFAULT_CLIP
    steps_a: int = DEFAULT_STEPS
    steps_b: int = DEFAULT_STEPS
    max_minutes_a: float | None = None
    max_minutes_b: float | None = None
    seed: int = 0
    log_every: int = DEFAULT_LOG_EVERY
    ckpt_every: int = DEFAULT_CKPT_EVERY
    out_dir: str | None = None
    export: str | None = None
    threads: int | None = None
    #: Fields added after runs were saved, with the value those runs used (for --resume).
    LEGACY: ClassVar[dict[str, Any]] = {"mask_law": LEGACY_MASK_LAW}


def learning_rate(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warm-up to ``peak``, then cosine to ``peak / 10``.

    Args:
        step: 0-based step of the stage.
        peak: peak rate.
        warmup: warm-up steps.
        total: stage length in steps.

    Returns:
        The rate.
    """
    if step < warmup:
        # lr_t = peak · (t + 1) / T_warmup
        return peak * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    # lr_t = lr_min + ½ (peak − lr_min)(1 + cos(π t)),  lr_min = peak / 10
    lr_min = peak / 10
    return lr_min + 0.5 * (peak - lr_min) * (1 + math.cos(math.pi * t))


def _generator(seed: int, stage: int, step: int) -> torch.Generator:
    key = np.random.SeedSequence([seed, stage, step]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(key))


def _to_input(crops: np.ndarray) -> torch.Tensor:
    # (B, H, W, 3) uint8 -> (B, 3, H, W) float in [0, 1]
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float().div_(255)


def _load_state(path: str | Path, restart_b: bool = False) -> tuple[dict, Path | None]:
    """``(state, run folder)`` of ``--resume``; with ``restart_b`` an exported checkpoint
    (``final.pt`` or an ``--export`` copy) also works, and the run folder is ``None`` (the
    new stage B needs ``--out-dir``)."""
    path = Path(path).expanduser()
    file = path / "ckpt.pt" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"--resume {path}: no checkpoint at {file}; pass a run folder "
                                "holding ckpt.pt (runs/pqmim-.../) or the file itself")
    state = torch.load(file, map_location="cpu", weights_only=True)
    if restart_b and isinstance(state, dict) and state.get("format") == pqmim.CHECKPOINT_FORMAT:
        return _state_from_export(file, state), None
    if not isinstance(state, dict) or state.get("format") != TRAIN_STATE_FORMAT:
        raise ValueError(f"{file} is not a PQ-MIM training checkpoint (format "
                         f"{TRAIN_STATE_FORMAT!r}); final.pt cannot be resumed, ckpt.pt can "
                         "(final.pt can start a new stage B: add --restart-b --out-dir NEW_FOLDER)")
    return state, file.parent


def _state_from_export(file: Path, ckpt: dict) -> dict:
    """A finished run's state rebuilt from its exported checkpoint, for ``--restart-b``.

    The exported weights may be float16 (``save_pqmim(half=True)``, the shipped files);
    ``load_state_dict`` copies them into the float32 model, as
    :func:`~nic_lib.models.pqmim.load_pqmim` does, so the new stage B learns the codes that
    the exported model computes. Stage A's optimizer state is not exported; a restarted
    stage B never uses it.

    Raises:
        ValueError: a perceptual variant (its stage B is its base's), or a checkpoint
            without the ``train_config`` that ``python -m nic_lib.train_pqmim`` exports.
    """
    if "perceptual" in ckpt:
        raise ValueError(f"{file} is a perceptual variant; restart stage B of its base "
                         "checkpoint (the variant shares it), then rerun stage C")
    if "train_config" not in ckpt:
        raise ValueError(f"{file} has no train_config (not exported by python -m "
                         "nic_lib.train_pqmim); its stage B cannot be restarted")
    elapsed = dict(ckpt.get("elapsed_s") or {"a": 0.0, "b": 0.0})
    return {"format": TRAIN_STATE_FORMAT, "config": dict(ckpt["train_config"]),
            "stage": "done", "step": int(ckpt["train_config"]["steps_b"]),
            "elapsed_s": elapsed, "model": ckpt["state_dict"], "opt_a": None, "opt_b": None,
            "source": str(file)}


def train(cfg: PQMIMTrainConfig, resume: str | Path | None = None,
          overrides: dict | None = None, restart_b: bool = False) -> Path:
    """Train (or resume) a PQ-MIM run; returns its run folder.

    Args:
        cfg: the configuration (ignored when resuming, except ``overrides``).
        resume: run folder or ckpt.pt to continue.
        overrides: with ``resume``, new values for :data:`RUNTIME_KEYS` (and, with
            ``restart_b``, :data:`STAGE_B_KEYS`).
        restart_b: with ``resume`` of a run past stage A: keep its autoencoder and
            codebooks, and train stage B again from step 0 with a fresh MIM model, optimizer
            and prior counts (the old ``log_b.csv`` is kept as ``log_b.before-restart.csv``).
            ``resume`` may also be an exported checkpoint (``final.pt``, an ``--export``
            copy); then ``overrides["out_dir"]`` names the new run folder.

    Returns:
        The run folder (``final.pt`` inside).

    Raises:
        ValueError: bad settings (crop not a multiple of 16, latent_dim not divisible by M,
            an override that would change the maths of a resumed run).
    """
    threads = torch.get_num_threads()
    if restart_b and resume is None:
        raise ValueError("restart_b (--restart-b) restarts stage B of an existing run: "
                         "pass its folder with --resume")
    try:
        return _train(cfg, resume, overrides, restart_b)
    finally:
        torch.set_num_threads(threads)


def _resumed_config(cls, saved: dict, runtime_keys: tuple[str, ...], overrides: dict | None):
    """A resumed run's configuration: the saved one, with ``overrides`` of ``runtime_keys`` only.

    Raises:
        ValueError: an override outside ``runtime_keys`` (it would change the run's maths).
    """
    # a field added after the run was saved takes the value such runs used
    saved = {**getattr(cls, "LEGACY", {}), **saved}
    cfg = cls(**{k: tuple(v) if k == "data" else v for k, v in saved.items()})
    bad = sorted(set(overrides or {}) - set(runtime_keys))
    if bad:
        raise ValueError(f"--resume keeps the run's settings; {', '.join(bad)} cannot "
                         f"change (only {', '.join(runtime_keys)}). Start a new run instead")
    return dataclasses.replace(cfg, **(overrides or {}))


def _train(cfg: PQMIMTrainConfig, resume, overrides, restart_b: bool = False) -> Path:
    state, run_dir = None, None
    if resume is not None:
        state, run_dir = _load_state(resume, restart_b)
        keys = RUNTIME_KEYS + STAGE_B_KEYS if restart_b else RUNTIME_KEYS
        if run_dir is None:  # stage B of an exported checkpoint: into a new run folder
            out = (overrides or {}).get("out_dir")
            if not out:
                raise ValueError(f"--restart-b from the exported checkpoint {resume} writes a "
                                 "new run: pass --out-dir NEW_FOLDER")
            if (Path(out) / "ckpt.pt").exists():
                raise ValueError(f"{out} already holds a run (ckpt.pt); resume it with "
                                 f"--resume {out}, or pass another --out-dir")
            # the export path of the run that wrote the file is not inherited: it is often
            # the file itself (python scripts/train_pqmim_cpu.py exports into checkpoints/)
            overrides = {**(overrides or {}), "export": (overrides or {}).get("export")}
            export = overrides["export"]
            if export and Path(export).resolve() == Path(resume).resolve():
                raise ValueError(f"--export {export} would overwrite the checkpoint the run "
                                 "starts from; export elsewhere, then replace it yourself")
            keys = keys + ("out_dir",)
            run_dir = Path(out)
        cfg = _resumed_config(PQMIMTrainConfig, state["config"], keys, overrides)
        if restart_b and state["stage"] == "a":
            raise ValueError(f"{run_dir} is still in stage A; resume it without --restart-b")
    if cfg.mask_law not in pqmim.MASK_LAWS:
        raise ValueError(f"--mask-law {cfg.mask_law!r} is not a masking law; use one of "
                         f"{', '.join(pqmim.MASK_LAWS)}")
    crop_b = cfg.crop_b or cfg.crop
    if crop_b % pqmim.DOWNSAMPLING:
        raise ValueError(f"--crop-b {crop_b} must be a multiple of {pqmim.DOWNSAMPLING}")
    if cfg.crop % pqmim.DOWNSAMPLING:
        raise ValueError(f"--crop {cfg.crop} must be a multiple of {pqmim.DOWNSAMPLING} "
                         f"(e.g. --crop {max(16, cfg.crop // 16 * 16)})")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    torch.manual_seed(cfg.seed)  # weight initialisation
    model = pqmim.PQMIM(cfg.N, cfg.latent_dim, cfg.M, cfg.K, cfg.width, cfg.layers, cfg.heads)
    ae_params = [p for n, p in model.named_parameters() if not n.startswith("entropy_model.")]
    opt_a = torch.optim.Adam(ae_params, lr=cfg.lr_a)
    opt_b = torch.optim.AdamW(model.entropy_model.parameters(), lr=cfg.lr_b,
                              weight_decay=cfg.weight_decay_b)
    stage, step, elapsed = "a", 0, {"a": 0.0, "b": 0.0}
    if state is not None and restart_b:
        # keep g_a, g_s and the codebooks; the MIM model and its statistics start afresh
        kept = {k: v for k, v in state["model"].items()
                if not k.startswith(("entropy_model.", "prior_counts"))}
        missing, unexpected = model.load_state_dict(kept, strict=False)
        assert not unexpected and all(k.startswith(("entropy_model.", "prior_counts"))
                                      for k in missing), (missing, unexpected)
        if state["opt_a"] is not None:
            opt_a.load_state_dict(state["opt_a"])
        stage, step = "b", 0
        elapsed = {"a": state["elapsed_s"]["a"], "b": 0.0}
        old_log = run_dir / "log_b.csv"
        if old_log.exists():
            old_log.replace(run_dir / "log_b.before-restart.csv")
    elif state is not None:
        model.load_state_dict(state["model"])
        opt_a.load_state_dict(state["opt_a"])
        opt_b.load_state_dict(state["opt_b"])
        stage, step, elapsed = state["stage"], state["step"], dict(state["elapsed_s"])

    files = base.training_files(cfg.data)
    pool = base.load_pool(files)
    sampler = base.CropSampler(pool, cfg.crop, cfg.batch_size, cfg.seed)

    if run_dir is None:
        run_dir = Path(cfg.out_dir) if cfg.out_dir else (
            base.default_runs_dir() / f"pqmim-M{cfg.M}-K{cfg.K}-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.mkdir(parents=True, exist_ok=True)
    info = {"train_images": len(pool.names), "parameters_autoencoder": sum(
        p.numel() for p in ae_params), "parameters_mim": sum(
        p.numel() for p in model.entropy_model.parameters()), "torch": str(torch.__version__)}
    if state is not None and "source" in state:
        info["stage_b_restarted_from"] = state["source"]
    def write_config() -> None:  # again when stage B adds what it resolved
        fileio.atomic_write_text(run_dir / "config.json", json.dumps(
            {"config": dataclasses.asdict(cfg), "resolved": info}, indent=1))

    write_config()

    def save_state(stage_now: str, step_now: int) -> None:
        snapshot = {"format": TRAIN_STATE_FORMAT, "config": dataclasses.asdict(cfg),
                    "stage": stage_now, "step": step_now, "elapsed_s": dict(elapsed),
                    "model": model.state_dict(), "opt_a": opt_a.state_dict(),
                    "opt_b": opt_b.state_dict()}
        with fileio.atomic_path(run_dir / "ckpt.pt") as tmp:
            torch.save(snapshot, tmp)

    progress = {"stage": stage, "step": step}  # where a Ctrl-C would save
    try:
        if stage == "a":
            step = _stage_a(model, opt_a, ae_params, sampler, cfg, run_dir, step, elapsed,
                            save_state, progress, resumed=state is not None)
            stage, step = "b", 0
            save_state(stage, step)
        if stage in ("b", "done"):  # "done": a resume with more --steps-b continues stage B
            resumed_b = state is not None and state["stage"] != "a" and not restart_b
            sampler_b = None
            if step < cfg.steps_b:
                sampler_b = CodeMapSampler(model.eval(), pool, crop_b,
                                           cfg.batch_size_b or cfg.batch_size, cfg.seed)
                info["stage_b_images"] = len(sampler_b.maps)
                write_config()
            step = _stage_b(model, opt_b, sampler_b, cfg, run_dir, step, elapsed, save_state,
                            progress, resumed=resumed_b)
            stage = "done"
            save_state(stage, step)
    except KeyboardInterrupt:
        save_state(progress["stage"], progress["step"])
        print(f"\ninterrupted in stage {progress['stage']} at step {progress['step']}; "
              f"resume with: python -m nic_lib.train_pqmim --resume {run_dir}")
        raise

    final = run_dir / "final.pt"
    pqmim.save_pqmim(model.eval(), final, {
        "train_config": {k: list(v) if isinstance(v, tuple) else v
                         for k, v in dataclasses.asdict(cfg).items()},
        "train_info": info, "elapsed_s": dict(elapsed)})
    if cfg.export:
        with fileio.atomic_path(Path(cfg.export)) as tmp:
            shutil.copyfile(final, tmp)
    return run_dir


#: Stage B codes JPEG training images at 3/4 size (stage A's crops see them at 1/2-3/4:
#: the downscale hides their compression artefacts; 3/4 keeps the most context).
STAGE_B_JPEG_SCALE = 0.75
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

    def __init__(self, model: pqmim.PQMIM, pool, crop: int, batch: int, seed: int):
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
            x = _to_input(np.ascontiguousarray(img[None, :h, :w]))
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


def _stage_a(model, opt, params, sampler, cfg, run_dir, step, elapsed, save_state,
             progress: dict, resumed: bool) -> int:
    """Autoencoder + product quantizer; returns the step it stopped at."""
    log = base.CsvLog(run_dir / "log_a.csv", LOG_A_COLUMNS,
                      keep_until_step=step if resumed else None)
    model.train()
    acc = np.zeros(6)  # Σ loss, mse, commitment, perplexity, restarts; steps
    t0 = t_mark = time.time()
    start_elapsed = elapsed["a"]
    images = 0
    while step < cfg.steps_a:
        elapsed["a"] = start_elapsed + time.time() - t0
        if cfg.max_minutes_a is not None and elapsed["a"] > 60 * cfg.max_minutes_a:
            break
        x = _to_input(sampler.batch(step))
        lr = learning_rate(step, cfg.lr_a, cfg.warmup_steps, cfg.steps_a)
        for group in opt.param_groups:
            group["lr"] = lr
        out = model(x, generator=_generator(cfg.seed, _QUANTIZER_STREAM, step))
        mse = F.mse_loss(out["x_hat"], x)
        # L_A = MSE + β‖z − sg(e)‖²
        loss = mse + out["commitment_loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
        opt.step()
        acc += [loss.item(), 255.0**2 * mse.item(), out["commitment_loss"].item(),
                float(out["perplexity"]), out["restarts"], 1]
        step += 1
        progress.update(stage="a", step=step)
        images += x.shape[0]
        if step % cfg.log_every == 0 or step == cfg.steps_a:
            t_mark, images = _write_row_a(log, step, start_elapsed + time.time() - t0, lr, acc,
                                          images, t_mark)
        if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.steps_a:
            elapsed["a"] = start_elapsed + time.time() - t0
            save_state("a", step)
    if acc[-1]:
        _write_row_a(log, step, start_elapsed + time.time() - t0, lr, acc, images, t_mark)
    elapsed["a"] = start_elapsed + time.time() - t0
    log.close()
    return step


def _write_row_a(log, step, wall, lr, acc, images, t_mark):
    loss, mse, commit, perp, restarts = acc[:5] / acc[5]
    # PSNR = 10 log10(255² / MSE)
    log.write({"step": step, "wall_s": wall, "lr": lr, "loss": loss, "mse": mse,
               "psnr": 10 * math.log10(255.0**2 / mse), "commitment": commit,
               "perplexity": perp, "restarts": float(restarts),
               "images_per_s": images / max(time.time() - t_mark, 1e-9)})
    acc[:] = 0
    return time.time(), 0


def _stage_b(model, opt, sampler, cfg, run_dir, step, elapsed, save_state, progress: dict,
             resumed: bool) -> int:
    """MIM transformer on frozen codes; counts codes for the independent prior."""
    log = base.CsvLog(run_dir / "log_b.csv", LOG_B_COLUMNS,
                      keep_until_step=step if resumed else None)
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
        masked = pqmim.random_mask(B, h * w * cfg.M, _generator(cfg.seed, _MASK_STREAM, step),
                                   law=cfg.mask_law)
        masked = masked.reshape(B, h, w, cfg.M)
        lr = learning_rate(step, cfg.lr_b, cfg.warmup_steps, cfg.steps_b)
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
            t_mark, images = _write_row_b(log, step, start_elapsed + time.time() - t0, lr, acc,
                                          images, t_mark)
        if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.steps_b:
            elapsed["b"] = start_elapsed + time.time() - t0
            save_state("b", step)
    if acc[-1]:
        _write_row_b(log, step, start_elapsed + time.time() - t0, lr, acc, images, t_mark)
    elapsed["b"] = start_elapsed + time.time() - t0
    log.close()
    model.eval()
    return step


def _write_row_b(log, step, wall, lr, acc, images, t_mark):
    loss, bits, frac = acc[:3] / acc[3]
    log.write({"step": step, "wall_s": wall, "lr": lr, "loss": loss, "bits_per_code": bits,
               "masked_fraction": frac,
               "images_per_s": images / max(time.time() - t_mark, 1e-9)})
    acc[:] = 0
    return time.time(), 0


# ---------------------------------------------------------------------------------------
# Stage C: the perceptual variant (adversarial fine-tuning of g_s)

#: Decoder and discriminator rate: Adam 1e-4 (HiFiC's rate for both networks).
DEFAULT_LR_C = 1e-4
DEFAULT_LR_D = 1e-4
#: Weight of the adversarial term. HiFiC balances β·L_G against a distortion term of the
#: same order; our MSE (0..1 scale) is ~3e-3 at 25 dB and L_G ~0.7 near equilibrium, so
#: w_adv = 2e-3 puts them on the same order. A knob: larger = sharper, lower PSNR.
DEFAULT_ADV_WEIGHT = 2e-3
#: Optional MS-SSIM term w_ms (1 − MS-SSIM); 0 = MSE alone (crops must exceed 160 pixels,
#: MS-SSIM's five scales).
DEFAULT_MS_SSIM_WEIGHT = 0.0
#: Steps of stage C: a fine-tuning, far shorter than stage A; CPU runs set --max-minutes-c.
DEFAULT_STEPS_C = 5_000
#: Version tag of ckpt_c.pt.
PERCEPTUAL_STATE_FORMAT = "nic-repro/pqmim-perceptual-state/1"
#: File names of stage C inside a run folder (distinct from stage A/B's).
STAGE_C_FILES = {"config": "config_c.json", "log": "log_c.csv", "state": "ckpt_c.pt",
                 "final": "final_c.pt"}
#: Settings that may change on a stage-C resume.
RUNTIME_KEYS_C = ("steps_c", "max_minutes_c", "log_every", "ckpt_every", "threads", "export")
LOG_C_COLUMNS = ("step", "wall_s", "lr", "loss_g", "mse", "psnr", "ms_ssim", "adv",
                 "loss_d", "d_real", "d_fake", "images_per_s")
_PERCEPTUAL_STREAM = 0x0C0C  # stage key of the discriminator's initialisation


@dataclasses.dataclass
class PerceptualTrainConfig:
    """Every knob of a stage-C run (saved in config_c.json, ckpt_c.pt and final_c.pt).

    ``source``: a finished run folder (its ``final.pt``) or a PQ-MIM checkpoint.
    ``adv_weight``: w_adv; ``gan_loss``: one of :data:`nic_lib.perceptual.GAN_LOSSES`;
    ``ms_ssim_weight``: w_ms; ``disc_width``/``disc_layers``: the
    :class:`~nic_lib.perceptual.PatchDiscriminator`. The other fields mirror stage A/B's.
    """

    source: str = ""
    adv_weight: float = DEFAULT_ADV_WEIGHT
    gan_loss: str = perceptual.DEFAULT_GAN_LOSS
    ms_ssim_weight: float = DEFAULT_MS_SSIM_WEIGHT
    disc_width: int = perceptual.DISC_WIDTH
    disc_layers: int = perceptual.DISC_LAYERS
    data: tuple[str, ...] = (base.DEFAULT_DATA,)
    crop: int = DEFAULT_CROP
    batch_size: int = DEFAULT_BATCH
    lr_c: float = DEFAULT_LR_C
    lr_d: float = DEFAULT_LR_D
    warmup_steps: int = DEFAULT_WARMUP
    clip_grad_norm: float = DEFAULT_CLIP
    steps_c: int = DEFAULT_STEPS_C
    max_minutes_c: float | None = None
    seed: int = 0
    log_every: int = DEFAULT_LOG_EVERY
    ckpt_every: int = DEFAULT_CKPT_EVERY
    out_dir: str | None = None
    export: str | None = None
    threads: int | None = None


def _source_checkpoint(source: str | Path) -> Path:
    path = Path(source).expanduser()
    file = path / "final.pt" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"--perceptual-from {source}: no PQ-MIM model at {file}; pass a finished run folder "
            "(runs/pqmim-.../ holding final.pt) or a checkpoint such as checkpoints/pqmim/M4-K256.pt "
            "(train one with `python -m nic_lib.train_pqmim --export ...`)")
    return file


def _load_state_c(path: str | Path) -> tuple[dict, Path]:
    path = Path(path).expanduser()
    file = path / STAGE_C_FILES["state"] if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"--resume {path}: no stage-C checkpoint at {file}")
    state = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != PERCEPTUAL_STATE_FORMAT:
        raise ValueError(f"{file} is not a stage-C training checkpoint (format "
                         f"{PERCEPTUAL_STATE_FORMAT!r}); final_c.pt cannot be resumed, ckpt_c.pt can")
    return state, file.parent


def train_perceptual(cfg: PerceptualTrainConfig, resume: str | Path | None = None,
                     overrides: dict | None = None) -> Path:
    """Stage C: fine-tune g_s with distortion + adversarial loss; returns the run folder.

    The encoder, codebooks and MIM model are frozen (and the quantizer in eval mode, so no
    EMA update): codes and bitstreams are those of the source model, and ``final_c.pt``
    records the digest of those frozen weights (:func:`nic_lib.perceptual.state_digest`).

    Args:
        cfg: the configuration (ignored when resuming, except ``overrides``).
        resume: a folder holding ``ckpt_c.pt`` or that file.
        overrides: with ``resume``, new values for :data:`RUNTIME_KEYS_C`.

    Returns:
        The folder holding ``final_c.pt``.

    Raises:
        FileNotFoundError: no source model.
        ValueError: bad settings, an override that changes the maths of a resumed run, or a
            stage-C run already in the output folder (resume it instead).
    """
    threads = torch.get_num_threads()
    try:
        return _train_perceptual(cfg, resume, overrides)
    finally:
        torch.set_num_threads(threads)


def _train_perceptual(cfg: PerceptualTrainConfig, resume, overrides) -> Path:
    state, run_dir = None, None
    if resume is not None:
        state, run_dir = _load_state_c(resume)
        cfg = _resumed_config(PerceptualTrainConfig, state["config"], RUNTIME_KEYS_C, overrides)
    if cfg.ms_ssim_weight and cfg.crop <= 160:
        raise ValueError(f"--ms-ssim-weight needs crops above 160 pixels (MS-SSIM's 5 scales); "
                         f"got --crop {cfg.crop}: use --crop 192 or more, or --ms-ssim-weight 0")
    if cfg.gan_loss not in perceptual.GAN_LOSSES:
        raise ValueError(f"--gan-loss {cfg.gan_loss!r}: choose one of {', '.join(perceptual.GAN_LOSSES)}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    if state is None:
        source = _source_checkpoint(cfg.source)
        model, _ = pqmim.load_pqmim(source)
        source_info = {"source": str(source), "frozen_digest": perceptual.state_digest(
            model.state_dict())}
    else:
        model = pqmim.PQMIM(**state["architecture"])
        model.load_state_dict(state["model"])
        source_info = dict(state["source_info"])
    if cfg.crop % pqmim.DOWNSAMPLING:
        raise ValueError(f"--crop {cfg.crop} must be a multiple of {pqmim.DOWNSAMPLING}")
    model.eval()  # quantizer without EMA updates; g_a, g_s have no batch statistics
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("g_s."))
    decoder = [p for p in model.g_s.parameters()]
    torch.manual_seed(int(np.random.SeedSequence([cfg.seed, _PERCEPTUAL_STREAM]).generate_state(1)[0]))
    disc = perceptual.PatchDiscriminator(cfg.disc_width, cfg.disc_layers).train()
    opt_g = torch.optim.Adam(decoder, lr=cfg.lr_c)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr_d)
    step, elapsed = 0, 0.0
    if state is not None:
        disc.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        step, elapsed = state["step"], state["elapsed_s"]

    if run_dir is None:
        if cfg.out_dir:
            run_dir = Path(cfg.out_dir)
        elif Path(cfg.source).expanduser().is_dir():
            run_dir = Path(cfg.source).expanduser()  # stage C of that run, beside A/B
        else:
            run_dir = base.default_runs_dir() / (
                f"pqmim-M{model.M}-K{model.K}-perceptual-{time.strftime('%Y%m%d-%H%M%S')}")
        if (run_dir / STAGE_C_FILES["state"]).exists():
            raise ValueError(f"{run_dir} already holds a stage-C run; continue it with "
                             f"`python -m nic_lib.train_pqmim --resume {run_dir / STAGE_C_FILES['state']}` "
                             "or pass another --out-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    files = base.training_files(cfg.data)
    pool = base.load_pool(files)
    sampler = base.CropSampler(pool, cfg.crop, cfg.batch_size, cfg.seed)
    info = {"train_images": len(pool.names), "parameters_decoder": sum(p.numel() for p in decoder),
            "parameters_discriminator": sum(p.numel() for p in disc.parameters()),
            "torch": str(torch.__version__), **source_info}
    fileio.atomic_write_text(run_dir / STAGE_C_FILES["config"], json.dumps(
        {"config": dataclasses.asdict(cfg), "resolved": info}, indent=1))

    def save_state(step_now: int) -> None:
        snapshot = {"format": PERCEPTUAL_STATE_FORMAT, "config": dataclasses.asdict(cfg),
                    "architecture": model.architecture(), "source_info": source_info,
                    "step": step_now, "elapsed_s": elapsed, "model": model.state_dict(),
                    "discriminator": disc.state_dict(), "opt_g": opt_g.state_dict(),
                    "opt_d": opt_d.state_dict()}
        with fileio.atomic_path(run_dir / STAGE_C_FILES["state"]) as tmp:
            torch.save(snapshot, tmp)

    log = base.CsvLog(run_dir / STAGE_C_FILES["log"], LOG_C_COLUMNS,
                      keep_until_step=step if state is not None else None)
    acc = np.zeros(9)  # Σ loss_g, mse, ms_ssim, adv, loss_d, d_real, d_fake; steps; images
    t0 = t_mark = time.time()
    start_elapsed = elapsed
    lr = cfg.lr_c
    try:
        while step < cfg.steps_c:
            elapsed = start_elapsed + time.time() - t0
            if cfg.max_minutes_c is not None and elapsed > 60 * cfg.max_minutes_c:
                break
            lr = learning_rate(step, cfg.lr_c, cfg.warmup_steps, cfg.steps_c)
            for group in opt_g.param_groups:
                group["lr"] = lr
            for group in opt_d.param_groups:
                group["lr"] = lr * cfg.lr_d / cfg.lr_c
            acc += _stage_c_step(model, disc, opt_g, opt_d, decoder, _to_input(sampler.batch(step)),
                                 cfg)
            step += 1
            if step % cfg.log_every == 0 or step == cfg.steps_c:
                t_mark = _write_row_c(log, step, start_elapsed + time.time() - t0, lr, acc, t_mark)
            if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.steps_c:
                elapsed = start_elapsed + time.time() - t0
                save_state(step)
        if acc[7]:
            _write_row_c(log, step, start_elapsed + time.time() - t0, lr, acc, t_mark)
        elapsed = start_elapsed + time.time() - t0
        save_state(step)
    except KeyboardInterrupt:
        elapsed = start_elapsed + time.time() - t0
        save_state(step)
        print(f"\ninterrupted in stage C at step {step}; resume with: "
              f"python -m nic_lib.train_pqmim --resume {run_dir / STAGE_C_FILES['state']}")
        raise
    finally:
        log.close()

    final = run_dir / STAGE_C_FILES["final"]
    pqmim.save_pqmim(model.eval(), final, {
        "perceptual": {**source_info, "steps": step, "adv_weight": cfg.adv_weight,
                       "gan_loss": cfg.gan_loss, "ms_ssim_weight": cfg.ms_ssim_weight},
        "train_config_c": {k: list(v) if isinstance(v, tuple) else v
                           for k, v in dataclasses.asdict(cfg).items()},
        "train_info": info, "elapsed_s": elapsed})
    if cfg.export:
        with fileio.atomic_path(Path(cfg.export)) as tmp:
            shutil.copyfile(final, tmp)
    return run_dir


def perceptual_pairs(folder: str | Path | None = None) -> list[tuple[Path, Path]]:
    """(base, perceptual) checkpoint pairs of a folder: same frozen weights, same bitstreams.

    A perceptual checkpoint (``final_c.pt``, exported e.g. as ``M4-K256-perceptual.pt``)
    is paired with the base checkpoint whose weights other than g_s have the digest it
    recorded (:func:`nic_lib.perceptual.state_digest`), whatever the file names.

    Args:
        folder: default :func:`nic_lib.models.pqmim.checkpoint_dir`.

    Returns:
        Pairs sorted by base name; perceptual checkpoints without their base are left out.
    """
    digests = {}
    for path in pqmim.find_checkpoints(folder):
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        digests[perceptual.state_digest(ckpt["state_dict"])] = path
    pairs = []
    for path in pqmim.find_checkpoints(folder, perceptual=True):
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        base_path = digests.get(ckpt["perceptual"].get("frozen_digest"))
        if base_path is not None:
            pairs.append((base_path, path))
    return sorted(pairs)


def _stage_c_step(model, disc, opt_g, opt_d, decoder, x, cfg) -> np.ndarray:
    """One generator step then one discriminator step; returns the log accumulators."""
    with torch.no_grad():  # frozen encoder and codebooks: the codes of the bitstream
        z_q = model.quantizer.dequantize(model.codes(x))
    x_hat = model.g_s(z_q)
    mse = F.mse_loss(x_hat, x)
    ms_ssim = torch.zeros(())
    if cfg.ms_ssim_weight:
        from pytorch_msssim import ms_ssim as _ms_ssim
        ms_ssim = _ms_ssim(x_hat.clamp(0, 1), x, data_range=1.0)
    # D in eval mode here: its spectral norms use their stored vectors without a power
    # iteration, so the generator's pass leaves D's state alone (a Ctrl-C inside it
    # saves the state of the step boundary, and resumes identically)
    disc.eval()
    adv = perceptual.generator_loss(disc(x_hat), cfg.gan_loss)
    disc.train()
    # L_G = MSE + w_ms (1 − MS-SSIM) + w_adv · L_adv
    loss_g = mse + cfg.ms_ssim_weight * (1 - ms_ssim) + cfg.adv_weight * adv
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    if cfg.clip_grad_norm:
        torch.nn.utils.clip_grad_norm_(decoder, cfg.clip_grad_norm)
    opt_g.step()
    # discriminator on originals and (detached) reconstructions, one pass
    logits = disc(torch.cat([x, x_hat.detach()]))
    real, fake = logits[:len(x)], logits[len(x):]
    loss_d = perceptual.discriminator_loss(real, fake, cfg.gan_loss)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    if cfg.clip_grad_norm:
        torch.nn.utils.clip_grad_norm_(disc.parameters(), cfg.clip_grad_norm)
    opt_d.step()
    return np.array([loss_g.item(), 255.0**2 * mse.item(), float(ms_ssim), adv.item(),
                     loss_d.item(), real.mean().item(), fake.mean().item(), 1, len(x)])


def _write_row_c(log, step, wall, lr, acc, t_mark) -> float:
    loss_g, mse, ms_ssim, adv, loss_d, d_real, d_fake = acc[:7] / acc[7]
    # PSNR = 10 log10(255² / MSE)
    log.write({"step": step, "wall_s": wall, "lr": lr, "loss_g": loss_g, "mse": mse,
               "psnr": 10 * math.log10(255.0**2 / mse), "ms_ssim": ms_ssim, "adv": adv,
               "loss_d": loss_d, "d_real": d_real, "d_fake": d_fake,
               "images_per_s": acc[8] / max(time.time() - t_mark, 1e-9)})
    acc[:] = 0
    return time.time()


# ---------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    d = PQMIMTrainConfig()
    p = argparse.ArgumentParser(prog="python -m nic_lib.train_pqmim",
                                argument_default=argparse.SUPPRESS,
                                description="Train PQ-MIM (see the module docstring).")
    a = p.add_argument
    a("--N", type=int, help=f"width of g_a/g_s (default {d.N})")
    a("--latent-dim", type=int, help=f"latent dimension D (default {d.latent_dim})")
    a("--M", type=int, help=f"sub-quantizers (default {d.M})")
    a("--K", type=int, help=f"entries per codebook (default {d.K})")
    a("--width", type=int, help=f"MIM transformer width (default {d.width})")
    a("--layers", type=int, help=f"MIM transformer layers (default {d.layers})")
    a("--heads", type=int, help=f"MIM attention heads (default {d.heads})")
    a("--data", nargs="+", help=f"datasets or folders (default {' '.join(d.data)})")
    a("--crop", type=int, help=f"crop side, multiple of 16 (default {d.crop})")
    a("--batch-size", type=int, help=f"crops per step (default {d.batch_size})")
    a("--lr-a", type=float, help=f"stage A peak rate (default {d.lr_a})")
    a("--lr-b", type=float, help=f"stage B peak rate (default {d.lr_b})")
    a("--weight-decay-b", type=float, help=f"stage B AdamW decay (default {d.weight_decay_b})")
    a("--warmup-steps", type=int, help=f"warm-up steps per stage (default {d.warmup_steps})")
    a("--mask-law", choices=pqmim.MASK_LAWS,
      help=f"stage B masking law; schedule: the coding schedule's (default {d.mask_law})")
    a("--clip-grad-norm", type=float, help=f"0 disables (default {d.clip_grad_norm})")
    a("--steps-a", type=int, help=f"stage A steps (default {d.steps_a})")
    a("--steps-b", type=int, help=f"stage B steps (default {d.steps_b})")
    a("--max-minutes-a", type=float, help="stage A wall-clock cap (default none)")
    a("--max-minutes-b", type=float, help="stage B wall-clock cap (default none)")
    a("--seed", type=int, help=f"seeds init, crops, restarts, masks (default {d.seed})")
    a("--log-every", type=int, help=f"CSV row interval (default {d.log_every})")
    a("--ckpt-every", type=int, help=f"ckpt.pt interval, 0 = end only (default {d.ckpt_every})")
    a("--out-dir", help="run folder (default $NIC_RUNS_DIR or runs/pqmim-M<M>-K<K>-<time>)")
    a("--export", help="copy final.pt here, e.g. checkpoints/pqmim/M4-K256.pt")
    a("--threads", type=int, help="torch CPU threads (default torch's)")
    a("--crop-b", type=int, help="stage B crop side, multiple of 16 (default --crop)")
    a("--batch-size-b", type=int, help="stage B crops per step (default --batch-size)")
    a("--resume", help="run folder or ckpt.pt (stages A/B) or ckpt_c.pt (stage C) to continue "
                       "(its settings are kept)")
    a("--restart-b", action="store_true",
      help="with --resume of a run past stage A, or of an exported checkpoint (then with "
           "--out-dir NEW_FOLDER): train stage B again from scratch on its "
           f"autoencoder; may also change {', '.join('--' + k.replace('_', '-') for k in STAGE_B_KEYS)}")
    c = PerceptualTrainConfig()
    g = p.add_argument_group("stage C, the perceptual variant (with --perceptual-from)")
    g.add_argument("--perceptual-from", dest="source",
                   help="finished run folder or PQ-MIM checkpoint whose g_s is fine-tuned")
    g.add_argument("--steps-c", type=int, help=f"stage C steps (default {c.steps_c})")
    g.add_argument("--max-minutes-c", type=float, help="stage C wall-clock cap (default none)")
    g.add_argument("--adv-weight", type=float, help=f"w_adv (default {c.adv_weight})")
    g.add_argument("--gan-loss", choices=perceptual.GAN_LOSSES,
                   help=f"GAN loss (default {c.gan_loss})")
    g.add_argument("--ms-ssim-weight", type=float,
                   help=f"w_ms of (1 − MS-SSIM), crops > 160 (default {c.ms_ssim_weight})")
    g.add_argument("--lr-c", type=float, help=f"decoder peak rate (default {c.lr_c})")
    g.add_argument("--lr-d", type=float, help=f"discriminator peak rate (default {c.lr_d})")
    g.add_argument("--disc-width", type=int, help=f"discriminator width (default {c.disc_width})")
    g.add_argument("--disc-layers", type=int,
                   help=f"discriminator stride-2 layers (default {c.disc_layers})")
    return p


def main(argv: list[str] | None = None) -> Path:
    """Command-line entry point: ``python -m nic_lib.train_pqmim [flags]``.

    Args:
        argv: flags without the program name; default ``sys.argv[1:]``.

    Returns:
        The run folder.
    """
    given = vars(_parser().parse_args(argv))
    if "data" in given:
        given["data"] = tuple(given["data"])
    given = {k.replace("-", "_"): v for k, v in given.items()}
    resume = given.pop("resume", None)
    restart_b = given.pop("restart_b", False)
    fields_c = {f.name for f in dataclasses.fields(PerceptualTrainConfig)}
    fields_ab = {f.name for f in dataclasses.fields(PQMIMTrainConfig)}
    if resume is not None and _is_stage_c_state(resume):
        return train_perceptual(PerceptualTrainConfig(), resume=resume, overrides=given)
    if "source" in given and resume is None:
        wrong = sorted(set(given) - fields_c)
        if wrong:
            raise SystemExit(f"--perceptual-from fine-tunes an existing model; "
                             f"{', '.join(wrong)} do not apply to stage C")
        return train_perceptual(PerceptualTrainConfig(**given))
    wrong = sorted(set(given) - fields_ab)
    if wrong:
        raise SystemExit(f"{', '.join(wrong)} belong to stage C: add --perceptual-from RUN_OR_CHECKPOINT")
    if restart_b and resume is None:
        raise SystemExit("--restart-b needs --resume RUN_FOLDER (the run whose stage B restarts)")
    if resume is not None:
        return train(PQMIMTrainConfig(), resume=resume, overrides=given, restart_b=restart_b)
    return train(PQMIMTrainConfig(**given))


def _is_stage_c_state(path: str | Path) -> bool:
    """True for a ckpt_c.pt file, or a folder holding ckpt_c.pt but no ckpt.pt."""
    path = Path(path).expanduser()
    if path.is_dir():
        return (path / STAGE_C_FILES["state"]).is_file() and not (path / "ckpt.pt").is_file()
    return path.name == STAGE_C_FILES["state"]


if __name__ == "__main__":
    print(f"run folder: {main()}")
