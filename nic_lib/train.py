"""One training loop for every learned compression model of nic-repro.

Run it from a shell (a GPU is used when present, ``--device auto``)::

    python -m nic_lib.train --model mbt2018 --quality 3 --max-steps 20000 --max-minutes 60
    python -m nic_lib.train --resume runs/mbt2018-q3-20250101-120000        # continue a run
    torchrun --nproc_per_node=2 -m nic_lib.train --model mbt2018 --quality 3  # DDP

or from Python: ``train(TrainConfig(model="mbt2018", quality=3, max_steps=2000))``.

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
(cached as ``.npy`` in the project cache, memory-mapped, so every later run and every DDP
rank starts at once and shares the pages) and cropping from memory in a background thread
instead of decoding files in data-loader processes that compete with the model for the
cores; channels-last tensors; libgomp's default wait policy (see the note on OpenMP below).
``benchmarks/train_throughput.py`` measures the effect against
CompressAI's example loop. ``--compile`` (torch.compile) is off by default: on this
project's 2-core CPU it compiled for about a minute and then ran ~15% faster, worth it
only for runs of thousands of steps.

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
import concurrent.futures
import contextlib
import copy
import csv
import dataclasses
import hashlib
import inspect
import json
import math
import random
import re
import time
import types
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from nic_lib import data, fileio, metrics
from nic_lib.models import checkpoints, registry, variable_rate

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
#: Density pre-fit (``--prefit-densities``): crops whose latents the densities are fitted
#: to, and the learning rates of the densities and of their quantiles. The densities are
#: tiny per-channel MLPs on fixed data, so a rate 10x the network's converges in a few
#: hundred steps; the quantiles start at ±10 (CompressAI's init_scale) and must travel
#: tens of units, hence 5e-2 rather than the 1e-3 of the training loop.
PREFIT_CROPS = 32
PREFIT_LR = 1e-2
PREFIT_AUX_LR = 5e-2
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

#: Datasets that are for evaluation only: training refuses them (and pixel-identical copies).
EVAL_ONLY_DATASETS = ("kodak", "photos-hr", "clic2020-test")
#: Where Kodak comes from for the periodic evaluation (nic_lib.data look-up order).
EVAL_DATASET = "kodak"
#: JPEG sources (the ImageNet sample) are downscaled by a random factor in this range
#: before cropping, which hides their 8x8 block artefacts (Ballé et al. 2018 did the same).
JPEG_DOWNSCALE = (0.5, 0.75)
JPEG_SUFFIXES = (".jpg", ".jpeg")
#: Bumped when the pool's cache layout changes, so old caches are not misread.
POOL_FORMAT = 1
#: Version tag of ckpt.pt, checked on --resume.
TRAIN_STATE_FORMAT = "nic-repro/train-state/1"
#: Keys that may differ on --resume: they change speed or bookkeeping, not the maths.
RUNTIME_KEYS = ("max_steps", "max_minutes", "log_every", "ckpt_every", "eval_every",
                "device", "threads", "compile", "progress")
LOG_COLUMNS = ("step", "wall_s", "lr", "loss", "mse", "psnr", "bpp", "aux_loss", "images_per_s")
EVAL_COLUMNS = ("step", "wall_s", "quality", "lmbda", "images", "loss", "mse", "psnr", "bpp",
                "weights")
#: Streams of the per-step random generators (arbitrary distinct constants).
_ORDER_STREAM, _CROP_STREAM, _NOISE_STREAM = 0xDA7A, 0xC409, 0x4015E

#: MS-SSIM λ per quality, L = λ(1 − MS-SSIM) + bpp: CompressAI's zoo values (the registry's
#: tables are for MSE only).
LAMBDA_MSSSIM = {1: 2.40, 2: 4.58, 3: 8.73, 4: 16.64, 5: 31.73, 6: 60.50, 7: 115.37, 8: 220.00}


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
    each entropy model on one set of frozen transforms).
    ``schedule_clock="time"`` runs the learning-rate schedule on
    ``max(step/max_steps, elapsed/max_minutes)``, so a run cut short by ``--max-minutes``
    still finishes its decay.
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
    freeze: tuple[str, ...] | None = None
    prefit_densities: int = 0
    per_level_hyper_density: bool = False
    tail_gradient: bool = False
    metric: str = "mse"
    data: tuple[str, ...] = (DEFAULT_DATA,)
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
    """λ of a quality in the table of a metric."""
    if metric == "ms-ssim":
        return LAMBDA_MSSSIM[quality]
    return float(registry.LAMBDA_MSE[quality])


def rate_lambda(cfg: TrainConfig) -> float:
    """λ of the run: ``cfg.lmbda`` if set, else the quality table of the metric.

    Args:
        cfg: uses lmbda, quality, metric.

    Returns:
        λ (MSE: the registry's ``LAMBDA_MSE``; MS-SSIM: :data:`LAMBDA_MSSSIM`).
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


def model_config(cfg: TrainConfig) -> dict:
    """The registry configuration of the run's model (what final.pt stores).

    Args:
        cfg: uses model, quality, profile, N/M (width overrides), lmbda, metric.

    Returns:
        ``registry.default_config(model, quality, profile)`` with the run's widths, λ and
        metric.

    Raises:
        KeyError: unknown model. ValueError: bad quality or profile.
    """
    config = registry.default_config(cfg.model, cfg.quality, cfg.profile)
    config.update({k: v for k, v in (("N", cfg.N), ("M", cfg.M)) if v is not None})
    if cfg.context_size is not None:
        if "context_size" not in config:
            raise ValueError(f"--context-size: {cfg.model} has no context model; use it with "
                             "mbt2018, mbt2018-context or mbt2018-gmm")
        config["context_size"] = int(cfg.context_size)
    config.update(lmbda=rate_lambda(cfg), metric=cfg.metric)
    if cfg.qualities:
        lmbdas = rate_lambdas(cfg)
        reference = cfg.reference_lmbda
        if reference is None:
            # geometric mean of the levels' λ: the middle of the range on a log scale
            reference = math.exp(sum(math.log(v) for v in lmbdas) / len(lmbdas))
        config.update(qualities=list(cfg.qualities), lmbdas=lmbdas,
                      reference_lmbda=float(reference), quality=None, lmbda=None)
        if cfg.per_level_hyper_density:
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


def save_final(model: torch.nn.Module, path: Path, cfg: TrainConfig, extra: dict) -> None:
    """Save the trained model in the registry's self-describing format, atomically.

    ``nic_lib.models.load_checkpoint(path)`` rebuilds it; ``config["train_config"]`` holds
    the whole run configuration.

    Args:
        model: the model to save (the EMA copy when EMA is on); a copy gets its entropy
            coder tables built (``update(force=True)``) before saving.
        path: destination file.
        cfg: the run configuration.
        extra: more plain values to store at the top level (step, resolved settings).
    """
    model = copy.deepcopy(model).cpu().to(memory_format=torch.contiguous_format)
    SampleKeyedNoise.remove(model)
    model.update(force=True)
    config = {**model_config(cfg), "train_config": dataclasses.asdict(cfg)}
    checkpoints.save_checkpoint(model, path, config, extra=extra)


#: A run's records that ship beside its checkpoint (as ``<stem>.<name>``).
RUN_RECORDS = ("config.json", "log.csv", "eval.csv")


def copy_run_records(run_dir: Path, dest_dir: Path, stem: str) -> None:
    """Copy a run's :data:`RUN_RECORDS` that exist to ``dest_dir/<stem>.<name>``."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    for name in RUN_RECORDS:
        if (Path(run_dir) / name).is_file():
            fileio.atomic_write_bytes(dest_dir / f"{stem}.{name}",
                                      (Path(run_dir) / name).read_bytes())


def snapshot_final(run_dir: Path, dest: Path) -> Path:
    """Write what ``final.pt`` would hold if the run stopped now, from its ``ckpt.pt``.

    A long run that spans sessions is exported at the end of each one: the EMA weights of
    the last checkpoint (the trained weights when EMA is off), coder tables built, in the
    registry format, so :func:`ship_run`'s float16 export and ``--init-from`` take it. The
    run itself is untouched and resumes as before.

    Args:
        run_dir: a run folder holding ``ckpt.pt``.
        dest: the file to write (atomically); refuses the run's own ``final.pt``.

    Returns:
        ``dest``.

    Raises:
        FileNotFoundError / ValueError: no training checkpoint in ``run_dir``.
    """
    state, run_dir = _load_train_state(run_dir)
    if Path(dest).resolve() == (run_dir / "final.pt").resolve():
        raise ValueError(f"{dest} is the run's own final.pt, written when it finishes; "
                         "snapshot to another path")
    cfg = TrainConfig(**state["config"])
    model = build_model(cfg)
    weights = state["model"]
    if state.get("ema"):  # AveragedModel: 'module.'-prefixed copy + n_averaged
        weights = {k[len("module."):]: v for k, v in state["ema"].items()
                   if k.startswith("module.")}
    SampleKeyedNoise.remove(model)
    model.load_state_dict(weights)
    save_final(model.eval(), Path(dest), cfg,
               {"step": int(state["step"]), "train_info": state.get("resolved"),
                "snapshot_of": str(run_dir)})
    return Path(dest)


def ship_run(run_dir: Path, dest: Path, lineage: list[str]) -> Path:
    """Ship a finished run as a cpu-profile checkpoint: its ``final.pt`` at ``dest`` with
    float16 convolutions, the run's records beside it (:func:`copy_run_records`).

    Args:
        run_dir: the run folder.
        dest: the checkpoint to write (e.g. ``checkpoints/mbt2018/vr.pt``).
        lineage: the runs or checkpoints it descends from, stored as ``lineage``.

    Returns:
        ``dest``.

    Raises:
        FileNotFoundError: the run has no final.pt (it has not finished).
    """
    final = Path(run_dir) / "final.pt"
    if not final.is_file():
        raise FileNotFoundError(f"no {final}: the run has not finished; train it first")
    model, ckpt = checkpoints.load_checkpoint(final)
    extra = {k: v for k, v in ckpt.items() if k not in checkpoints._RESERVED_KEYS}
    extra["lineage"] = list(lineage)
    checkpoints.save_checkpoint(model, dest, ckpt["config"], extra=extra, dtype=torch.float16)
    copy_run_records(run_dir, Path(dest).parent, Path(dest).stem)
    return Path(dest)


# ---------------------------------------------------------------------------------------
# Training data: files -> one uint8 pool (decoded once, cached) -> crops from memory.


def _eval_pixel_hashes() -> dict[str, str]:
    """pixel SHA-256 -> "dataset/file" for every evaluation image with pinned checksums."""
    return {h: f"{name}/{f}" for name in EVAL_ONLY_DATASETS if name in data.DATASETS
            for f, h in data.DATASETS[name].pixel_sha256.items()}


def _eval_dirs() -> list[Path]:
    dirs = []
    for name in EVAL_ONLY_DATASETS:
        try:
            dirs.append(data.dataset_dir(name).resolve())
        except (KeyError, data.DatasetNotFoundError):
            pass
    return dirs


def training_files(sources: tuple[str, ...] | list[str]) -> list[Path]:
    """The image files to train on, refusing evaluation sets.

    Args:
        sources: dataset names of :mod:`nic_lib.data` (``"train"``, ``"train/bsd200"``,
            ``"sample"``) or folders of images.

    Returns:
        Sorted, de-duplicated image paths.

    Raises:
        ValueError: a source is an evaluation set (Kodak, photos-hr, CLIC), lies inside
            one, or holds no images.
        DatasetNotFoundError: a dataset name that cannot be found (message says how).
    """
    files: set[Path] = set()
    for source in sources:
        if source in data.DATASETS:
            if source in EVAL_ONLY_DATASETS:
                raise ValueError(f"--data {source}: {source!r} is an evaluation set and must "
                                 "never be trained on; use --data train (or a folder of your "
                                 "own training images)")
            found = data.list_images(source)
        else:
            folder = Path(source).expanduser().resolve()
            if not folder.is_dir():
                raise ValueError(f"--data {source}: neither a dataset of nic_lib.data "
                                 f"({', '.join(data.DATASETS)}) nor a folder")
            named = [p for p in folder.parts if p.lower() in EVAL_ONLY_DATASETS]
            inside = [d for d in _eval_dirs() if folder == d or d in folder.parents]
            if named or inside:
                raise ValueError(f"--data {source}: folder {folder} is (inside) an evaluation "
                                 "set; training on evaluation images is not allowed. Fix: "
                                 "point --data at training images (e.g. --data train)")
            # the rule data.list_images uses: image suffixes, no hidden files (macOS ._*.jpg)
            found = sorted(p for p in folder.iterdir() if data.is_image_file(p))
        if not found:
            raise ValueError(f"--data {source}: no images found ({', '.join(data.IMAGE_SUFFIXES)})")
        files.update(Path(p).resolve() for p in found)
    return sorted(files)


@dataclasses.dataclass
class ImagePool:
    """Decoded training images in one flat uint8 array (memory-mapped from the cache).

    Attributes:
        pixels: all images, (H, W, 3) C-ordered, concatenated.
        offsets: start of image i in ``pixels``.
        shapes: (H, W) of image i.
        downscale: whether image i is a JPEG to downscale before cropping.
        names: file path of image i.
    """

    pixels: np.ndarray
    offsets: np.ndarray
    shapes: np.ndarray
    downscale: np.ndarray
    names: list[str]

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as an (H, W, 3) uint8 view (no copy)."""
        h, w = self.shapes[i]
        start = self.offsets[i]
        return self.pixels[start:start + h * w * 3].reshape(h, w, 3)


def _pool_key(files: list[Path]) -> str:
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    text = json.dumps({"format": POOL_FORMAT, "files": stats})
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _decode_pool(files: list[Path], target: Path | None) -> tuple[np.ndarray, list]:
    """Decode every file into one uint8 array (written to ``target`` as .npy if given)."""
    sizes = []
    for p in files:
        with Image.open(p) as im:
            w, h = im.size  # EXIF rotation swaps H and W but keeps H*W
            sizes.append(h * w * 3)
    total = int(sum(sizes))
    if target is None:
        pixels = np.empty(total, np.uint8)
    else:
        pixels = np.lib.format.open_memmap(target, mode="w+", dtype=np.uint8, shape=(total,))
    forbidden = _eval_pixel_hashes()
    index, start = [], 0
    for p in tqdm(files, desc="decoding training images", leave=False, mininterval=2):
        img = data.load_image(p)
        digest = data.pixel_sha256(img)
        if digest in forbidden:
            raise ValueError(f"training image {p} has the same pixels as the evaluation image "
                             f"{forbidden[digest]}; remove it from the training folder")
        pixels[start:start + img.size] = img.reshape(-1)
        index.append({"path": str(p), "offset": start, "h": img.shape[0], "w": img.shape[1],
                      "downscale": p.suffix.lower() in JPEG_SUFFIXES})
        start += img.size
    if isinstance(pixels, np.memmap):
        pixels.flush()
    return pixels, index


def load_pool(files: list[Path], cache: Path | None = None) -> ImagePool:
    """Decode training images once into an :class:`ImagePool`, cached on disk.

    The first call decodes every file (checking that none is pixel-identical to an
    evaluation image) and writes ``<cache>/<key>.npy`` + ``.json``; later calls with the same
    files (same paths, sizes and mtimes) memory-map that file instead (instant, and shared
    between processes). Without a writable cache the pool is kept in memory.

    Args:
        files: image files (from :func:`training_files`).
        cache: cache folder; default ``<nic_lib.data.cache_dir()>/train-pool``.

    Returns:
        The pool.

    Raises:
        ValueError: a training image is pixel-identical to a Kodak/photos-hr image.
        ImageLoadError: a file cannot be decoded.
    """
    cache = Path(cache) if cache is not None else data.cache_dir() / "train-pool"
    key = _pool_key(files)
    npy, meta = cache / f"{key}.npy", cache / f"{key}.json"
    if not (npy.is_file() and meta.is_file()):
        with contextlib.ExitStack() as stack:
            try:
                tmp = stack.enter_context(fileio.atomic_path(npy))  # a .npy memory map
            except OSError as err:
                warnings.warn(f"cannot write the pool cache in {cache} ({err}); decoding into "
                              "memory (set NIC_CACHE_DIR to a writable folder to cache it)",
                              stacklevel=2)
                pixels, index = _decode_pool(files, None)
                return _pool_from(pixels, index)
            pixels, index = _decode_pool(files, tmp)
            del pixels
        fileio.atomic_write_text(meta, json.dumps(index))
    index = json.loads(meta.read_text())
    return _pool_from(np.load(npy, mmap_mode="r"), index)


def _pool_from(pixels: np.ndarray, index: list[dict]) -> ImagePool:
    return ImagePool(pixels=pixels,
                     offsets=np.array([e["offset"] for e in index], np.int64),
                     shapes=np.array([(e["h"], e["w"]) for e in index], np.int64),
                     downscale=np.array([e["downscale"] for e in index], bool),
                     names=[e["path"] for e in index])


class CropSampler:
    """Global batches of random crops whose content depends only on (seed, step).

    Image order: one random permutation of the usable images per epoch (every image once
    per epoch, as CompressAI's ImageFolder), seeded by (seed, epoch). Crop position and
    JPEG downscale factor: uniform, seeded by (seed, step). Rank ``r`` of ``W`` takes rows
    ``r·B .. (r+1)·B − 1`` of the global batch of ``W·B`` crops.
    """

    def __init__(self, pool: ImagePool, crop: int, global_batch: int, seed: int):
        """Args:
            pool: decoded training images.
            crop: side of the square crops, in pixels.
            global_batch: crops per step over all ranks.
            seed: run seed.

        Raises:
            ValueError: no image is at least ``crop`` pixels on its shorter side.
        """
        self.pool, self.crop, self.global_batch, self.seed = pool, crop, global_batch, seed
        self.usable = np.flatnonzero(pool.shapes.min(axis=1) >= crop)
        self.skipped = len(pool.names) - len(self.usable)
        if not len(self.usable):
            raise ValueError(f"no training image has both sides >= --crop {crop} px; "
                             "use a smaller --crop")
        self._epoch, self._perm = -1, None

    def _image_index(self, k: int) -> int:
        """Pool index of the k-th crop of the run (k counts over all steps and ranks)."""
        n = len(self.usable)
        epoch = k // n
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch, _ORDER_STREAM])
            self._epoch, self._perm = epoch, rng.permutation(n)
        return int(self.usable[self._perm[k % n]])

    def _crop(self, i: int, u: np.ndarray) -> np.ndarray:
        img, c = self.pool.image(i), self.crop
        h, w = img.shape[:2]
        win = c
        if self.pool.downscale[i]:
            # downscale by s ~ U[0.5, 0.75], but never below the crop: s >= c / min(H, W).
            # Cropping a c/s window and resizing it to c equals downscaling the whole image
            # by s and cropping c (up to the filter's reach at the window border), for a
            # fraction of the cost.
            lo = max(JPEG_DOWNSCALE[0], c / min(h, w))
            hi = max(JPEG_DOWNSCALE[1], lo)
            s = lo + u[2] * (hi - lo)
            win = min(h, w, int(round(c / s)))
        y = int(u[0] * (h - win + 1))
        x = int(u[1] * (w - win + 1))
        patch = img[y:y + win, x:x + win]
        if win != c:
            patch = np.asarray(Image.fromarray(np.ascontiguousarray(patch))
                               .resize((c, c), Image.Resampling.BICUBIC))
        return patch

    def batch(self, step: int, rank: int = 0, world: int = 1) -> np.ndarray:
        """This rank's share of the global batch of a step.

        Args:
            step: training step (0-based).
            rank, world: DDP rank and world size (``global_batch`` must divide by ``world``).

        Returns:
            uint8 array (global_batch / world, crop, crop, 3).
        """
        per_rank = self.global_batch // world
        u = np.random.default_rng([self.seed, step, _CROP_STREAM]).random((self.global_batch, 3))
        rows = range(rank * per_rank, (rank + 1) * per_rank)
        out = np.empty((per_rank, self.crop, self.crop, 3), np.uint8)
        for j, row in enumerate(rows):
            out[j] = self._crop(self._image_index(step * self.global_batch + row), u[row])
        return out


