"""Stage C, the perceptual variant: adversarial fine-tuning of a finished model's decoder::

    g_a, codebooks and MIM model frozen: same codes, same bitstream
    x_hat = g_s(z_q);  D = PatchGAN discriminator (nic_lib.perceptual), alternately:
    L_G = MSE(x_hat, x) [+ w_ms (1 − MS-SSIM)] + w_adv · L_adv(D(x_hat))   (g_s only)
    L_D = GAN loss of D(x) vs D(sg(x_hat))                                   (D only)

Stage C writes ``config_c.json``, ``log_c.csv``, ``ckpt_c.pt`` and ``final_c.pt``
(:data:`STAGE_C_FILES`, names that cannot clash with stages A/B): into the run folder when
``--perceptual-from`` names one, else into ``runs/pqmim-M<M>-K<K>-perceptual-<time>``.
``final_c.pt`` carries an extra ``"perceptual"`` entry (with the digest of the frozen
weights, equal to the base model's) that :func:`nic_lib.models.pqmim.find_checkpoints`
uses to tell it from base checkpoints, and :func:`perceptual_pairs` to pair it with its
base. Crops come from :class:`nic_lib.training.CropSampler`, as in stage A.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nic_lib import fileio, perceptual
from nic_lib.models import pqmim, save_checkpoint

from ..data import CropSampler, load_pool, training_files
from ..runs import CsvLog, default_runs_dir
from ..schedule import warmup_cosine
from .config import RunSettings, exported_config, resumed_config, to_input
from .run import export_copy


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
class PerceptualTrainConfig(RunSettings):
    """Every knob of a stage-C run (saved in config_c.json, ckpt_c.pt and final_c.pt).

    ``source``: a finished run folder (its ``final.pt``) or a PQ-MIM checkpoint.
    ``adv_weight``: w_adv; ``gan_loss``: one of :data:`nic_lib.perceptual.GAN_LOSSES`;
    ``ms_ssim_weight``: w_ms; ``disc_width``/``disc_layers``: the
    :class:`~nic_lib.perceptual.PatchDiscriminator`. The fields every stage shares: :class:`~.config.RunSettings`.
    """

    source: str = ""
    adv_weight: float = DEFAULT_ADV_WEIGHT
    gan_loss: str = perceptual.DEFAULT_GAN_LOSS
    ms_ssim_weight: float = DEFAULT_MS_SSIM_WEIGHT
    disc_width: int = perceptual.DISC_WIDTH
    disc_layers: int = perceptual.DISC_LAYERS
    lr_c: float = DEFAULT_LR_C
    lr_d: float = DEFAULT_LR_D
    steps_c: int = DEFAULT_STEPS_C
    max_minutes_c: float | None = None


def _source_checkpoint(source: str | Path) -> Path:
    """The model file that ``--perceptual-from`` names: a run folder's final.pt, or the file."""
    path = Path(source).expanduser()
    file = path / "final.pt" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"--perceptual-from {source}: no PQ-MIM model at {file}; pass a finished run folder "
            "(runs/pqmim-.../ holding final.pt) or a checkpoint such as checkpoints/pqmim/M4-K256.pt "
            "(train one with `python -m nic_lib.train_pqmim --export ...`)")
    return file


