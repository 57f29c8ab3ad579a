"""Train only the entropy model of a codec whose transforms are frozen, on cached latents.

The ablation protocol of notebook 01 trains every entropy model of the paper (joint,
mean-scale, scale-only, factorized, context-only, GMM, checkerboard, context 3/5/7) on the
*same frozen* analysis/synthesis transforms and gain units. With g_a, g_s and the gains
fixed, training sees ŷ = y + u with u ~ U(−½, ½), so the distortion does not depend on
the entropy model, and the objective λ·D + R reduces to the rate of the same latents:

    min_ψ  E_x E_u [ −log2 p_ψ(g_a(x) ⊙ γ_l + u) ] / pixels,     l cycling over the levels.

So g_a need only run once per crop: this module computes y₀ = g_a(x) (before the gains)
for a fixed set of crops, keeps them in memory, and trains on them. A step costs the
entropy model alone: no g_a and no g_s per step, where ``python -m nic_lib.train --freeze
...`` still runs both forward. At M = 192 the entropy model (hyper-synthesis, 5×5 context,
entropy parameters) costs about as much as the two transforms per crop, so this roughly
halves a step rather than removing it (4.4 steps/s for the joint model on one thread of a
loaded 2-core machine; ``python -m nic_lib.train --freeze``: 4.1 steps/s, less loaded).
Training calls the model's own ``forward_latents(y₀, synthesize=False)``: the gain
γ_l, the entropy model, and no g_s (the models' explicit API, see
:mod:`nic_lib.models.variable_rate`); evaluation runs the whole model.

    python -m nic_lib.train_entropy --model mbt2018-gmm --transforms RUN/final.pt \\
        --qualities 1 2 3 4 5 6 --steps 20000 --out-dir ~/nic-runs/cpu-profile/ablate-mbt2018-gmm

The run folder gets ``config.json``, ``log.csv`` (step, lr, bpp, aux loss), ``eval.csv``
(every level on the same evaluation crops as ``nic_lib.train``, real transforms) and
``final.pt`` (registry format, loadable with ``nic_lib.models.load_checkpoint``).

Long runs span sessions. Every ``--ckpt-every`` steps the folder gets ``ckpt.pt`` (model,
both optimizers, the torch RNG, the log so far), and ``--resume RUN`` continues it exactly:
the cached crops are drawn again from the same seeded stream and the batch rows are seeded
per step, so a resumed run logs the same numbers as one that never stopped. Where the
folder is gone (a fresh machine) but a snapshot of the run was shipped, ``--init-from
SNAPSHOT --start-step S`` continues the schedule from step S with the snapshot's entropy
model and fresh optimizers (a warm-up ramp to the schedule's rate at S)::

    python -m nic_lib.train_entropy --resume ~/nic-runs/cpu-profile/ablate-mbt2018-gmm

Every ``--keep-every`` steps (default 5,000) the run also keeps its entropy model as it is
then (``snapshots/step-NNNNNN.pt``, weights only): :func:`kept_snapshot` turns one into a
loadable checkpoint, so whether a model was better earlier in its schedule (on held-out
images, at some levels) can be measured without training again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from nic_lib import fileio
from nic_lib import training as T
from nic_lib.models import checkpoints, registry, variable_rate

#: Modules taken from the transforms checkpoint and frozen.
TRANSFORMS = ("g_a", "g_s", "gain", "inverse_gain")
#: Crops whose latents are cached: 16,384 × 192 × 8 × 8 float32 ≈ 0.8 GB at M = 192.
DEFAULT_CROPS = 16384
#: Crops per g_a call while caching.
CACHE_BATCH = 64


@dataclasses.dataclass
class EntropyConfig:
    """Every knob of an entropy-model run (saved in config.json and final.pt)."""

    model: str
    transforms: str
    qualities: tuple[int, ...]
    out_dir: str
    context_size: int | None = None
    crops: int = DEFAULT_CROPS
    crop: int = 128
    batch_size: int = 8
    steps: int = 20000
    lr: float = 1e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    aux_lr: float = T.DEFAULT_AUX_LR
    clip_grad_norm: float = 1.0
    prefit_densities: int = 0
    data: tuple[str, ...] = (T.DEFAULT_DATA,)
    seed: int = 0
    threads: int = 1
    log_every: int = 100
    eval_images: int = 4
    eval_crop: int = 256
    precision: str = "fp32"
    ckpt_every: int = 500
    #: every this many steps the run also keeps its entropy model as it is then
    #: (``snapshots/step-NNNNNN.pt``, :func:`kept_snapshot`), so that the budget can be judged
    #: afterwards on held-out images without re-running (0: none)
    keep_every: int = 5000
    init_from: str | None = None
    start_step: int = 0

    def train_config(self, N: int, M: int) -> T.TrainConfig:
        """The nic_lib.train configuration this run corresponds to (model, schedule)."""
        return T.TrainConfig(
            model=self.model, N=N, M=M, qualities=tuple(self.qualities),
            context_size=self.context_size, init_from=self.transforms,
            init_only=TRANSFORMS, freeze=TRANSFORMS, data=tuple(self.data), crop=self.crop,
            batch_size=self.batch_size, lr=self.lr, aux_lr=self.aux_lr,
            warmup_steps=self.warmup_steps, lr_schedule="cosine", lr_decay_steps=self.steps,
            min_lr_ratio=self.min_lr_ratio, max_steps=self.steps, seed=self.seed,
            clip_grad_norm=self.clip_grad_norm, eval_images=self.eval_images,
            eval_crop=self.eval_crop, out_dir=self.out_dir, threads=self.threads,
            progress=False, ema=0.0, precision=self.precision)


@torch.no_grad()
def cache_latents(model: torch.nn.Module, sampler: T.CropSampler, count: int) -> torch.Tensor:
    """y₀ = g_a(x) before the gain units, for ``count`` crops of the sampler's seeded stream.

    Returns:
        float32 (count, M, crop/16, crop/16).
    """
    out = []
    steps = math.ceil(count / sampler.global_batch)
    for step in range(steps):
        x = torch.from_numpy(sampler.batch(step)).permute(0, 3, 1, 2).float().div_(255)
        out.append(model.g_a(x))  # y₀: the gain is applied by forward_latents
    return torch.cat(out)[:count].contiguous()


def _save_ckpt(run_dir: Path, model, optimizer, aux_optimizer, step: int,
               log_rows: list[dict], acc: np.ndarray) -> None:
    """``ckpt.pt``: everything :func:`train_entropy` needs to go on exactly after ``step``."""
    state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "aux_optimizer": aux_optimizer.state_dict() if aux_optimizer else None,
             "log_rows": log_rows, "acc": acc.tolist(), "torch_rng": torch.get_rng_state()}
    with fileio.atomic_path(run_dir / "ckpt.pt") as tmp:
        torch.save(state, tmp)


def _keep_snapshot(run_dir: Path, model, step: int) -> None:
    """``snapshots/step-NNNNNN.pt``: the model's weights after ``step`` (no optimizer state)."""
    (run_dir / "snapshots").mkdir(exist_ok=True)
    with fileio.atomic_path(run_dir / "snapshots" / f"step-{step:06d}.pt") as tmp:
        torch.save({"step": step, "model": model.state_dict()}, tmp)