# ---------------------------------------------------------------------------------------
# Quantization noise keyed by sample


class SampleKeyedNoise:
    """Uniform noise U(−½, ½) that depends only on (seed, step, sample, draw).

    CompressAI's entropy models add ``torch.empty_like(x).uniform_(-0.5, 0.5)`` during
    training, drawn from the process's global generator for the whole batch at once, so the
    noise a given image receives depends on how the batch is split across ranks. This class
    replaces that one line on the given model's instances (``EntropyModel.quantize`` in
    "noise" mode, and ``CheckerboardLatentCodec.quantize`` in training; other modes are
    untouched): the noise of row j of the global batch at draw d (the d-th noisy
    quantization in the forward pass) comes from its own seeded generator. Written by hand
    because CompressAI has no hook for the noise source.
    """

    def __init__(self, model: torch.nn.Module, seed: int):
        """Args:
            model: the model whose entropy models / latent codecs to patch.
            seed: run seed.
        """
        from compressai.entropy_models import EntropyBottleneck, EntropyModel
        from compressai.latent_codecs import CheckerboardLatentCodec

        self.seed, self.step, self.rows, self.draws = seed, 0, None, 0
        self._generators: dict = {}
        for module in model.modules():
            if isinstance(module, EntropyModel):
                batch_dim = 1 if isinstance(module, EntropyBottleneck) else 0
                module.quantize = self._patched(module.quantize, batch_dim)
            elif isinstance(module, CheckerboardLatentCodec):
                # it calls EntropyModel.quantize(None, ...), bypassing the instances above
                module.quantize = self._patched_codec(module)

    @staticmethod
    def remove(model: torch.nn.Module) -> None:
        """Undo the patch on a model (or a copy of a patched model)."""
        for module in model.modules():
            module.__dict__.pop("quantize", None)

    def begin_step(self, step: int, rows: range) -> None:
        """Declare the step and which rows of the global batch this process holds."""
        self.step, self.rows, self.draws = step, list(rows), 0

    def _patched(self, original, batch_dim: int):
        def quantize(inputs, mode, means=None):
            if mode != "noise" or self.rows is None:
                return original(inputs, mode, means)
            return inputs + self._noise_like(inputs, batch_dim)
        return quantize

    def _patched_codec(self, codec):
        original = codec.quantize

        def quantize(y):
            if not codec.training or self.rows is None:
                return original(y)
            return y + self._noise_like(y, 0)
        return quantize

    def _noise_like(self, x: torch.Tensor, batch_dim: int) -> torch.Tensor:
        draw, self.draws = self.draws, self.draws + 1
        gen = self._generators.get(x.device)
        if gen is None:
            gen = self._generators[x.device] = torch.Generator(device=x.device)
        n = len(self.rows)
        layout_ok = (x.shape[1] == 1 and x.shape[2] % n == 0) if batch_dim == 1 else x.shape[0] == n
        if not layout_ok:
            raise RuntimeError(f"sample-keyed noise cannot tell the batch rows of a "
                               f"{tuple(x.shape)} tensor ({n} images); train this model with "
                               "--noise global")
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # contiguous: views below
        # EntropyBottleneck quantizes a (C, 1, N·H·W) view of (C, N, H, W); others (N, C, H, W).
        view = out.reshape(x.shape[0], n, -1) if batch_dim == 1 else out.reshape(n, -1)
        for j, row in enumerate(self.rows):
            key = np.random.SeedSequence([self.seed, self.step, row, draw, _NOISE_STREAM])
            gen.manual_seed(int(key.generate_state(1)[0]))
            target = view[:, j] if batch_dim == 1 else view[j]
            # u ~ U[0, 1) - 1/2 = U[-1/2, 1/2)
            target.copy_(torch.rand(target.shape, generator=gen, device=x.device,
                                    dtype=x.dtype) - 0.5)
        return out


