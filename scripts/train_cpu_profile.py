"""Retrain the shipped "cpu" profile checkpoints: ``python scripts/train_cpu_profile.py``.

The budget is this project's 2-core CPU, so the cpu profile is trained in stages that
share work (every number below is a flag of ``python -m nic_lib.train``). Three generations:

*M = 96 (the transforms' history).* ``base`` (fixed rate, λ = 0.013, 10,000 steps) →
``mbt2018-vr`` (gain units, qualities 1-6, 45 min) → ``m96-extended`` (120 min) →
``m96-5h`` (100 min). At M = 96 every curve flattened near 32 dB (issue 25: y keeps 96
numbers per 768 pixel values, and PCA on Kodak's blocks caps such a linear code at
31.8 dB), so this generation now only supplies the transforms of the next.

*M = 192 (the paper's latent width).* ``m192-widened``: ``m96-5h`` widened to M = 192
without changing what it computes (:func:`nic_lib.models.widen.widen_latent`; new latent
channels start at zero) → ``m192-vr``: trained on, 24,670 steps of a 48,000-step cosine
from 2e-4 (the run was stopped there to branch) → ``m192-q8``: levels q7, q8 added
(:func:`nic_lib.models.widen.add_levels`; λ up to 0.18, for the top of the rate range) and
trained on with a 60,000-step cosine from 2e-4 (shipped as ``checkpoints/mbt2018/m192.pt``
until the N = 96 generation replaced it; now a step on the way to ``n96``, re-run only by
``--from-scratch``).

*N = 96 (the main line).* At N = 64 the transforms bind (issue 25), so ``n96`` forks
m192-q8 at step 16,500 (``m192-q8-fork`` re-runs it to there), widens the hidden width to
N = 96 function-preservingly (:func:`nic_lib.models.widen.widen_hidden`) and trains on with
m192-q8's remaining schedule in bfloat16 autocast; shipped as ``checkpoints/mbt2018/n96.pt``
(EMA snapshot; resume and ``--ship-only`` as for m192-q8).

*The top levels* (``n96-top``, issue 25): ``n96`` at step 26,500 cut to q6-q8 and trained on
with n96's own schedule to its last step (43,500), so the top levels get transforms of
their own; shipped as ``checkpoints/mbt2018/n96-top.pt`` (snapshots and ``--ship-only`` as
for n96), from where the cpu profile serves mbt2018's q6-q8
(:func:`nic_lib.models.hub.cpu_checkpoint_for`).

*The ablation protocol* (``ablate-*``, notebook 01): every entropy model of the paper's
ablations — the joint model itself, mean-scale, scale-only, factorized, context-only,
GMM, checkerboard, and context sizes 3 and 7 (each trained, not cropped) — is trained from
a fresh initialisation on the *same frozen* analysis/synthesis transforms and gain units,
those of ``n96`` at step 26,500 as shipped in commit e05134d (``ABLATION_TRANSFORMS``: the
ablations need not wait for the main line, which trains on), for the same
``ABLATION_STEPS`` steps with the same learning rate, on the same cached latents
(``python -m nic_lib.train_entropy``).
With the transforms frozen the distortion is the same for all (ŷ = y + u in training),
so each run minimises the rate of the same latents, and an ordering reflects the entropy
model alone. That is not the paper's protocol (one full end-to-end training per model,
where the transforms adapt to their entropy model): it isolates what the paper's
comparison mixes, at a budget a CPU affords. The joint model of the protocol ships first
(``mbt2018/n96-ablation.pt``: its transforms in float16, its entropy model in int8); the
other eight store only their entropy models, in int8, and take the transforms from it
(:func:`nic_lib.models.save_checkpoint`'s ``base``), so they run after it. Runs resume
(``ckpt.pt``) and continue from a shipped snapshot like the main line.

*The OOD benchmark's variants* (``ood-*``, issue 30, notebook 02; not trained yet): ELIC
at a cpu width, and the main line fine-tuned as a dense control, pruned to 50% and 80%,
fixed-rate at four λ, for MS-SSIM, and (beyond the paper: does the training data's
spectrum cause the bias?) on blurred and on noisy crops (``ood-data-blur``,
``ood-data-noise``: ``--data-filter``, DATA_BLUR_SIGMA / DATA_NOISE_SIGMA; notebook 03 draws
their error spectra beside the dense control's); each warm-started from
``checkpoints/mbt2018/n96.pt`` as shipped (ELIC from scratch), shipped to
``checkpoints/ood/`` (``nic_lib.variants`` reads them). ``--list`` prints each stage's steps
and estimated CPU hours (OOD_STAGES).

*Low-rate levels* (``n96-lowrate``, ``ablate-bmshj2018-hyperprior-lowrate``, issue 31,
notebook 05; not trained yet): the shipped main line with levels q-4..q0 added below q1
(λ down to 0.000067, ~0.035 bpp on Kodak by the measured rate-λ law), fine-tuned 13,000
steps, and the scale hyperprior on its transforms by the ablation protocol; shipped as
``checkpoints/mbt2018/n96-lowrate.pt`` and ``checkpoints/bmshj2018-hyperprior/n96-lowrate.pt``.

Outputs: runs in ``$NIC_RUNS_DIR/cpu-profile/<stage>/`` (default ``~/nic-runs``, outside
the repository: they hold optimizer state), derived checkpoints beside them as
``<name>.pt``; a stage that ships a model writes it to ``checkpoints/`` (convolution weights
in float16) beside the run's ``config.json``, ``log.csv`` and ``eval.csv`` (copied under
the same stem); the other stages' records go to ``checkpoints/stages/``. A stage whose
``final.pt`` exists is skipped, and so is everything before the latest finished stage of a
chain, so the script resumes after an interruption (an interrupted stage restarts with
``--resume``); ``--ship-only`` ships an unfinished run's current EMA weights. On a machine
without the run folder, a stage whose EMA snapshot was shipped continues from it (its
step, its schedule, a fresh optimizer: ``--start-step``) instead of re-running its
lineage; ``--from-scratch`` re-runs the lineage.

Usage::

    python scripts/train_cpu_profile.py                 # everything that is missing
    python scripts/train_cpu_profile.py --only ablate-mbt2018-gmm   # one stage (+ stages it needs)
    python scripts/train_cpu_profile.py --list          # the stages and their commands
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Run folders live outside the repository (they hold optimizer state): $NIC_RUNS_DIR
#: (default ~/nic-runs), under cpu-profile/.
RUNS = Path(os.environ.get("NIC_RUNS_DIR", "~/nic-runs")).expanduser() / "cpu-profile"
CHECKPOINTS = REPO / "checkpoints"

#: Minutes of stage 2 (variable-rate joint model, M = 96).
STAGE2_MINUTES = 45
#: Peak learning rate of stage 2: it restarts a converged fixed-rate model at 5e-4 (it
#: must move the transforms to serve six rates).
STAGE2_LR = "5e-4"
#: Rate levels of every shipped model: qualities 1-6, λ 0.0018-0.0483 (about 0.1-1 bpp).
QUALITIES = ["1", "2", "3", "4", "5", "6"]
#: Widths of the main line's first stages (the cpu profile's until the N = 96 generation).
WIDTHS = ["--N", "64", "--M", "96"]
COMMON = ["--crop", "128", "--batch-size", "8", "--no-progress", "--schedule-clock", "time"]

BASE = ["--model", "mbt2018", "--lmbda", "0.013", *WIDTHS, "--crop", "128", "--batch-size",
        "8", "--lr", "1e-3", "--warmup-steps", "200", "--lr-schedule", "cosine",
        "--min-lr-ratio", "0.05", "--max-steps", "10000", "--max-minutes", "26",
        "--eval-every", "2500", "--eval-images", "24", "--eval-crop", "0", "--no-progress"]


def _vr(model: str, minutes: float, init: str, lr: str, extra: list[str] | None = None) -> list[str]:
    return ["--model", model, "--qualities", *QUALITIES, *WIDTHS, *COMMON,
            "--lr", lr, "--warmup-steps", "100", "--min-lr-ratio", "0.05",
            "--max-steps", "100000", "--max-minutes", str(minutes),
            "--init-from", str(RUNS / init / "final.pt"), *(extra or [])]


#: stage name -> (stage it starts from, train flags, shipped checkpoint path or None)
STAGES: dict[str, tuple[str | None, list[str], str | None]] = {
    "base": (None, BASE, None),
    "mbt2018-vr": ("base", _vr("mbt2018", STAGE2_MINUTES, "base", STAGE2_LR,
                               ["--reference-lmbda", "0.013", "--eval-every", "2000",
                                "--eval-images", "4", "--eval-crop", "256"]), None),
}
#: The M = 96 joint model's training extensions (their records: checkpoints/mbt2018/
#: vr-extended.* and vr-5h.*; both ran on the time clock with EMA 0.999).
STAGES["m96-extended"] = ("mbt2018-vr", [
    *_vr("mbt2018", 120, "mbt2018-vr", "5e-4"), "--ema", "0.999", "--eval-every", "4000",
    "--eval-images", "24", "--eval-crop", "0"], None)
STAGES["m96-5h"] = ("m96-extended", [
    *_vr("mbt2018", 100, "m96-extended", "2e-4"), "--ema", "0.999", "--eval-every", "4000",
    "--eval-images", "24", "--eval-crop", "0"], None)

#: The latent width of the current generation (the paper's M; issue 25's width study).
M_WIDE = 192
QUALITIES_WIDE = [*QUALITIES, "7", "8"]
_M192 = ["--model", "mbt2018", "--N", "64", "--M", str(M_WIDE), "--crop", "128",
         "--batch-size", "8", "--no-progress", "--schedule-clock", "steps", "--lr", "2e-4",
         "--warmup-steps", "100", "--min-lr-ratio", "0.05", "--ema", "0.999",
         "--eval-every", "2000", "--eval-images", "4", "--eval-crop", "256"]
#: Steps of m192-vr: the widened run was planned as a 48,000-step cosine and stopped at
#: step 24,670 to branch into m192-q8 (and the ablations), so it is re-run as exactly that.
M192_VR_STEPS, M192_VR_HORIZON = 24670, 48000
#: Steps (and cosine horizon) of m192-q8.
M192_Q8_STEPS = 60000
#: Derived checkpoints (no training): made by scripts/widen_checkpoint.py from a stage's
#: final.pt, checked to reconstruct every trained level as before.
DERIVED = {
    "m192-widened": ("m96-5h", ["--M", str(M_WIDE)]),
    "m192-q8-init": ("m192-vr", ["--qualities", *QUALITIES_WIDE]),
}
STAGES["m192-vr"] = ("m192-widened", [
    *_M192, "--qualities", *QUALITIES, "--max-steps", str(M192_VR_STEPS),
    "--lr-decay-steps", str(M192_VR_HORIZON), "--init-from", str(RUNS / "m192-widened.pt")],
    None)
STAGES["m192-q8"] = ("m192-q8-init", [
    *_M192, "--qualities", *QUALITIES_WIDE, "--max-steps", str(M192_Q8_STEPS),
    "--init-from", str(RUNS / "m192-q8-init.pt")], None)

#: The hidden width of the main line (issue 25). At N = 64 the transforms bind: the
#: autoencoder alone plateaus at 34.65 dB (benchmarks/ae_ceiling_probe.py), and m192-q8's top
#: level sits 0.23 dB under it. ``n96`` is m192-q8 forked at step 16,500 and widened to
#: N = 96 without changing what it computes (:func:`nic_lib.models.widen.widen_hidden`),
#: then trained on with m192-q8's *remaining* schedule (the learning rate m192-q8 had at
#: 16,500, cosine over its 43,500 remaining steps to the same floor; benchmarks/
#: widen_lever.py ``fork``) in bfloat16 autocast (``--precision bf16``: 2.5x the steps per
#: core-second at N = 96, +0.87% BD per step vs float32). At its step 8,000 it was level with
#: m192-q8 at 26,000 for about half the CPU (README), so it is the main line, shipped as
#: ``checkpoints/mbt2018/n96.pt`` (EMA snapshot of wherever the run has got to).
N_WIDE = 96
#: The step of m192-q8 the fork starts from; ``m192-q8-fork`` re-runs m192-q8 up to it (the
#: same schedule, stopped there).
FORK_STEP = 16500
#: n96's last step: the rest of m192-q8's schedule after the fork (also its cosine horizon).
N96_LAST_STEP = M192_Q8_STEPS - FORK_STEP
STAGES["m192-q8-fork"] = ("m192-q8-init", [
    *_M192, "--qualities", *QUALITIES_WIDE, "--max-steps", str(FORK_STEP),
    "--lr-decay-steps", str(M192_Q8_STEPS), "--init-from", str(RUNS / "m192-q8-init.pt")], None)
DERIVED["n96-init"] = ("m192-q8-fork", ["--N", str(N_WIDE)])
STAGES["n96"] = ("n96-init", [
    "--model", "mbt2018", "--N", str(N_WIDE), "--M", str(M_WIDE), "--qualities", *QUALITIES_WIDE,
    "--crop", "128", "--batch-size", "8", "--no-progress", "--schedule-clock", "steps",
    # m192-q8's rate at step 16,500 and its floor (2e-4 x 0.05 = 1e-5 = 1.65e-4 x 0.0606)
    "--lr", "1.65e-4", "--warmup-steps", "200", "--lr-decay-steps", str(N96_LAST_STEP),
    "--max-steps", str(N96_LAST_STEP), "--min-lr-ratio", "0.0606", "--ema", "0.999",
    "--eval-every", "2000", "--eval-images", "4", "--eval-crop", "256", "--precision", "bf16",
    "--threads", "1", "--init-from", str(RUNS / "n96-init.pt")], "mbt2018/n96.pt")

#: The ablation protocol: the same frozen transforms and gain units (those of the finished
#: ``n96``, as shipped), a fresh entropy model, the same steps, crops and learning rate for
#: every entropy model, trained on cached latents (``python -m nic_lib.train_entropy``:
#: g_a runs once per crop, g_s never). ABLATION_STEPS: the M = 96/192 protocols gave each
#: model 2,000 steps (~7 minutes), which left the orderings to the training budget
#: (issue 25). 10,000 steps (until 2026-12-07) still under-trained the mean-and-scale head:
#: mean-scale spent 3-6% more than scale-only; trained 30,000 steps each, mean-scale leads
#: at 7 of 8 levels by 1.3-2.9% (README, *The ablation protocol's budget*). One core of an
#: AVX-512 machine: ~20 min (scale hyperprior) to ~1.5 h (context models) per model
#: (ABLATION_STEP_TIME; ``--list`` prints each).
ABLATION_STEPS = 30000
ABLATION_LR = "1e-3"
#: Adam steps per level of the density pre-fit (nic_lib.train.prefit_densities).
PREFIT_STEPS = 500
#: The transforms every ablation shares: n96 at step 26,500, as shipped in this commit
#: (restored from git into the runs folder by :func:`ablation_transforms`).
ABLATION_TRANSFORMS = ("e05134d", "checkpoints/mbt2018/n96.pt", 26500)
#: The file the other ablations store their differences against: the protocol's joint
#: model (its frozen transforms kept in float16, nic_lib.models.checkpoints).
ABLATION_BASE = "mbt2018/n96-ablation.pt"
#: Modules the ablations share (nic_lib.train_entropy.TRANSFORMS).
FROZEN = ("g_a", "g_s", "gain", "inverse_gain")
ABLATIONS = {  # stage -> (registry model, extra flags, shipped as)
    "ablate-mbt2018": ("mbt2018", [], "mbt2018/n96-ablation.pt"),
    "ablate-mbt2018-ctx3": ("mbt2018", ["--context-size", "3"], "mbt2018/n96-ctx3.pt"),
    "ablate-mbt2018-ctx7": ("mbt2018", ["--context-size", "7"], "mbt2018/n96-ctx7.pt"),
    "ablate-mbt2018-mean": ("mbt2018-mean", [], "mbt2018-mean/n96.pt"),
    "ablate-bmshj2018-hyperprior": ("bmshj2018-hyperprior", [], "bmshj2018-hyperprior/n96.pt"),
    # its per-level densities of y each see an eighth of the steps: fitted first on the
    # frozen latents (without it 2,000 steps left it at ~2.6 bpp at every level on kodim01)
    "ablate-bmshj2018-factorized": ("bmshj2018-factorized",
                                    ["--prefit-densities", str(PREFIT_STEPS)],
                                    "bmshj2018-factorized/n96.pt"),
    "ablate-mbt2018-context": ("mbt2018-context", [], "mbt2018-context/n96.pt"),
    "ablate-mbt2018-gmm": ("mbt2018-gmm", [], "mbt2018-gmm/n96.pt"),
    "ablate-mbt2018-checkerboard": ("mbt2018-checkerboard", [], "mbt2018-checkerboard/n96.pt"),
}
for _stage, (_model, _extra, _target) in ABLATIONS.items():
    STAGES[_stage] = (None if _stage == "ablate-mbt2018" else "ablate-mbt2018", [
        "--model", _model, "--qualities", *QUALITIES_WIDE,
        "--transforms", str(RUNS / f"n96-step{ABLATION_TRANSFORMS[2]}.pt"),  # see command()
        "--crop", "128", "--batch-size", "8",
        "--crops", "16384", "--steps", str(ABLATION_STEPS), "--lr", ABLATION_LR,
        "--warmup-steps", "100", "--min-lr-ratio", "0.05", "--eval-images", "4",
        "--eval-crop", "256", "--threads", "1", *_extra], _target)


#: The NIC variants of the OOD benchmark (issue 30; nic_lib.variants.OOD_VARIANTS names
#: them, notebook 02 evaluates what is shipped). Not trained yet. Every mbt2018 variant is
#: a fine-tuning of the main line *as shipped* (``checkpoints/mbt2018/n96.pt``: no parent
#: stage, so n96 itself is not continued first) for the same OOD_FINETUNE_STEPS, with the
#: same crops, precision, EMA and learning rate; ``ood-dense`` is the control that only
#: fine-tunes, so each contrast compares models with equal training:
#:
#: - dense vs pruned (``ood-pruned-50``, ``ood-pruned-80``): ``--prune`` zeroes that share of
#:   the transforms' kernel weights by global magnitude, masks held (nic_lib.pruning);
#: - fixed vs variable rate (``ood-fixed-q<q>``): one network per λ of FIXED_QUALITIES,
#:   without gain units (n96's gains are dropped by the warm start, so each run first
#:   re-adapts its latent scale); at q3 it meets ``ood-dense``'s level 3 at matched λ;
#: - MSE vs MS-SSIM (``ood-msssim``): λ from LAMBDA_MSSSIM, crops of 192 (MS-SSIM's five
#:   scales need 161 px; 192 is the next multiple of the model's 64);
#: - the training data's spectrum (``ood-data-blur``, ``ood-data-noise``; beyond the paper):
#:   ``ood-dense``'s command plus ``--data-filter``, every training crop blurred or given
#:   noise (DATA_BLUR_SIGMA, DATA_NOISE_SIGMA below);
#: - ELIC (``ood-elic-q<q>``): the registry's cpu widths N = 64, M = 192
#:   (registry.CPU_MODEL_WIDTHS), fixed rate (gain units are not wired into CompressAI's
#:   latent codecs); q3 trained from scratch for ELIC_STEPS, the other λ fine-tuned from it
#:   for ELIC_FINETUNE_STEPS (the usual way to get an RD curve from one long run).
#:
#: Budgets from benchmarks/ood_step_time.py (one thread, 128² crops, batch 8, beside two
#: other busy jobs on this 2-core machine, so upper bounds): STEP_TIME below, s/step.
OOD_FINETUNE_STEPS = 8000
ELIC_STEPS = 20000
ELIC_FINETUNE_STEPS = 5000
FIXED_QUALITIES = ["1", "3", "4", "6"]  # nic_lib.variants.FIXED_QUALITIES
N96_SHIPPED = CHECKPOINTS / "mbt2018" / "n96.pt"
#: These are AVX512/AMX machine times with bf16; on an AVX2-only machine bf16 is emulated
#: and runs compute in fp32 (nic_lib.training.precision.for_this_machine): n96's step took
#: 1.45 s there (2026-12-07, beside one other run), ~2.7x the 0.53 below, so ``--list``'s
#: CPU hours are that much too low on such a machine.
#: Measured 2026-12-07 at load average 5-6 (``nice python benchmarks/ood_step_time.py
#: --repeats 2 --steps 12``, then ``--variants elic2022-n64 elic2022-n96 mbt2018-n96-vr``):
#: medians of 2-4 runs. ELIC N = 64: 1.30-1.41 s (2.1 s at N = 96, so N = 64) in fp32; its
#: stages train in bf16 like the mbt2018 variants since 2026-12-07, when ELIC N = 64 took
#: 0.76 s/step in bf16 against 1.05 in fp32 (1.4x; ``nice python benchmarks/ood_step_time.py
#: --variants elic2022-n64 elic2022-n64-bf16 --steps 12 --repeats 2``, AVX512-BF16 machine
#: at load ~2.7): its budget below is 1.35 / 1.4.
STEP_TIME = {"mbt2018-vr": 0.53, "mbt2018-pruned": 0.49, "mbt2018-fixed": 0.49,
             "mbt2018-msssim": 1.02, "elic2022": 0.97,
             # the scale hyperprior's entropy-only step (ablate-*-hyperprior*): its 30,000-step
             # protocol run took 1,041 s with the latent caching, beside another run
             "entropy-only": 0.035}
#: Seconds per step of each ablation's entropy-only run (``nic_lib.train_entropy``, fp32,
#: one thread, AVX-512 machine beside one other run, 2026-12-07; the caching of the latents
#: included): measured for the scale hyperprior (1,041 s / 30,000 steps), mean-scale (3,172 s)
#: and the joint model (0.18 s/step over its first 11,500 steps); the other context models
#: are taken as the joint's (same context and entropy-parameter networks; the GMM's
#: entropy parameters are 3x as wide, so it is a lower bound there), the factorized prior
#: as the scale hyperprior's.
ABLATION_STEP_TIME = {"bmshj2018-hyperprior": 0.035, "bmshj2018-factorized": 0.035,
                      "mbt2018-mean": 0.105}
ABLATION_CONTEXT_STEP_TIME = 0.18
_OOD = ["--batch-size", "8", "--no-progress", "--schedule-clock", "steps",
        "--warmup-steps", "100", "--min-lr-ratio", "0.1", "--ema", "0.999",
        "--eval-every", "2000", "--eval-images", "4", "--eval-crop", "256", "--threads", "1"]
#: n96 fine-tuned: its widths, bf16 as n96 trained; peak 5e-5, a third of n96's own
#: starting rate (1.65e-4) and 5x its floor: enough for an 80%-pruned or gain-less network
#: to re-adapt within 8,000 steps, low enough not to undo the dense model's convergence
#: (a choice, not measured); cosine to 5e-6. The same for every variant: equal training.
def _from_n96(*flags: str, crop: str = "128") -> list[str]:
    return ["--model", "mbt2018", "--N", str(N_WIDE), "--M", str(M_WIDE), "--precision", "bf16",
            "--crop", crop, *_OOD, "--lr", "5e-5", "--max-steps", str(OOD_FINETUNE_STEPS),
            "--init-from", str(N96_SHIPPED), *flags]


_VR = ["--qualities", *QUALITIES_WIDE]
OOD_STAGES: dict[str, tuple[str | None, list[str], str]] = {
    "ood-dense": (None, _from_n96(*_VR), "ood/mbt2018-dense.pt"),
    "ood-pruned-50": (None, _from_n96(*_VR, "--prune", "0.5"), "ood/mbt2018-pruned-50.pt"),
    "ood-pruned-80": (None, _from_n96(*_VR, "--prune", "0.8"), "ood/mbt2018-pruned-80.pt"),
    "ood-msssim": (None, _from_n96(*_VR, "--metric", "ms-ssim", crop="192"),
                   "ood/mbt2018-msssim.pt"),
}
for _q in FIXED_QUALITIES:
    OOD_STAGES[f"ood-fixed-q{_q}"] = (None, _from_n96("--quality", _q),
                                      f"ood/mbt2018-fixed-q{_q}.pt")

#: Beyond the paper (issue 30): does the training data's spectrum cause the bias? The same
#: fine-tuning as ``ood-dense`` (steps, learning rate, qualities, crops: the same budget)
#: on altered crops, ``--data-filter`` (nic_lib.training.data.filter_crops). Strengths
#: chosen by measurement, not guessed: on the crops these stages train on (512 crops of 128
#: px, --data train, seeds 0 and 1; each crop's mean removed, Hann window, RGB; band
#: energies after / before, bands of nic_lib.spectral.BAND_EDGES; ``python
#: benchmarks/data_filter_spectra.py [--seed 1]``, 2026-12-07):
#:
#: - blur σ = 0.75 px: high band (>= 1/2 Nyquist) x0.099 / x0.098 (10x down), the annuli at
#:   0.9-1.0 Nyquist x0.014 / x0.013, mid x0.69 / x0.70, low x0.988 / x0.988 (-1.2%).
#:   σ = 0.5 only halves the high band (x0.43), σ = 1 takes it 43x down (x0.023) and the mid
#:   band to x0.55. Weaker than ImageNet-C's gaussian_blur at severity 1 (σ = 1 px).
#: - noise σ = 40 grey levels: high band x8.2 / x8.2, top annuli x15.0 / x15.3, mid x1.41,
#:   low x0.896 / x0.900 (-10%: clipping at 0 and 255 pulls bright and dark regions in; the
#:   noise itself adds ~1%). σ = 32 gives x5.8 (low -7%), σ = 48 x10.9 (low -14%). Between
#:   ImageNet-C's gaussian_noise at severity 2 and 3 (σ = 31 and 46 grey levels), so
#:   notebook 02's gaussian_noise is close to this model's training data.
#:
#: The filter costs 6-9 ms per batch of 8 in the crop thread (0.53 s per step), so the
#: budget is ood-dense's.
DATA_BLUR_SIGMA = "0.75"
DATA_NOISE_SIGMA = "40"
DATA_FILTER_STAGES = {"ood-data-blur": f"blur:{DATA_BLUR_SIGMA}",
                      "ood-data-noise": f"noise:{DATA_NOISE_SIGMA}"}
for _stage, _spec in DATA_FILTER_STAGES.items():
    OOD_STAGES[_stage] = (None, [*OOD_STAGES["ood-dense"][1], "--data-filter", _spec],
                          f"ood/mbt2018-{_stage.removeprefix('ood-')}.pt")

_ELIC = ["--model", "elic2022", "--N", "64", "--M", str(M_WIDE), "--precision", "bf16",
         "--crop", "128", *_OOD]
#: ELIC from scratch: 1e-4 is ELIC's and CompressAI's rate for long runs; a short CPU run
#: takes 3e-4 (the transforms start from nothing), cosine to 3e-5.
OOD_STAGES["ood-elic-q3"] = (None, [*_ELIC, "--quality", "3", "--lr", "3e-4", "--max-steps",
                                    str(ELIC_STEPS)], "ood/elic2022-q3.pt")
for _q in FIXED_QUALITIES:
    if _q != "3":
        OOD_STAGES[f"ood-elic-q{_q}"] = ("ood-elic-q3", [
            *_ELIC, "--quality", _q, "--lr", "1e-4", "--max-steps", str(ELIC_FINETUNE_STEPS),
            "--init-from", str(RUNS / "ood-elic-q3" / "final.pt")], f"ood/elic2022-q{_q}.pt")
STAGES.update(OOD_STAGES)

#: Low-rate levels (issue 31: PQ-MIM sits at 0.04-0.19 bpp, the main line starts at ~0.22
#: on Kodak, so no BD-rate between them exists). Not trained yet. ``n96-lowrate-init`` is
#: the shipped main line with the levels of registry.LOW_RATE_QUALITIES added below q1
#: (scripts/widen_checkpoint.py --qualities, nic_lib.models.widen.add_levels: the trained
#: levels unchanged, each new one's gains extrapolated along the learned log-gain step;
#: λ 0.00093 ... 0.000067, chosen from the measured rate-λ law of n96's shipped levels,
#: registry.LOW_RATE_QUALITIES' docstring). ``n96-lowrate`` then fine-tunes every level, old
#: and new (so the old ones do not drift), as the OOD fine-tunings do (bf16, peak 5e-5,
#: EMA), for LOWRATE_STEPS: levels are trained cyclically, so each of the 13 sees ~1,000
#: steps. ``ablate-bmshj2018-hyperprior-lowrate`` is the scale hyperprior on those
#: transforms, by the ablation protocol (frozen transforms and gains, a fresh entropy model,
#: ABLATION_STEPS), the paper's comparison model at PQ-MIM's rates.
#: Budget (--list): n96-lowrate at STEP_TIME["mbt2018-vr"] (0.53 s; re-measured for issue 31 on
#: 2026-12-07 at load ~6: 0.503 s/step, ``nice python benchmarks/ood_step_time.py --variants
#: mbt2018-n96-vr --steps 12 --repeats 2``; the number of levels does not change a step),
#: 13,000 x 0.53 s = 1.9 CPU h; the hyperprior at the ablations' 0.24 s/step (their
#: comment's ~40 min per 10,000 steps, not re-measured), 0.7 CPU h.
#: Checked before any training (2026-12-07): n96-lowrate-init made from the shipped n96.pt
#: reconstructs its 8 trained levels exactly (widen_checkpoint's check), and its added,
#: still untrained levels code kodim04 + kodim23 (mean) at q-4 0.027 bpp / 24.57 dB, q-2
#: 0.046 / 26.83, q0 0.088 / 29.11 (q1 0.123 / 30.40): the range reaches PQ-MIM's rates.
QUALITIES_LOW = [str(q) for q in (-4, -3, -2, -1, 0)]  # registry.LOW_RATE_QUALITIES
LOWRATE_STEPS = 13000
#: Derived checkpoints made from a *shipped* file instead of a stage's final.pt.
DERIVED_FROM_FILE = {"n96-lowrate-init": N96_SHIPPED}
DERIVED["n96-lowrate-init"] = (None, ["--qualities", *QUALITIES_LOW, *QUALITIES_WIDE])
STAGES["n96-lowrate"] = ("n96-lowrate-init", [
    "--model", "mbt2018", "--N", str(N_WIDE), "--M", str(M_WIDE), "--precision", "bf16",
    "--qualities", *QUALITIES_LOW, *QUALITIES_WIDE, "--crop", "128", *_OOD, "--lr", "5e-5",
    "--max-steps", str(LOWRATE_STEPS), "--init-from", str(RUNS / "n96-lowrate-init.pt")],
    "mbt2018/n96-lowrate.pt")
LOWRATE_BASE = "mbt2018/n96-lowrate.pt"
STAGES["ablate-bmshj2018-hyperprior-lowrate"] = ("n96-lowrate", [
    "--model", "bmshj2018-hyperprior", "--qualities", *QUALITIES_LOW, *QUALITIES_WIDE,
    "--transforms", str(CHECKPOINTS / LOWRATE_BASE), "--crop", "128", "--batch-size", "8",
    "--crops", "16384", "--steps", str(ABLATION_STEPS), "--lr", ABLATION_LR,
    "--warmup-steps", "100", "--min-lr-ratio", "0.05", "--eval-images", "4",
    "--eval-crop", "256", "--threads", "1"], "bmshj2018-hyperprior/n96-lowrate.pt")
LOWRATE_STAGES = ("n96-lowrate", "ablate-bmshj2018-hyperprior-lowrate")

#: The top levels (issue 25). On n96's evaluation crops the low levels beat JPEG 2000 from
#: the first evaluation on while q6-q8 stay behind and close slowly (q8: -2.32 dB at step
#: 2,000, -1.87 at 26,000): the shared transforms bind at the top. ``n96-top`` is n96 at
#: step 26,500 (the ablations' transforms file) cut to q6-q8 unchanged
#: (``widen_checkpoint.py --keep-qualities``, :func:`nic_lib.models.widen.select_levels`) and
#: trained on with exactly n96's schedule from that step (``--start-step``) to n96's last
#: step (``--max-steps`` = ``--lr-decay-steps`` = 43,500), so that at each step it can be set
#: beside n96's own evaluation rows of q6-q8: the same CPU time, all of it spent on the top
#: levels. Measured at its step 30,000 it beats n96 there by +0.3 ... +0.7 dB (README), so it
#: ships as ``checkpoints/mbt2018/n96-top.pt``, where the cpu profile serves q6-q8 of
#: ``mbt2018`` from it (:func:`nic_lib.models.hub.cpu_checkpoint_for`; ``hub.CPU_STAGES``
#: names this stage as ``mbt2018-top``). A run folder made when the stage stopped at 32,500
#: is resumed to the new last step (:func:`run`, :func:`extended`).
TOP_QUALITIES = ["6", "7", "8"]
DERIVED["n96-top-init"] = (None, ["--keep-qualities", *TOP_QUALITIES])
DERIVED_FROM_FILE["n96-top-init"] = RUNS / f"n96-step{ABLATION_TRANSFORMS[2]}.pt"
STAGES["n96-top"] = ("n96-top-init", [
    "--model", "mbt2018", "--N", str(N_WIDE), "--M", str(M_WIDE), "--qualities", *TOP_QUALITIES,
    "--crop", "128", "--batch-size", "8", "--no-progress", "--schedule-clock", "steps",
    "--lr", "1.65e-4", "--warmup-steps", "200", "--lr-decay-steps", str(N96_LAST_STEP),
    "--max-steps", str(N96_LAST_STEP), "--min-lr-ratio", "0.0606",
    "--ema", "0.999", "--eval-every", "2000", "--eval-images", "4", "--eval-crop", "256",
    "--precision", "bf16", "--threads", "1", "--init-from", str(RUNS / "n96-top-init.pt"),
    "--start-step", str(ABLATION_TRANSFORMS[2])], "mbt2018/n96-top.pt")


def ood_budget(stage: str) -> tuple[int, float]:
    """(steps, estimated CPU hours) of an ood-*, low-rate or ablation stage: its steps x
    STEP_TIME (an ablation's: ABLATION_STEP_TIME)."""
    flags = STAGES[stage][1]
    if stage in ABLATIONS:
        steps = int(flags[flags.index("--steps") + 1])
        per_step = ABLATION_STEP_TIME.get(ABLATIONS[stage][0], ABLATION_CONTEXT_STEP_TIME)
        return steps, steps * per_step / 3600
    if stage == "ablate-bmshj2018-hyperprior-lowrate":
        steps = int(flags[flags.index("--steps") + 1])
        return steps, steps * STEP_TIME["entropy-only"] / 3600
    if "elic2022" in flags:
        kind = "elic2022"
    elif "--prune" in flags:
        kind = "mbt2018-pruned"
    elif "ms-ssim" in flags:
        kind = "mbt2018-msssim"
    else:
        kind = "mbt2018-vr" if "--qualities" in flags else "mbt2018-fixed"
    steps = max_steps(stage)
    return steps, steps * STEP_TIME[kind] / 3600

def calibrated(stage: str) -> bool:
    """Whether the model a stage ships gets its scale calibration refitted: its target's
    model folder is one of ``nic_lib.models.calibration.CALIBRATED_MODELS`` (the scale
    hyperprior and the mean-scale model, whose ``h_s`` outputs σ: on the tuning photos the
    first came out overconfident, the second underconfident; ``ablate-mbt2018-mean`` ships
    ``mbt2018-mean/n96.pt``). Until 2026-12-07 the check compared the stage's own name with
    the model names, which the ``ablate-*`` stages never matched: the N = 96 hyperprior
    models shipped uncalibrated."""
    sys.path.insert(0, str(REPO))
    from nic_lib.models.calibration import CALIBRATED_MODELS

    target = STAGES.get(stage, (None, None, None))[2]
    return target is not None and Path(target).parts[0] in CALIBRATED_MODELS


def command(stage: str) -> list[str]:
    """The command line of a stage: ``python -m nic_lib.train`` (an ablation:
    ``python -m nic_lib.train_entropy``)."""
    _, flags, _ = STAGES[stage]
    flags = list(flags)
    if stage in ABLATIONS:  # the runs folder as it is now (NIC_RUNS_DIR, tests)
        flags[flags.index("--transforms") + 1] = str(ablation_transforms_path())
    module = "nic_lib.train_entropy" if stage.startswith("ablate-") else "nic_lib.train"
    return [sys.executable, "-m", module, *flags, "--out-dir", str(RUNS / stage)]


def ablation_transforms_path() -> Path:
    """Where :func:`ablation_transforms` keeps the ablations' frozen transforms."""
    return RUNS / f"n96-step{ABLATION_TRANSFORMS[2]}.pt"


def ablation_transforms() -> Path:
    """The ablations' frozen transforms (:data:`ABLATION_TRANSFORMS`) as a file in the runs
    folder, restored from the repository's history when missing."""
    commit, path, step = ABLATION_TRANSFORMS
    out = ablation_transforms_path()
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        done = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=REPO, stdout=f,
                              stderr=subprocess.PIPE)
    if done.returncode:
        tmp.unlink(missing_ok=True)
        raise SystemExit(
            f"the ablations train on {path} as of commit {commit} (n96 at step {step}), "
            f"which `git show` could not restore ({done.stderr.decode().strip()}); run this "
            "script in a git clone of the repository with its history (not a shallow clone "
            f"or an archive), or put that file at {out}")
    tmp.replace(out)
    return out