def kept_snapshots(run_dir: str | Path) -> list[int]:
    """The steps at which a run kept its entropy model (``--keep-every``), ascending."""
    folder = Path(run_dir).expanduser() / "snapshots"
    return sorted(int(p.stem.split("-")[1]) for p in folder.glob("step-*.pt"))


def kept_snapshot(run_dir: str | Path, step: int, dest: str | Path) -> Path:
    """A checkpoint in the registry format (``nic_lib.models.load_checkpoint``) of the model a
    run kept at ``step`` (finished or not), with ``step`` and ``snapshot_of`` at its top level.

    Raises:
        FileNotFoundError: the run kept nothing at that step (the steps it kept are named).
    """
    run_dir = Path(run_dir).expanduser()
    kept = run_dir / "snapshots" / f"step-{step:06d}.pt"
    if not kept.is_file():
        raise FileNotFoundError(f"{run_dir} kept no model at step {step}; it kept "
                                f"{kept_snapshots(run_dir) or 'none'} (--keep-every)")
    state = torch.load(kept, map_location="cpu", weights_only=True)
    return _save_snapshot(_run_config(run_dir), state["model"], step, dest)


def _run_config(run_dir: Path) -> EntropyConfig:
    """The configuration a run folder's ``config.json`` records (finished or not)."""
    saved = json.loads((run_dir / "config.json").read_text())["config"]
    fields = {f.name for f in dataclasses.fields(EntropyConfig)}
    saved = {k: v for k, v in saved.items() if k in fields}
    for key in ("qualities", "data"):
        saved[key] = tuple(saved[key])
    return EntropyConfig(**{**saved, "out_dir": str(run_dir)})