# ---------------------------------------------------------------------------------------
# Loss, learning rate, evaluation


def rd_loss(out: dict, x: torch.Tensor, lmbda: float, metric: str) -> dict:
    """Rate-distortion loss of one batch (CompressAI's RateDistortionLoss convention).

    Args:
        out: model output ``{"x_hat", "likelihoods": {name: tensor}}``.
        x: the input batch on the 0..1 scale, (N, 3, H, W).
        lmbda: λ, the rate-distortion trade-off.
        metric: "mse" or "ms-ssim".

    Returns:
        ``{"loss", "bpp", "mse"}``: the loss to minimise, the estimated rate in bits per
        pixel and the MSE on the 0..255 scale (detached, for logging).
    """
    from compressai.losses import RateDistortionLoss

    # bpp = Σ_k Σ_i −log2 p_k,i / (N·H·W)
    # mse: L = λ·255²·MSE(x_hat, x) + bpp ;  ms-ssim: L = λ·(1 − MS-SSIM(x_hat, x)) + bpp
    terms = RateDistortionLoss(lmbda=lmbda, metric=metric)(out, x)
    mse01 = terms.get("mse_loss")
    if mse01 is None:
        mse01 = F.mse_loss(out["x_hat"].detach(), x)
    # MSE on the 0..255 scale = 255² · MSE on the 0..1 scale
    return {"loss": terms["loss"], "bpp": terms["bpp_loss"], "mse": 255.0**2 * mse01.detach()}