def parent(stage: str) -> str | None:
    """The stage (or derived checkpoint) a stage starts from."""
    return DERIVED[stage][0] if stage in DERIVED else STAGES[stage][0]


def product(stage: str) -> Path:
    """What a stage leaves behind when it is done: a derived .pt or the run's final.pt."""
    return RUNS / f"{stage}.pt" if stage in DERIVED else RUNS / stage / "final.pt"


def lineage(stage: str) -> list[str]:
    """The stage and every stage it starts from, earliest first."""
    chain = []
    while stage is not None:
        chain.insert(0, stage)
        stage = parent(stage)
    return chain


def max_steps(stage: str) -> int | None:
    """The ``--max-steps`` of a stage's command (an ablation's: its ``--steps``, the length
    of its schedule); None when it has none."""
    flags = STAGES[stage][1]
    for flag in ("--max-steps", "--steps"):
        if flag in flags:
            return int(flags[flags.index(flag) + 1])
    return None


def made_for(stage: str) -> int | None:
    """The steps a stage's run folder was made for (its ``config.json``: ``max_steps`` of a
    ``nic_lib.train`` run, ``steps`` of a ``nic_lib.train_entropy`` one); None without one."""
    config = RUNS / stage / "config.json"
    if not config.is_file():
        return None
    made = json.loads(config.read_text()).get("config", {})
    steps = made.get("max_steps", made.get("steps"))
    return None if steps is None else int(steps)