def _save_snapshot(cfg: EntropyConfig, weights: dict, step: int, dest: str | Path) -> Path:
    """A run's model with ``weights`` at ``step``, as a registry-format checkpoint with
    ``step`` and ``snapshot_of`` at its top level."""
    run_dir = Path(cfg.out_dir)
    resolved = json.loads((run_dir / "config.json").read_text())["resolved"]
    tcfg = cfg.train_config(int(resolved["N"]), int(resolved["M"]))
    model = T.build_model(tcfg)
    model.load_state_dict(weights)
    T.save_final(model.eval(), Path(dest), tcfg, {
        "step": step, "snapshot_of": str(run_dir),
        "train_info": {"protocol": "nic_lib.train_entropy", "start_step": cfg.start_step}})
    return Path(dest)


def resume_config(run_dir: str | Path) -> EntropyConfig:
    """The configuration of an unfinished run (its ``config.json``), to pass to
    :func:`train_entropy` with ``resume=True``."""
    run_dir = Path(run_dir).expanduser()
    if (run_dir / "final.pt").exists():
        raise FileExistsError(f"{run_dir / 'final.pt'} exists: this run is finished, "
                              "nothing to resume")
    if not (run_dir / "ckpt.pt").is_file() or not (run_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"{run_dir} holds no ckpt.pt/config.json of a train_entropy run; start it without "
            "--resume (or continue a shipped snapshot with --init-from FILE --start-step S)")
    return _run_config(run_dir)


def snapshot_final(run_dir: str | Path, dest: str | Path) -> Path:
    """Write what ``final.pt`` would hold if the run stopped now, from its ``ckpt.pt`` (an
    unfinished run exported at the end of a session; ``--init-from`` continues it).

    The file is in the registry format, with ``step`` and ``snapshot_of`` (the run folder)
    at its top level; the run itself is untouched and resumes as before.
    """
    cfg = resume_config(run_dir)
    state = torch.load(Path(cfg.out_dir) / "ckpt.pt", map_location="cpu", weights_only=False)
    return _save_snapshot(cfg, state["model"], int(state["step"]), dest)