def learning_rate(step: int, cfg: TrainConfig, elapsed_s: float | None = None) -> float:
    """Learning rate of a step: linear warm-up, then cosine, step decay or constant.

    Args:
        step: 0-based step.
        cfg: uses lr, warmup_steps, lr_schedule, lr_decay_steps (default max_steps),
            min_lr_ratio, lr_milestones, lr_gamma, schedule_clock, max_minutes.
        elapsed_s: training seconds so far (used by ``schedule_clock="time"``).

    Returns:
        The rate for that step.
    """
    if step < cfg.warmup_steps:
        # lr_t = lr · (t + 1) / T_warmup
        return cfg.lr * (step + 1) / cfg.warmup_steps
    horizon = cfg.lr_decay_steps or cfg.max_steps
    t_steps = (step - cfg.warmup_steps) / max(1, horizon - cfg.warmup_steps)
    t_time = 0.0
    if cfg.schedule_clock == "time" and cfg.max_minutes and elapsed_s is not None:
        # progress on the wall clock, so a slower machine still ends the decay in time
        t_time = elapsed_s / (60.0 * cfg.max_minutes)
    if cfg.lr_schedule == "cosine":
        t = min(1.0, max(t_steps, t_time))
        lr_min = cfg.lr * cfg.min_lr_ratio
        # lr_t = lr_min + ½ (lr − lr_min)(1 + cos(π t)),  t = progress after warm-up in [0, 1]
        return lr_min + 0.5 * (cfg.lr - lr_min) * (1.0 + math.cos(math.pi * t))
    if cfg.lr_schedule == "step":
        passed = sum(max(step / horizon, t_time) >= m for m in cfg.lr_milestones)
        # lr_t = lr · γ^(number of milestones passed)
        return cfg.lr * cfg.lr_gamma**passed
    return cfg.lr


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


# ---------------------------------------------------------------------------------------
# Files: checkpoints, CSV logs (written atomically with nic_lib.fileio)


class CsvLog:
    """A CSV file written row by row and flushed after each row (readable while training)."""

    def __init__(self, path: Path, columns: tuple[str, ...], keep_until_step: int | None = None):
        """Args:
            path: the CSV file.
            columns: header.
            keep_until_step: on resume, rows with a larger ``step`` are dropped first
                (they were logged after the checkpoint and will be logged again).
        """
        self.columns = columns
        if keep_until_step is not None and path.is_file():
            with open(path, newline="") as f:
                kept = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_until_step]
            # a file from an older version may lack a column: left empty
            lines = [",".join(columns)] + [",".join(r.get(c) or "" for c in columns)
                                           for r in kept]
            fileio.atomic_write_text(path, "\n".join(lines) + "\n")
        new = not path.is_file()
        self._file = open(path, "a", newline="")
        self._writer = csv.writer(self._file)
        if new:
            self._writer.writerow(columns)
            self._file.flush()

    def write(self, row: dict) -> None:
        """Append one row (floats with 7 significant digits) and flush."""
        self._writer.writerow([f"{row[c]:.7g}" if isinstance(row[c], float) else row[c]
                               for c in self.columns])
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def default_runs_dir() -> Path:
    """``$NIC_RUNS_DIR``, else ``runs/`` at the repository root (git-ignored)."""
    return Path(os.environ.get("NIC_RUNS_DIR") or data.REPO_ROOT / "runs").expanduser()


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _load_train_state(path: str | os.PathLike) -> tuple[dict, Path]:
    path = Path(path).expanduser()
    file = path / "ckpt.pt" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"--resume {path}: no checkpoint at {file}; pass a run folder "
                                "holding ckpt.pt (runs/<name>/) or the ckpt.pt file itself")
    state = torch.load(file, map_location="cpu", weights_only=False)  # our own file
    if state.get("format") != TRAIN_STATE_FORMAT:
        raise ValueError(f"{file} is not a training checkpoint of nic_lib.train "
                         f"(format {state.get('format')!r}); final.pt cannot be resumed, "
                         "ckpt.pt can")
    return state, file.parent