def _load_state_c(path: str | Path) -> tuple[dict, Path]:
    """``(state, run folder)`` of a stage-C ``--resume`` (a folder holding ckpt_c.pt, or the file)."""
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
        cfg = resumed_config(PerceptualTrainConfig, state["config"], RUNTIME_KEYS_C, overrides)
    if cfg.ms_ssim_weight and cfg.crop <= 160:
        raise ValueError(f"--ms-ssim-weight needs crops above 160 pixels (MS-SSIM's 5 scales); "
                         f"got --crop {cfg.crop}: use --crop 192 or more, or --ms-ssim-weight 0")
    if cfg.gan_loss not in perceptual.GAN_LOSSES:
        raise ValueError(f"--gan-loss {cfg.gan_loss!r}: choose one of {', '.join(perceptual.GAN_LOSSES)}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    if state is None:
        source = _source_checkpoint(cfg.source)
        model, source_ckpt = pqmim.load_pqmim(source)
        # the frozen MIM model's masking law: the variant's config states it as its base's
        source_info = {"source": str(source), "frozen_digest": perceptual.state_digest(
            model.state_dict()), "mask_law": source_ckpt["config"]["mask_law"]}
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
    # the discriminator's initialisation: a seed of its own, keyed by (seed, stream)
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
            run_dir = default_runs_dir() / (
                f"pqmim-M{model.M}-K{model.K}-perceptual-{time.strftime('%Y%m%d-%H%M%S')}")
        if (run_dir / STAGE_C_FILES["state"]).exists():
            raise ValueError(f"{run_dir} already holds a stage-C run; continue it with "
                             f"`python -m nic_lib.train_pqmim --resume {run_dir / STAGE_C_FILES['state']}` "
                             "or pass another --out-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    pool = load_pool(training_files(cfg.data))
    sampler = CropSampler(pool, cfg.crop, cfg.batch_size, cfg.seed)
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

    log = CsvLog(run_dir / STAGE_C_FILES["log"], LOG_C_COLUMNS,
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
            lr = warmup_cosine(step, cfg.lr_c, cfg.warmup_steps, cfg.steps_c)
            for group in opt_g.param_groups:
                group["lr"] = lr
            for group in opt_d.param_groups:
                group["lr"] = lr * cfg.lr_d / cfg.lr_c
            acc += _step(model, disc, opt_g, opt_d, decoder, to_input(sampler.batch(step)), cfg)
            step += 1
            if step % cfg.log_every == 0 or step == cfg.steps_c:
                t_mark = _write_row(log, step, start_elapsed + time.time() - t0, lr, acc, t_mark)
            if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.steps_c:
                elapsed = start_elapsed + time.time() - t0
                save_state(step)
        if acc[7]:
            _write_row(log, step, start_elapsed + time.time() - t0, lr, acc, t_mark)
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
    save_checkpoint(model.eval(), final, {"mask_law": source_info["mask_law"]}, extra={
        "perceptual": {**source_info, "steps": step, "adv_weight": cfg.adv_weight,
                       "gan_loss": cfg.gan_loss, "ms_ssim_weight": cfg.ms_ssim_weight},
        "train_config_c": exported_config(cfg),
        "train_info": info, "elapsed_s": elapsed})
    if cfg.export:
        export_copy(final, cfg.export)
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


def _step(model, disc, opt_g, opt_d, decoder, x, cfg) -> np.ndarray:
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


def _write_row(log: CsvLog, step: int, wall: float, lr: float, acc: np.ndarray,
               t_mark: float) -> float:
    """One row of means over the steps since the last row; resets ``acc``."""
    loss_g, mse, ms_ssim, adv, loss_d, d_real, d_fake = acc[:7] / acc[7]
    # PSNR = 10 log10(255² / MSE)
    log.write({"step": step, "wall_s": wall, "lr": lr, "loss_g": loss_g, "mse": mse,
               "psnr": 10 * math.log10(255.0**2 / mse), "ms_ssim": ms_ssim, "adv": adv,
               "loss_d": loss_d, "d_real": d_real, "d_fake": d_fake,
               "images_per_s": acc[8] / max(time.time() - t_mark, 1e-9)})
    acc[:] = 0
    return time.time()



def is_stage_c_state(path: str | Path) -> bool:
    """Whether ``--resume PATH`` continues stage C: a ``ckpt_c.pt`` file, or a folder holding
    ``ckpt_c.pt`` but no ``ckpt.pt`` (a folder with both resumes stages A/B)."""
    path = Path(path).expanduser()
    if path.is_dir():
        return (path / STAGE_C_FILES["state"]).is_file() and not (path / "ckpt.pt").is_file()
    return path.name == STAGE_C_FILES["state"]