def train_entropy(cfg: EntropyConfig, resume: bool = False) -> Path:
    """Run: cache latents, train the entropy model on them, evaluate, save final.pt.

    Args:
        cfg: the run's settings.
        resume: go on from ``cfg.out_dir/ckpt.pt`` (see :func:`resume_config`).
    """
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    run_dir = Path(cfg.out_dir).expanduser()
    if (run_dir / "final.pt").exists():
        raise FileExistsError(f"{run_dir / 'final.pt'} exists: this run is finished; "
                              "choose another --out-dir or delete the folder")
    if not resume and (run_dir / "ckpt.pt").exists():
        raise FileExistsError(f"{run_dir / 'ckpt.pt'} exists: an unfinished run is there; "
                              f"continue it with --resume {run_dir}, or delete the folder")
    if not 0 <= cfg.start_step < cfg.steps:
        raise ValueError(f"--start-step {cfg.start_step} must lie in [0, --steps {cfg.steps})")
    if cfg.start_step and not cfg.init_from:
        raise ValueError("--start-step continues a snapshot: give it with --init-from FILE")
    run_dir.mkdir(parents=True, exist_ok=True)
    _, source = checkpoints.load_checkpoint(cfg.transforms, calibrated=False)
    N, M = int(source["config"]["N"]), int(source["config"]["M"])
    tcfg = cfg.train_config(N, M)
    model = T.build_model(tcfg)
    warm = T.warm_start(model, cfg.transforms, only=TRANSFORMS)
    if cfg.init_from:  # a shipped snapshot of this run: its entropy model (transforms stay)
        entropy_parts = tuple(sorted({n.split(".")[0] for n in model.state_dict()}
                                     - set(TRANSFORMS)))
        warm = {"transforms": warm, "entropy_model": T.warm_start(model, cfg.init_from,
                                                                  only=entropy_parts)}
    named = dict(model.named_parameters())
    for n, p in named.items():
        if T.under_prefixes(n, TRANSFORMS):
            p.requires_grad_(False)
    aux_names = [n for n in named if n.endswith(".quantiles")]
    params = [p for n, p in named.items() if p.requires_grad and n not in aux_names]
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    aux_optimizer = (torch.optim.Adam([named[n] for n in aux_names], lr=cfg.aux_lr)
                     if aux_names else None)
    lmbdas = T.rate_lambdas(tcfg)
    precision = T.precision.for_this_machine(cfg.precision)  # bf16 where it is native
    fileio.atomic_write_text(run_dir / "config.json", json.dumps(
        {"config": dataclasses.asdict(cfg), "train_config": dataclasses.asdict(tcfg),
         "resolved": {"N": N, "M": M, "lmbdas": lmbdas, "warm_start": warm,
                      "trainable_parameters": sum(p.numel() for p in params),
                      "precision_computed": precision,
                      "torch": str(torch.__version__)}}, indent=1, default=str))

    t0 = time.time()
    pool = T.load_pool(T.training_files(cfg.data))
    model.train()
    y0 = cache_latents(model, T.CropSampler(pool, cfg.crop, CACHE_BATCH, cfg.seed), cfg.crops)
    cache_s = time.time() - t0
    pixels = cfg.batch_size * cfg.crop * cfg.crop
    prefit = None
    if cfg.prefit_densities:
        prefit = T.prefit_densities(model, y0[:T.PREFIT_CROPS], cfg.prefit_densities,
                                    latents=True)
    log_rows, acc, t1, first = [], np.zeros(3), time.time(), cfg.start_step
    if resume:
        state = torch.load(run_dir / "ckpt.pt", map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if aux_optimizer:
            aux_optimizer.load_state_dict(state["aux_optimizer"])
        log_rows, acc, first = state["log_rows"], np.array(state["acc"]), state["step"]
        torch.set_rng_state(state["torch_rng"])
        t1 -= log_rows[-1]["wall_s"] if log_rows else 0.0
    for step in range(first, cfg.steps):
        lr = T.learning_rate(step, tcfg)
        if cfg.start_step and step < cfg.start_step + cfg.warmup_steps:
            # fresh optimizers on a snapshot: ramp to the schedule's rate at start_step
            lr *= (step - cfg.start_step + 1) / cfg.warmup_steps
        for group in optimizer.param_groups:
            group["lr"] = lr
        variable_rate.set_rate_level(model, variable_rate.level_for_step(step, len(lmbdas)))
        rows = np.random.default_rng([cfg.seed, step]).integers(0, len(y0), cfg.batch_size)
        # --precision bf16: the networks under bfloat16 autocast, densities and bits fp32
        with T.reduced_precision(model, precision):
            out = model.forward_latents(y0[torch.from_numpy(rows)], synthesize=False)
        # bpp = Σ −log2 p(ŷ, ẑ) / pixels of the crops
        bpp = sum(-torch.log2(v).sum() for v in out["likelihoods"].values()) / pixels
        optimizer.zero_grad(set_to_none=True)
        bpp.backward()
        if cfg.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
        optimizer.step()
        aux = model.aux_loss() if aux_optimizer else torch.zeros(())
        if aux_optimizer:
            aux_optimizer.zero_grad(set_to_none=True)
            aux.backward()
            aux_optimizer.step()
        acc += (bpp.item(), aux.item(), 1)
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            log_rows.append({"step": step + 1, "wall_s": round(time.time() - t1, 3), "lr": lr,
                             "bpp": acc[0] / acc[2], "aux_loss": acc[1] / acc[2]})
            acc[:] = 0
            fileio.atomic_write_text(run_dir / "log.csv", _csv(log_rows))
        if cfg.ckpt_every and (step + 1) % cfg.ckpt_every == 0 and step + 1 < cfg.steps:
            _save_ckpt(run_dir, model, optimizer, aux_optimizer, step + 1, log_rows, acc)
        if cfg.keep_every and (step + 1) % cfg.keep_every == 0 and step + 1 < cfg.steps:
            _keep_snapshot(run_dir, model, step + 1)
    model.eval()
    evals = []
    images = T.load_eval_images(tcfg)
    for level, (q, lm) in enumerate(zip(cfg.qualities, lmbdas)):
        variable_rate.set_rate_level(model, level)
        r = T.evaluate(model, images, lm, "mse", torch.device("cpu"))
        evals.append({"step": cfg.steps, "quality": q, "lmbda": lm, **r})
    fileio.atomic_write_text(run_dir / "eval.csv", _csv(evals))
    T.save_final(model, run_dir / "final.pt", tcfg, {
        "step": cfg.steps, "train_info": {"cache_s": cache_s, "train_s": time.time() - t1,
                                          "cached_crops": len(y0), "prefit": prefit,
                                          "protocol": "nic_lib.train_entropy",
                                          "start_step": cfg.start_step}})
    (run_dir / "ckpt.pt").unlink(missing_ok=True)  # the run is finished: final.pt has it all
    return run_dir


def _csv(rows: list[dict]) -> str:
    import pandas as pd

    return pd.DataFrame(rows).to_csv(index=False)


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d = EntropyConfig(model="", transforms="", qualities=(), out_dir="")
    p.add_argument("--model", choices=registry.quality_models())
    p.add_argument("--resume", metavar="RUN",
                   help="go on with an unfinished run from its ckpt.pt (other flags ignored)")
    p.add_argument("--transforms",
                   help="registry checkpoint whose g_a, g_s and gains are taken and frozen")
    p.add_argument("--qualities", type=int, nargs="+")
    p.add_argument("--out-dir")
    p.add_argument("--init-from", help="a shipped snapshot of this run whose entropy model "
                   "to continue (with --start-step)")
    p.add_argument("--context-size", type=int)
    for name in ("crops", "crop", "batch_size", "steps", "warmup_steps", "prefit_densities",
                 "seed", "threads", "log_every", "eval_images", "eval_crop", "ckpt_every",
                 "keep_every", "start_step"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name in ("lr", "min_lr_ratio", "aux_lr", "clip_grad_norm"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    p.add_argument("--data", nargs="+", default=list(d.data))
    p.add_argument("--precision", choices=["fp32", "bf16"], default=d.precision,
                   help="the entropy model's networks in bfloat16 autocast while training "
                   "(nic_lib.training.precision; evaluation and saving in fp32)")
    args = vars(p.parse_args(argv))
    resume = args.pop("resume")
    if resume:
        return train_entropy(resume_config(resume), resume=True)
    missing = [f"--{k.replace('_', '-')}" for k in ("model", "transforms", "qualities", "out_dir")
               if not args[k]]
    if missing:
        p.error(f"the following arguments are required (unless --resume): {', '.join(missing)}")
    args["qualities"], args["data"] = tuple(args["qualities"]), tuple(args["data"])
    return train_entropy(EntropyConfig(**args))


if __name__ == "__main__":
    print(main())