@functools.lru_cache(maxsize=None)
def _shipped_meta(path: Path, mtime_ns: int, size: int) -> dict:
    """A shipped checkpoint's top-level entries but its weights, read once per version of
    the file (``mtime_ns``, ``size``: a file shipped again is read again)."""
    import torch

    meta = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in meta.items() if k != "state_dict"}


def shipped_state(stage: str) -> tuple[str, Path, int] | None:
    """What of a stage's run is shipped in ``checkpoints/``: ``("final", path, step)`` for a
    finished run, ``("snapshot", path, step)`` for the EMA snapshot of an unfinished one,
    ``("stale", path, step)`` for an ablation finished under a shorter protocol (fewer
    ``--steps`` than the stage asks now: retrained), None for nothing (no shipped product,
    or the file is another stage's).

    The file is the stage's when the last entry of its ``lineage`` is this stage's run.
    """
    if stage not in STAGES or not STAGES[stage][2]:
        return None
    shipped = CHECKPOINTS / STAGES[stage][2]
    if not shipped.is_file():
        return None
    stat = shipped.stat()
    meta = _shipped_meta(shipped, stat.st_mtime_ns, stat.st_size)
    lineage_ = meta.get("lineage") or []
    if not lineage_ or Path(lineage_[-1]).name != stage or meta.get("step") is None:
        return None
    step, total = int(meta["step"]), max_steps(stage)
    unfinished = meta.get("snapshot_of") and (total is None or step < total)
    if not unfinished and stage.startswith("ablate-") and total is not None and step < total:
        # a finished run of a shorter protocol (ABLATION_STEPS was 10,000 until 2026-12-07):
        # its schedule ended at its own last step, so it is retrained, not continued
        return "stale", shipped, step
    return ("snapshot" if unfinished else "final"), shipped, step


