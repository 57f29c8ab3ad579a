"""The command line of PQ-MIM's training (:mod:`nic_lib.training.pqmim`).

Stages A (autoencoder + product quantizer) then B (masked-image-modelling entropy model),
in one run folder::

    python -m nic_lib.train_pqmim --M 4 --K 256 --steps-a 20000 --steps-b 20000 \\
        --export checkpoints/pqmim/M4-K256.pt
    python -m nic_lib.train_pqmim --resume runs/pqmim-M4-K256-20250101-120000
    python -m nic_lib.train_pqmim --resume checkpoints/pqmim/M4-K256.pt --restart-b \\
        --mask-law schedule --out-dir runs/M4-K256-b --export runs/M4-K256-b.pt

(the last: stage B again, from scratch, on the autoencoder of an exported checkpoint).

On a fresh machine, without the run folder, stage A continues from a snapshot (an
unfinished run exported with ``export_snapshot``; ``python scripts/train_pqmim_cpu.py
--ship-only`` writes ``checkpoints/pqmim/snapshots/<name>.pt``) at its step, with the
run's own flags (fresh optimizer state, the rate ramped up again to the schedule's)::

    python -m nic_lib.train_pqmim --N 64 --M 4 --K 256 ... \
        --init-from checkpoints/pqmim/snapshots/M4-K256.pt --start-step 1500

Stage C, the perceptual variant, fine-tunes the decoder of a finished model::

    python -m nic_lib.train_pqmim --perceptual-from checkpoints/pqmim/M4-K256.pt \\
        --max-minutes-c 10 --export checkpoints/pqmim/M4-K256-perceptual.pt
    python -m nic_lib.train_pqmim --resume runs/pqmim-M4-K256-perceptual-20250101-120000

``--resume`` continues stages A/B from a run folder or its ``ckpt.pt``, and stage C from a
``ckpt_c.pt`` (or a folder holding only that). The stages' equations, the run folder's
files and the reproducibility rules are in :mod:`nic_lib.training.pqmim`; every public
name of that package is importable from here too (``from nic_lib import train_pqmim;
train_pqmim.PQMIMTrainConfig``).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from nic_lib import perceptual
from nic_lib.models import pqmim
from nic_lib.training import PRECISIONS
from nic_lib.training.pqmim import *  # noqa: F403 (the package's public names, its __all__)
from nic_lib.training.pqmim import (STAGE_B_KEYS, PerceptualTrainConfig, PQMIMTrainConfig,
                                    is_stage_c_state, train, train_perceptual)
from nic_lib.training.pqmim import __all__ as _package_names

__all__ = [*_package_names, "main"]


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
    a("--precision", choices=PRECISIONS, help="stage A's training forward: fp32, or bf16 (g_a "
      "and g_s under bfloat16 autocast, the quantizer and losses in float32; fp32 on a CPU "
      f"without native bfloat16); kept on --resume (default {d.precision})")
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
    a("--init-from", help="a snapshot of an unfinished stage A (export_snapshot) to continue "
      "at its step, with the run's own flags; needs --start-step")
    a("--start-step", type=int, help="with --init-from: the snapshot's step; stage A's step "
      "counter, crops and rate schedule continue from it, the optimizer starts afresh and "
      "the rate ramps up again over --warmup-steps (default 0)")
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
    if resume is not None and is_stage_c_state(resume):
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
    if resume is not None and "init_from" in given:
        raise SystemExit("--init-from starts a new run from a snapshot and --resume continues "
                         "a run folder: give one of the two")
    if restart_b and resume is None:
        raise SystemExit("--restart-b needs --resume RUN_FOLDER (the run whose stage B restarts)")
    if resume is not None:
        return train(PQMIMTrainConfig(), resume=resume, overrides=given, restart_b=restart_b)
    return train(PQMIMTrainConfig(**given))


if __name__ == "__main__":
    print(f"run folder: {main()}")