# ---------------------------------------------------------------------------------------
# The loop


def _setup_distributed(cfg: TrainConfig) -> tuple[int, int, torch.device]:
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


#: Prefixes under which CompressAI's latent-codec models (the checkerboard model) hold
#: the layers a plain model keeps at the top level (h_a, h_s, entropy_parameters, ...).
WARM_START_PREFIXES = ("latent_codec.hyper.", "latent_codec.y.y.", "latent_codec.y.")


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


def _under(name: str, prefixes) -> bool:
    """True when a parameter name lies under one of the module-name prefixes."""
    return any(name == p or name.startswith(p.rstrip(".") + ".") for p in prefixes)


def warm_start(model: torch.nn.Module, path: str | os.PathLike, only=None) -> dict:
    """Copy into ``model`` every tensor of a checkpoint whose name and shape match.

    A warm start, not a resume: optimizer, schedule and step start afresh. Used to begin
    a variable-rate model from a fixed-rate one (the gain units are new), or an ablation
    from the joint model (shared transforms; new entropy-model layers keep their
    initialisation).

    Args:
        model: the freshly built model.
        path: a run's ``final.pt`` (registry checkpoint) or ``ckpt.pt`` (training state).
        only: module-name prefixes (``("g_a", "g_s")``); when given, only tensors under
            them are copied and everything else keeps its fresh initialisation.

    Returns:
        ``{"path", "loaded", "resized", "new", "skipped"}``: counts of tensors copied (of
        which ``resized``: context kernels cropped or padded to another context size, see
        :func:`_resize_kernel`), tensors the checkpoint lacked, and checkpoint tensors that
        did not fit (name or shape).

    Raises:
        ValueError: the file holds no state dict.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    weights = state.get("state_dict") or state.get("model") if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise ValueError(f"{path} holds no model weights (expected a run's final.pt or ckpt.pt)")
    own = model.state_dict()
    resized = 0
    # coder tables are rebuilt by update(), and a context model's mask belongs to the
    # architecture (raster vs checkerboard): neither is copied
    fixed = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table", ".mask")
    fits, used = {}, set()
    for key, tensor in own.items():
        if key.endswith(fixed) or (only and not _under(key, only)):
            continue
        # CompressAI's latent-codec models nest the same layers one level down
        candidates = [key] + [key[len(p):] for p in WARM_START_PREFIXES if key.startswith(p)]
        if hasattr(model, "h_a"):
            # per-level hyperprior densities start from the source's shared one
            candidates += [re.sub(r"\.bottlenecks\.\d+\.", ".", c) for c in list(candidates)]
        for source in candidates:
            if source not in weights:
                continue
            if weights[source].shape == tensor.shape:
                fits[key] = weights[source].to(tensor.dtype)
            elif CONTEXT_KERNEL_KEY in key and _resizable_kernel(weights[source], tensor):
                fits[key] = _resize_kernel(weights[source], tensor.shape[-1]).to(tensor.dtype)
                resized += 1
            else:
                continue
            used.add(source)
            break
    model.load_state_dict({**own, **fits})
    return {"path": str(path), "loaded": len(fits), "resized": resized,
            "new": len([k for k in own if k not in fits and not k.endswith(fixed)]),
            "skipped": len([k for k in weights if k not in used and not k.endswith(fixed)])}


#: State-dict keys of the masked context convolution, whose kernel side is the context-size
#: ablation's parameter (3, 5, 7): warm_start crops or zero-pads it around its centre.
CONTEXT_KERNEL_KEY = "context_prediction.weight"


def _resizable_kernel(source: torch.Tensor, target: torch.Tensor) -> bool:
    """Same channels, square odd kernels of another side."""
    return (source.dim() == target.dim() == 4 and source.shape[:2] == target.shape[:2]
            and source.shape[2] == source.shape[3] and target.shape[2] == target.shape[3]
            and source.shape[2] % 2 == 1 and target.shape[2] % 2 == 1)


def _resize_kernel(weight: torch.Tensor, side: int) -> torch.Tensor:
    """Centre-crop or zero-pad a (C_out, C_in, k, k) kernel to (C_out, C_in, side, side).

    The masked convolution reads the causal half of its window, centred on the current
    latent. Zero-padding a k=5 kernel to 7 gives exactly the same function (the new taps
    start at zero); cropping to 3 keeps the nearest neighbours' taps, the ones that
    carry most of the context. Either way the ablation starts from the trained model
    rather than from a random context model.
    """
    k = weight.shape[-1]
    if side >= k:
        p = (side - k) // 2
        return torch.nn.functional.pad(weight, (p, p, p, p))
    c = (k - side) // 2
    return weight[..., c:c + side, c:c + side].clone()


def prefit_densities(model: torch.nn.Module, x: torch.Tensor, steps: int,
                     lr: float = PREFIT_LR, aux_lr: float = PREFIT_AUX_LR) -> list[dict]:
    """Fit each level's factorized density of a variable-rate model to its latents.

    A variable-rate ``bmshj2018-factorized`` gets one new
    :class:`~nic_lib.models.variable_rate.LeveledEntropyBottleneck` density of ``y`` per
    level (its warm-start source has none for ``y``); a hyperprior model built with
    ``per_level_hyper_density`` gets one density of ``z`` per level. Trained inside the
    main loop, each level's density sees a sixth of the steps at the network's small
    learning rate, and 7 minutes left the factorized prior's near their initialisation
    (~2 bpp at every level). Here the transforms are frozen and each level's density is
    fitted alone by maximum likelihood on the noisy latents it codes (``y_l = g_a(x) ⊙ γ_l``
    for the factorized prior, ``z_l = h_a(·)`` of them for a hyperprior) of a fixed set
    of crops,

        min_ψ  E[ −log2 p_ψ(v_l + u) ] ,  u ~ U(−½, ½)

    together with its quantiles (CompressAI's aux loss), before ordinary training starts.

    Args:
        model: a variable-rate model whose ``entropy_bottleneck`` is leveled.
        x: crops (B, 3, H, W) on 0..1.
        steps: Adam steps per level.
        lr, aux_lr: learning rates of the density parameters and of the quantiles.

    Returns:
        Per level: ``{"level", "bits_per_latent_start", "bits_per_latent_end", "aux_loss_end"}``.

    Raises:
        ValueError: the model has no per-level densities to fit.
    """
    leveled = getattr(model, "entropy_bottleneck", None)
    if not (variable_rate.is_variable_rate(model)
            and isinstance(leveled, variable_rate.LeveledEntropyBottleneck)):
        raise ValueError("--prefit-densities applies to variable-rate models with per-level "
                         "densities (bmshj2018-factorized, or a hyperprior model with "
                         "--per-level-hyper-density); drop it for other models")
    # what each level's density codes: the input of the bottleneck in the model's forward
    seen: list[torch.Tensor] = []
    hook = leveled.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    level0, was_training = model.gain.level, model.training
    try:
        model.eval()
        with torch.no_grad():
            for level in range(len(leveled.bottlenecks)):
                variable_rate.set_rate_level(model, level)
                model(x)
    finally:
        hook.remove()
        variable_rate.set_rate_level(model, level0)
        model.train(was_training)
    report = []
    for level, (bottleneck, v) in enumerate(zip(leveled.bottlenecks, seen, strict=True)):
        params = [p for n, p in bottleneck.named_parameters() if not n.endswith("quantiles")]
        opt = torch.optim.Adam(params, lr=lr)
        aux_opt = torch.optim.Adam([bottleneck.quantiles], lr=aux_lr)
        first = last = float("nan")
        for step in range(steps):
            _, likelihood = bottleneck(v, training=True)
            # bits per latent = mean of −log2 p(ṽ)
            bits = -torch.log2(likelihood).mean()
            opt.zero_grad(set_to_none=True)
            bits.backward()
            opt.step()
            aux = bottleneck.loss()
            aux_opt.zero_grad(set_to_none=True)
            aux.backward()
            aux_opt.step()
            first = float(bits.detach()) if step == 0 else first
            last = float(bits.detach())
        report.append({"level": level, "bits_per_latent_start": first,
                       "bits_per_latent_end": last, "aux_loss_end": float(bottleneck.loss().detach())})
    return report


@torch.no_grad()
def _aux_total(model: torch.nn.Module) -> float:
    from compressai.entropy_models import EntropyBottleneck

    return float(sum(m.loss() for m in model.modules() if isinstance(m, EntropyBottleneck)))


def settle_quantiles(model: torch.nn.Module, steps: int = 5000, lr: float = PREFIT_AUX_LR,
                     tol: float = 1e-2) -> dict:
    """Place every factorized density's quantiles where its trained density puts them.

    CompressAI's coder covers each channel of a factorized density between two quantiles
    (values outside are escaped, at a cost the likelihood does not show). They are trained
    by the aux loss alone, Σ |logit F(q_k) − t_k| with t = (−log(2/ε − 1), 0, log(2/ε − 1)),
    which depends on the density, not on data. They start at ±10 and move at the aux
    learning rate, so a short run (a fresh entropy model trained 2,000 steps at 1e-3)
    leaves them far from their place. This finishes that optimisation with the densities
    fixed: the densities (the likelihood of y + u in training) do not change; the coder's
    range does (its tables are rebuilt with ``update(force=True)``), and so does its
    rounding offset, since CompressAI rounds a factorized latent around the middle
    quantile m (ŷ = round(y − m) + m), which moves to the density's median.

    Args:
        model: a CompressAI model (any number of EntropyBottleneck modules).
        steps: most Adam steps; stops early when the aux loss is below ``tol``.
        lr: Adam learning rate of the quantiles.
        tol: aux loss (summed over every bottleneck) to stop at.

    Returns:
        ``{"aux_loss_before", "aux_loss_after", "steps"}``.
    """
    from compressai.entropy_models import EntropyBottleneck

    bottlenecks = [m for m in model.modules() if isinstance(m, EntropyBottleneck)]
    before = _aux_total(model)
    if not bottlenecks:
        return {"aux_loss_before": before, "aux_loss_after": before, "steps": 0}
    quantiles = [b.quantiles for b in bottlenecks]
    flags = [q.requires_grad for q in quantiles]
    frozen = [p for p in model.parameters() if p.requires_grad and
              not any(p is q for q in quantiles)]
    for p in frozen:
        p.requires_grad_(False)
    for q in quantiles:
        q.requires_grad_(True)
    opt = torch.optim.Adam(quantiles, lr=lr)
    step = 0
    try:
        with torch.enable_grad():
            for step in range(1, steps + 1):
                loss = sum(b.loss() for b in bottlenecks)
                if loss.item() < tol:
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
        for q, flag in zip(quantiles, flags):
            q.requires_grad_(flag)
    model.update(force=True)
    return {"aux_loss_before": before, "aux_loss_after": _aux_total(model), "steps": step}


def tail_gradient(model: torch.nn.Module) -> int:
    """Give the Gaussian rate term a gradient beyond the likelihood floor (``--tail-gradient``).

    CompressAI's likelihood of a quantized latent ŷ under N(μ, σ²),

        p(ŷ) = Φ(a) − Φ(b) ,  a = (½ − |ŷ − μ|)/σ ,  b = (−½ − |ŷ − μ|)/σ ,

    is clamped below at 1e-9 (29.9 bits). A latent far in the tail (|ŷ − μ| ≳ 6σ) has
    p below the floor, and there its gradient all but vanishes (measured ~1e-6 of the
    exact one): Φ's tail underflows in float32, and the floor is a constant. Training can then never learn to widen σ for it; such
    latents stay overconfident however long the model trains (measured on the scale
    hyperprior by ``benchmarks/hyperprior_tails.py``: ~1% of its latents at quality 6,
    13σ out at the median). This keeps the value CompressAI computes (so the estimated bits
    are unchanged) but gives it the gradient of the exact log-likelihood, computed in log
    space where the tail does not underflow,

        log p = log Φ(a) + log(1 − exp(log Φ(b) − log Φ(a))) ,
        p̃ = p                                  if p > floor
        p̃ = floor · exp(log p − sg[log p])     otherwise  (value: floor; gradient: floor · ∇log p)

    so −log2 p̃ pulls σ (and μ) toward the outlier with the force of its true cost.
    Patches every ``GaussianConditional`` of the model in place (an instance attribute;
    the state dict is unchanged, so a saved model carries no trace of it).

    Args:
        model: a model whose rate goes through CompressAI ``GaussianConditional`` modules.

    Returns:
        How many modules were patched.

    Raises:
        ValueError: the model has no ``GaussianConditional``.
    """
    from compressai.entropy_models import GaussianConditional

    patched = 0
    for module in model.modules():
        if isinstance(module, GaussianConditional):
            module._likelihood = types.MethodType(_tail_gradient_likelihood, module)
            patched += 1
    if not patched:
        raise ValueError(f"--tail-gradient: {type(model).__name__} has no Gaussian conditional "
                         "(it applies to the hyperprior, mean-scale, context and joint models)")
    return patched


def _tail_gradient_likelihood(self, inputs: torch.Tensor, scales: torch.Tensor,
                              means: torch.Tensor | None = None) -> torch.Tensor:
    """``GaussianConditional._likelihood`` with the tail gradient of :func:`tail_gradient`."""
    values = (inputs - means if means is not None else inputs).abs()
    scales = self.lower_bound_scale(scales)
    log_upper = torch.special.log_ndtr((0.5 - values) / scales)
    log_lower = torch.special.log_ndtr((-0.5 - values) / scales)
    # log(Φ(a) − Φ(b)) = log Φ(a) + log(−expm1(log Φ(b) − log Φ(a)))
    log_p = log_upper + torch.log(-torch.expm1(log_lower - log_upper).clamp(max=-1e-30))
    floor = self.likelihood_lower_bound.bound.to(log_p.dtype)
    below = floor * torch.exp(log_p - log_p.detach())
    return torch.where(log_p > torch.log(floor), torch.exp(log_p), below)


#: Training forward precisions (``--precision``).
PRECISIONS = ("fp32", "bf16")
#: The networks ``--precision bf16`` runs under bfloat16 autocast: every convolution
#: stack of the model. The entropy bottleneck and the Gaussian conditional are not among
#: them, so densities, likelihoods and the loss stay in float32.
REDUCED_PRECISION_MODULES = ("g_a", "g_s", "h_a", "h_s", "context_prediction",
                             "entropy_parameters")


@contextlib.contextmanager
def reduced_precision(model: torch.nn.Module, precision: str = "fp32", device_type: str = "cpu"):
    """The model's networks compute in bfloat16 inside this block; everything else in float32.

    Mixed precision as on accelerators: parameters, gradients and optimizer state stay
    float32; only the forward of the networks in :data:`REDUCED_PRECISION_MODULES` runs
    under ``torch.autocast(bfloat16)`` (convolutions in bfloat16), and each network's output
    is cast back to float32, so that the densities of y and z, the likelihoods, the bits and
    the distortion are computed exactly as in fp32. On a CPU with AMX or AVX512-BF16
    (oneDNN) a training step of mbt2018 (128² crops, batch 8, one thread) is 2.0× faster at
    N = 64, M = 192 and 2.5× at N = 96 (``benchmarks/precision_throughput.py``: 0.39 → 0.19
    and 0.58 → 0.23 s/step, alternating in one process on a loaded machine). Used for the
    training forward only: evaluation, ``update()`` and the entropy coder never see it.

    Implemented with a forward pre-hook (enter autocast) and a forward hook (leave it, cast
    the output) on each network, removed when the block ends, so the model's state dict and
    code are untouched. Hooks already on those networks (the gain units of
    :mod:`nic_lib.models.variable_rate`) keep working: elementwise products are not
    autocast and promote to float32.

    Args:
        model: the training model (unwrapped: DDP / compile wrappers call into it).
        precision: ``"fp32"`` (a no-op) or ``"bf16"``.
        device_type: ``"cpu"`` or ``"cuda"``, for ``torch.autocast``.
    """
    if precision == "fp32":
        yield
        return
    if precision != "bf16":
        raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    handles, active = [], []

    def enter(module, args):
        ctx = torch.autocast(device_type, dtype=torch.bfloat16)
        ctx.__enter__()
        active.append(ctx)

    def leave(module, args, output):
        active.pop().__exit__(None, None, None)
        return output.float()

    for name in REDUCED_PRECISION_MODULES:
        net = getattr(model, name, None)
        if isinstance(net, torch.nn.Module):
            handles += [net.register_forward_pre_hook(enter), net.register_forward_hook(leave)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        while active:  # a forward that raised left its autocast open
            active.pop().__exit__(None, None, None)


def _check(cfg: TrainConfig, world: int, resuming: bool = False) -> None:
    if cfg.batch_size % world:
        raise ValueError(f"--batch-size {cfg.batch_size} is the global batch and must divide "
                         f"by the {world} ranks; pass a multiple of {world}")
    if cfg.metric not in ("mse", "ms-ssim"):
        raise ValueError(f"--metric {cfg.metric}: use mse or ms-ssim")
    if cfg.metric == "ms-ssim" and cfg.crop < metrics.MS_SSIM_MIN_SIDE:
        raise ValueError(f"--metric ms-ssim needs --crop >= {metrics.MS_SSIM_MIN_SIDE} "
                         f"(5 scales of an 11-tap filter), got {cfg.crop}")
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
    # a resumed run restores its weights from ckpt.pt: its warm-start source may be gone
    if cfg.init_from is not None and not resuming and not Path(cfg.init_from).is_file():
        raise ValueError(f"--init-from {cfg.init_from}: no such file (give a run's final.pt "
                         "or ckpt.pt)")


def train(cfg: TrainConfig, resume: str | os.PathLike | None = None,
          overrides: dict | None = None) -> Path:
    """Train a model; returns its run folder (see the module docstring for its files).

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
    state, run_dir = (None, None)
    if resume is not None:
        state, run_dir = _load_train_state(resume)
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
    rank, world, device = _setup_distributed(cfg)
    _check(cfg, world, resuming=state is not None)
    master = rank == 0
    # one compute thread per core, cores shared between the ranks of this machine
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // local_world))
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: autotune the convolutions

    # -- model, optimizers (seeded: every rank builds the same initial weights) --
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
    lmbda = rate_lambda(cfg)
    lmbdas = rate_lambdas(cfg)  # [] unless variable-rate
    warm = (warm_start(model, cfg.init_from, only=cfg.init_only)
            if (cfg.init_from and state is None) else None)
    named = dict(model.named_parameters())
    for prefix in cfg.freeze or ():
        if not any(_under(n, [prefix]) for n in named):
            raise ValueError(f"--freeze {prefix}: {cfg.model} has no parameters under that name; "
                             f"its modules: {', '.join(sorted({n.split('.')[0] for n in named}))}")
    frozen = [n for n in named if cfg.freeze and _under(n, cfg.freeze)]
    for n in frozen:
        named[n].requires_grad_(False)
    aux_names = sorted(n for n in named if n.endswith(".quantiles") and n not in frozen)
    net_params = [p for n, p in named.items() if n not in aux_names and n not in frozen]
    optimizer = torch.optim.Adam(net_params, lr=cfg.lr)
    # models without a factorized density (context-only) have no quantiles to place
    aux_optimizer = (torch.optim.Adam([named[n] for n in aux_names], lr=cfg.aux_lr)
                     if aux_names else _NoOptimizer())
    ema = None
    if cfg.ema and master:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        # θ_ema ← d·θ_ema + (1 − d)·θ
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema))
    noise = SampleKeyedNoise(model, cfg.seed) if cfg.noise == "sample" else None
    if cfg.tail_gradient:
        tail_gradient(model)  # training's gradient only: values (and the EMA copy) unchanged

    start_step, elapsed0 = 0, 0.0
    acc = torch.zeros(5, dtype=torch.float64, device=device)  # Σ loss, mse, bpp, aux; steps
    one = torch.ones((), device=device)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        aux_optimizer.load_state_dict(state["aux_optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        start_step, elapsed0 = state["step"], state["elapsed_s"]
        acc = state["log_acc"].to(device)
        rng = state["rng"]
        if len(rng) == world:
            _set_rng_state(rng[rank])
        elif cfg.noise == "global":
            warnings.warn(f"checkpoint was written by {len(rng)} ranks, resuming with {world}: "
                          "the global noise stream differs from the uninterrupted run",
                          stacklevel=2)
    elif cfg.noise == "global":
        torch.manual_seed(cfg.seed + 1 + rank)  # distinct noise on every rank

    step_model = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

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

    # -- data --
    files = training_files(cfg.data)
    if master:
        pool = load_pool(files)
    if world > 1:
        dist.barrier()  # rank 0 has written the pool cache
    if not master:
        pool = load_pool(files)
    sampler = CropSampler(pool, cfg.crop, cfg.batch_size, cfg.seed)
    prefit = None
    if cfg.prefit_densities and state is None:
        # a fixed crop set of its own (another seed), the same on every rank
        crops = CropSampler(pool, cfg.crop, PREFIT_CROPS, cfg.seed + 1).batch(0)
        x_fit = torch.from_numpy(crops).to(device).permute(0, 3, 1, 2).float().div_(255)
        prefit = prefit_densities(model, x_fit, cfg.prefit_densities)
        if ema is not None:
            ema.module.load_state_dict(model.state_dict())
    per_rank = cfg.batch_size // world
    eval_images = load_eval_images(cfg) if (cfg.eval_every and master) else []

    # -- run folder (rank 0 names it; the others learn it) --
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

    N_, M_ = (getattr(model, "N", None), getattr(model, "M", None))
    info = {"lmbda": lmbda, "N": N_, "M": M_, "world_size": world, "device": str(device),
            "threads": torch.get_num_threads(), "train_images": len(pool.names),
            "train_images_too_small": sampler.skipped, "torch": str(torch.__version__),
            "parameters": sum(p.numel() for p in named.values()),
            "lmbdas": lmbdas, "warm_start": warm, "prefit_densities": prefit}
    log = evlog = None
    if master:
        fileio.atomic_write_text(run_dir / "config.json", json.dumps(
            {"config": dataclasses.asdict(cfg), "resolved": info}, indent=1))
        keep = start_step if state is not None else None
        log = CsvLog(run_dir / "log.csv", LOG_COLUMNS, keep_until_step=keep)
        if cfg.eval_every:
            evlog = CsvLog(run_dir / "eval.csv", EVAL_COLUMNS, keep_until_step=keep)

    def save_state(step: int) -> None:
        nonlocal paused
        t = time.time()
        rng = [_rng_state()]
        if world > 1:
            rng = [None] * world
            dist.all_gather_object(rng, _rng_state())
        if master:
            snapshot = {
                "format": TRAIN_STATE_FORMAT, "config": dataclasses.asdict(cfg), "resolved": info,
                "step": step, "elapsed_s": elapsed0 + time.time() - t0,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "aux_optimizer": aux_optimizer.state_dict(),
                "scheduler": {"kind": cfg.lr_schedule,
                              "lr": learning_rate(step, cfg, elapsed0 + time.time() - t0)},
                "ema": ema.state_dict() if ema is not None else None,
                "log_acc": acc.cpu(), "rng": rng}
            with fileio.atomic_path(run_dir / "ckpt.pt") as tmp:
                torch.save(snapshot, tmp)
        paused += time.time() - t

    def write_log(step: int) -> None:
        nonlocal t_mark, paused, n_interval
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # GPU work is asynchronous: wait before timing
        seconds = time.time() - t_mark - paused  # training time since the last row
        total = acc.clone()
        if world > 1:
            dist.all_reduce(total)  # sum over ranks of per-rank batch means
        if master and total[4] > 0:
            loss, mse, bpp, aux = (total[:4] / total[4]).tolist()  # means over steps
            # PSNR = 10 log10(255² / MSE)
            psnr = 10 * math.log10(255.0**2 / mse) if mse > 0 else float("inf")
            log.write({"step": step, "wall_s": elapsed0 + time.time() - t0,
                       "lr": last_lr, "loss": loss, "mse": mse,
                       "psnr": psnr, "bpp": bpp, "aux_loss": aux,
                       "images_per_s": n_interval / max(seconds, 1e-9)})
            bar.set_postfix(loss=f"{loss:.4g}", psnr=f"{psnr:.2f}", bpp=f"{bpp:.3f}")
        acc.zero_()
        t_mark, paused, n_interval = time.time(), 0.0, 0

    def run_eval(step: int) -> None:
        nonlocal paused
        t = time.time()
        if master and eval_images:
            targets = [("model", model)] + ([("ema", ema.module)] if ema is not None else [])
            points = (list(zip(cfg.qualities, lmbdas)) if lmbdas
                      else [(cfg.quality if cfg.lmbda is None else None, lmbda)])
            for weights, target in targets:
                for level, (quality, lm) in enumerate(points):
                    if lmbdas:
                        variable_rate.set_rate_level(target, level)
                    r = evaluate(target, eval_images, lm, cfg.metric, device)
                    evlog.write({"step": step, "wall_s": elapsed0 + time.time() - t0,
                                 "quality": quality, "lmbda": lm, **r, "weights": weights})
        paused += time.time() - t

    # -- loop --
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)  # crops of the next step
    next_batch = executor.submit(sampler.batch, start_step, rank, world)
    bar = tqdm(total=cfg.max_steps, initial=start_step, disable=not (master and cfg.progress),
               desc=run_dir.name, dynamic_ncols=True)
    t0 = t_mark = time.time()
    paused, n_interval = 0.0, 0  # seconds spent on evaluation/checkpoints; images trained
    last_lr = learning_rate(start_step, cfg, elapsed0)
    step = start_step
    try:
        while step < cfg.max_steps:
            out_of_time = cfg.max_minutes is not None and (
                elapsed0 + time.time() - t0) > 60 * cfg.max_minutes
            if world > 1:  # rank 0's clock decides: every rank stops at the same step
                flag = torch.tensor([float(out_of_time)], device=device)
                dist.broadcast(flag, src=0)
                out_of_time = bool(flag.item())
            if out_of_time:
                break
            crops = next_batch.result()
            if step + 1 < cfg.max_steps:
                next_batch = executor.submit(sampler.batch, step + 1, rank, world)
            x = torch.from_numpy(crops).to(device, non_blocking=True)
            # (N, H, W, 3) uint8 -> (N, 3, H, W) float in [0, 1], channels-last in memory
            x = x.permute(0, 3, 1, 2).float().div_(255)
            if not cfg.channels_last:
                x = x.contiguous()
            if noise is not None:
                noise.begin_step(step, range(rank * per_rank, (rank + 1) * per_rank))

            lr = last_lr = learning_rate(step, cfg, elapsed0 + time.time() - t0)
            for group in optimizer.param_groups:
                group["lr"] = lr
            step_lmbda = lmbda
            if lmbdas:  # variable rate: this step trains one level, with its λ
                level = variable_rate.level_for_step(step, len(lmbdas))
                variable_rate.set_rate_level(model, level)
                step_lmbda = lmbdas[level]
            optimizer.zero_grad(set_to_none=True)
            aux_optimizer.zero_grad(set_to_none=True)
            with reduced_precision(model, cfg.precision, device.type):
                out = step_model(x)
            terms = rd_loss(out, x, step_lmbda, cfg.metric)
            terms["loss"].backward()
            if cfg.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(net_params, cfg.clip_grad_norm)
            optimizer.step()
            aux_loss = model.aux_loss()  # on the unwrapped model: no DDP sync needed
            aux_loss.backward()
            aux_optimizer.step()
            if ema is not None:
                ema.update_parameters(model)

            # interval sums stay on the device: no host sync per step
            acc += torch.stack([terms["loss"].detach(), terms["mse"], terms["bpp"].detach(),
                                aux_loss.detach(), one]).double()
            step += 1
            n_interval += cfg.batch_size
            bar.update(1)
            if step % cfg.log_every == 0:
                write_log(step)
            if cfg.eval_every and step % cfg.eval_every == 0:
                run_eval(step)
            if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.max_steps:
                save_state(step)
    except KeyboardInterrupt:
        if world == 1:
            save_state(step)  # resumable from where it was stopped
            print(f"\ninterrupted at step {step}; resume with --resume {run_dir}")
        raise
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        bar.close()

    if acc[4] > 0:
        write_log(step)  # the partial interval since the last row
    if cfg.eval_every and step % cfg.eval_every and eval_images:
        run_eval(step)
    save_state(step)
    if master:
        final = ema.module if ema is not None else model
        save_final(final, run_dir / "final.pt", cfg, {"step": step, "train_info": info})
        log.close()
        if evlog is not None:
            evlog.close()
    if world > 1:
        dist.barrier()
    return run_dir


# ---------------------------------------------------------------------------------------
# Command line


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
    a("--metric", choices=["mse", "ms-ssim"], help=f"distortion (default {d.metric})")
    a("--data", nargs="+", help=f"datasets or folders to train on (default {' '.join(d.data)})")
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