def shipped_snapshot(stage: str) -> tuple[Path, int] | None:
    """The shipped EMA snapshot of an unfinished run of ``stage`` and its step, when the
    run folder itself is gone (a fresh machine: run folders live outside the repository);
    the run then continues from it (:func:`continue_command`) instead of re-running its
    lineage from the start."""
    if (RUNS / stage / "ckpt.pt").is_file() or product(stage).is_file():
        return None
    state = shipped_state(stage)
    return (state[1], state[2]) if state and state[0] == "snapshot" else None


def continue_command(stage: str, shipped: Path, step: int) -> list[str]:
    """A stage's command, warm-started from its shipped snapshot at ``step``: the same
    flags and schedule, the step counter starting at ``step`` (``--start-step``: fresh
    optimizer state, warm-up to the schedule's rate there). The snapshot is copied into the
    runs folder first: the shipped file is replaced when the continued run ships; so are
    the shipped records (log.csv, eval.csv) of the steps before ``step``, which
    :func:`ship_records` puts back in front of the continued run's when it ships."""
    import shutil

    start = RUNS / f"{stage}-from-step{step}.pt"
    if not start.is_file():
        start.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shipped, start.with_suffix(".tmp"))
        start.with_suffix(".tmp").replace(start)
    keep_records_before(stage, step)
    cmd = command(stage)
    for flag in ("--init-from", "--start-step"):  # n96-top has its own --start-step
        if flag in cmd:
            i = cmd.index(flag)
            del cmd[i:i + 2]
    return [*cmd, "--init-from", str(start), "--start-step", str(step)]


#: Records of a shipped run that travel with its checkpoint (``<stem>.<name>``).
RECORDS = ("log.csv", "eval.csv")


def _records_before(stage: str) -> tuple[Path, int] | None:
    """The folder holding a continued stage's records from before its start step, and
    that step (the latest one, if it was continued more than once)."""
    found = sorted(RUNS.glob(f"{stage}-records-before-step*"),
                   key=lambda p: int(p.name.rsplit("step", 1)[1]))
    return (found[-1], int(found[-1].name.rsplit("step", 1)[1])) if found else None


def keep_records_before(stage: str, step: int) -> Path:
    """Copy a stage's shipped records (its steps up to ``step``) into the runs folder,
    before a run that continues the stage from its snapshot replaces them."""
    folder = RUNS / f"{stage}-records-before-step{step}"
    folder.mkdir(parents=True, exist_ok=True)
    target = CHECKPOINTS / STAGES[stage][2]
    for name in RECORDS:
        shipped = target.with_name(f"{target.stem}.{name}")
        if shipped.is_file() and not (folder / name).is_file():
            (folder / name).write_bytes(shipped.read_bytes())
    return folder


def ship_records(stage: str) -> None:
    """A continued stage's shipped records: the rows up to its start step from before
    (:func:`keep_records_before`) followed by the continued run's rows, so the shipped
    log covers the whole run."""
    import pandas as pd

    before = _records_before(stage)
    if before is None:
        return
    folder, step = before
    target = CHECKPOINTS / STAGES[stage][2]
    for name in RECORDS:
        old, new = folder / name, target.with_name(f"{target.stem}.{name}")
        if not (old.is_file() and new.is_file()):
            continue
        head, tail = pd.read_csv(old), pd.read_csv(new)
        whole = pd.concat([head[head["step"] <= step], tail[tail["step"] > step]])
        tmp = new.with_suffix(".tmp")
        whole.to_csv(tmp, index=False)
        tmp.replace(new)


def extended(stage: str) -> bool:
    """Whether a stage's run folder was made for fewer steps than the stage now asks (its
    ``config.json``'s ``max_steps`` below the command's ``--max-steps``: ``n96-top`` went
    from 32,500 to n96's last step). Such a run is not done even with a ``final.pt``: it
    is resumed with the new ``--max-steps`` (a runtime setting of ``--resume``; the
    schedule, ``--lr-decay-steps``, is the run's own)."""
    if stage not in STAGES or stage.startswith("ablate-"):
        return False  # an ablation's schedule is its --steps: see stale_run
    total, made = max_steps(stage), made_for(stage)
    return total is not None and made is not None and made < total


def stale_run(stage: str) -> bool:
    """Whether an ablation's run folder was made for another number of steps than the
    protocol asks now (:data:`ABLATION_STEPS`): its cosine schedule is its own, so it can
    be neither resumed nor shipped as the protocol's."""
    made = made_for(stage)
    return stage.startswith("ablate-") and made is not None and made != max_steps(stage)


def finished(stage: str) -> bool:
    """Whether a stage's run has its ``final.pt`` for the steps the stage asks
    (:func:`extended`)."""
    return (RUNS / stage / "final.pt").is_file() and not extended(stage) and not stale_run(stage)


def needed(stage: str, from_scratch: bool = False) -> list[str]:
    """The stages to run for ``stage``: its lineage from the latest stage that is done, has
    a run folder to resume, or (unless ``from_scratch``) has a shipped product to continue
    from or stand for it."""
    chain = lineage(stage)
    for i in range(len(chain) - 1, -1, -1):
        s = chain[i]
        if product(s).is_file() or (s in STAGES and (RUNS / s / "ckpt.pt").is_file()):
            return chain[i:]
        if not from_scratch and shipped_state(s) is not None:
            return chain[i:]
    return chain


def derive(name: str) -> None:
    """Make a derived checkpoint (widened latent, added levels) unless it exists."""
    out = RUNS / f"{name}.pt"
    if out.is_file():
        print(f"[{name}] done: {out}")
        return
    source, flags = DERIVED[name]
    start = DERIVED_FROM_FILE.get(name, RUNS / str(source) / "final.pt")
    if Path(start) == ablation_transforms_path():
        ablation_transforms()  # restored from git when missing
    cmd = [sys.executable, str(REPO / "scripts" / "widen_checkpoint.py"),
           str(start), *flags, "--out", str(out)]
    print(f"[{name}] {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def run(stage: str, from_scratch: bool = False) -> None:
    """Train a stage unless its final.pt exists (resume it if it was interrupted, continue
    it from its shipped snapshot if its run folder is gone)."""
    if stage in DERIVED:
        derive(stage)
        return
    out = RUNS / stage
    if finished(stage):
        print(f"[{stage}] done: {out / 'final.pt'}")
        return
    if stale_run(stage):
        raise SystemExit(
            f"[{stage}] {out} was made for {made_for(stage):,} steps and the protocol now asks "
            f"{max_steps(stage):,} (ABLATION_STEPS): its schedule cannot be resumed or "
            f"stretched. Move the folder away (e.g. to {out}-{made_for(stage)}) and run again.")
    cmd = command(stage)
    state = None if from_scratch else shipped_state(stage)
    if state and state[0] == "final" and not (out / "ckpt.pt").is_file():
        print(f"[{stage}] done: shipped as {state[1]} (step {state[2]}; --from-scratch "
              "retrains it)")
        return
    if state and state[0] == "stale":
        print(f"[{stage}] shipped at step {state[2]:,}, the protocol now asks "
              f"{max_steps(stage):,}: retraining", flush=True)
    snapshot = None if from_scratch else shipped_snapshot(stage)
    if stage in ABLATIONS:
        ablation_transforms()
    if (out / "ckpt.pt").is_file():
        module = "nic_lib.train_entropy" if stage.startswith("ablate-") else "nic_lib.train"
        cmd = [sys.executable, "-m", module, "--resume", str(out)]
        if extended(stage):  # made for fewer steps: on to the stage's last step
            cmd += ["--max-steps", str(max_steps(stage))]
    elif snapshot is not None:
        cmd = continue_command(stage, *snapshot)
        print(f"[{stage}] no run folder: continuing from the shipped snapshot {snapshot[0]} "
              f"(step {snapshot[1]}; --from-scratch re-runs the lineage instead)", flush=True)
    print(f"[{stage}] {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def storage(stage: str) -> dict:
    """How a stage's checkpoint is stored (``ship_run``'s ``base``/``dtype``/``keep_float16``):
    the protocol's joint model with float16 transforms and an int8 entropy model, the other
    ablations as int8 entropy models on it, everything else in float16."""
    import torch

    if stage == "ablate-mbt2018":
        return {"dtype": torch.int8, "keep_float16": FROZEN}
    if stage in ABLATIONS:
        return {"base": CHECKPOINTS / ABLATION_BASE, "dtype": torch.int8}
    if stage.startswith("ablate-"):
        return {"base": CHECKPOINTS / LOWRATE_BASE, "dtype": torch.int8}
    return {}


def ship(stage: str) -> Path | None:
    """Copy a stage-3 model into checkpoints/ (fp16 convolutions) with its logs
    (``nic_lib.train.ship_run``).

    Stages that ship no model (base, mbt2018-vr) ship their logs to checkpoints/stages/.
    """
    sys.path.insert(0, str(REPO))
    import torch

    from nic_lib import train

    if stage in DERIVED:
        return None
    target = STAGES[stage][2]
    if target is None:
        train.copy_run_records(RUNS / stage, CHECKPOINTS / "stages", stage)
        return None
    dest = train.ship_run(RUNS / stage, CHECKPOINTS / target,
                          [str(Path("runs/cpu-profile") / s) for s in lineage(stage)],
                          **storage(stage))
    ship_records(stage)
    print(f"[{stage}] shipped {dest} ({dest.stat().st_size / 1e6:.2f} MB)")
    if calibrated(stage):  # new weights: refit their scale calibration (~5 min at N = 96, M = 192)
        subprocess.run([sys.executable, str(REPO / "scripts" / "calibrate_scales.py"),
                        "--checkpoint", str(dest)], check=True, cwd=REPO)
    return dest


def ship_snapshot(stage: str) -> Path:
    """Ship an unfinished run's current EMA weights (a run that spans sessions)."""
    sys.path.insert(0, str(REPO))
    import tempfile

    from nic_lib import train

    from nic_lib import train_entropy

    snapshot_final = (train_entropy.snapshot_final if stage.startswith("ablate-")
                      else train.snapshot_final)
    with tempfile.TemporaryDirectory() as tmp:
        snapshot_final(RUNS / stage, Path(tmp) / "final.pt")
        for name in train.RUN_RECORDS:
            if (RUNS / stage / name).is_file():
                (Path(tmp) / name).write_bytes((RUNS / stage / name).read_bytes())
        dest = train.ship_run(Path(tmp), CHECKPOINTS / STAGES[stage][2],
                              [str(Path("runs/cpu-profile") / s) for s in lineage(stage)],
                              **storage(stage))
    ship_records(stage)
    print(f"[{stage}] shipped the EMA snapshot of an unfinished run: {dest} "
          f"({dest.stat().st_size / 1e6:.2f} MB)")
    return dest


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=sorted([*STAGES, *DERIVED]), help="these stages (and "
                   "the stages they start from); default all")
    p.add_argument("--list", action="store_true", help="print the stages and exit")
    p.add_argument("--from-scratch", action="store_true",
                   help="re-run a stage's lineage even where a shipped snapshot of it could be "
                   "continued (default: continue it)")
    p.add_argument("--ship-only", action="store_true",
                   help="copy finished runs into checkpoints/ without training")
    args = p.parse_args(argv)
    stages = args.only or list(STAGES)
    if args.list:
        for stage in STAGES:
            budget = (" [{} steps, ~{:.1f} CPU h]".format(*ood_budget(stage))
                      if stage in OOD_STAGES or stage in LOWRATE_STAGES or stage in ABLATIONS
                      else "")
            print(f"{stage}{budget}: {' '.join(command(stage)[1:])}")
        for name, (source, flags) in DERIVED.items():
            start = DERIVED_FROM_FILE.get(name, f"{source}/final.pt")
            print(f"{name}: scripts/widen_checkpoint.py {start} {' '.join(flags)}")
        return
    order = []
    for stage in stages:
        order += [s for s in needed(stage, args.from_scratch) if s not in order]
    for stage in order:
        if not args.ship_only:
            run(stage, args.from_scratch)
        if finished(stage):
            ship(stage)
        elif stage in STAGES and STAGES[stage][2] and (RUNS / stage / "ckpt.pt").is_file():
            ship_snapshot(stage)
    # what was shipped, for the README / notebook
    print(json.dumps({s: STAGES[s][2] for s in order if s in STAGES and STAGES[s][2]}, indent=1))


if __name__ == "__main__":
    main()
