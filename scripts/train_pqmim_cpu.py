"""Retrain the shipped PQ-MIM "cpu" profile checkpoints: ``python scripts/train_pqmim_cpu.py``.

Three rate points, one run each (``python -m nic_lib.train_pqmim``, stages A then B), and
the perceptual variant of the middle one (stage C):

=========  ==========================  ===============================
rate point fixed-length rate            checkpoint
=========  ==========================  ===============================
M=2 K=256  2·8 = 16 bits per token      ``checkpoints/pqmim/M2-K256.pt``
M=4 K=256  32 bits per token            ``checkpoints/pqmim/M4-K256.pt``
M=8 K=256  64 bits per token            ``checkpoints/pqmim/M8-K256.pt``
M=1 K=256  8 bits per token (plain VQ)  ``checkpoints/pqmim/M1-K256.pt`` (not trained yet)
M=2 K=16   8 bits per token (PQ)        ``checkpoints/pqmim/M2-K16.pt`` (not trained yet)
=========  ==========================  ===============================

The last two are the VQ-vs-PQ pair of issue 31 (``VQ_PAIR``): the same bits per token, one
codebook or two. ``--list`` prints each rate point's steps and estimated CPU hours.

A token covers 16x16 pixels, so 16/32/64 bits are 0.0625/0.125/0.25 bpp before the MIM
model's entropy coding lowers them. The choices that fit this project's 2-core CPU (the
paper trains on ImageNet with a GPU budget; see notebook 05):

- ``--N 64 --crop 128``: the default N=128 at 256 crops ran at ~1 image/s on one core
  (measured: ``--steps-a 30``), N=64 at 128 crops at ~14-17 images/s;
- ``--lr-a 5e-4``: a short schedule wants a higher peak than VQ-VAE's 2e-4 (the mbt2018
  cpu profile's base stage peaks at 1e-3);
- ``--crop-b 192``: stage B draws 12x12-token windows from code maps of the whole training
  images, computed once (~70 s); 192 rather than 256 because the median training image
  (333x481, JPEGs coded at 3/4 size) holds no 16x16-token window;
- a step clock (``STEPS_A``, ``STEPS_B``, ``STEPS_C``), so a loaded machine trains the same
  models, only slower. Measured on one core each (2026-11-30): stage A ~0.5 s per step
  in fp32 (about 20 min), stage B ~0.35 s per step, stage C ~2.3 s per step (23 min).
  Stage B's 12,000 steps took 78-94 min per rate point on one core, on a machine shared
  with two other jobs (2026-11-30/12-01);
- ``--precision bf16`` (since 2026-12-07; the shipped M2/M4/M8 trained stage A in fp32):
  stage A's g_a and g_s under bfloat16 autocast, the quantizer and the losses in float32
  (:func:`nic_lib.training.pqmim.stage_a.train_step`). On this AVX512-BF16 machine a
  stage-A step was 1.8-2.0x faster (``OMP_NUM_THREADS=1 nice python
  benchmarks/pqmim_precision.py --rounds 16 --rate-points M4-K256 M1-K256 M2-K16``, fp32
  and bf16 alternating in one process at load ~2.4-3: M4-K256 0.71 -> 0.36 s/step, M1-K256
  0.73 -> 0.40, M2-K16 0.65 -> 0.34), so stage A's 2,000 steps take ~10-13 min, not
  ~20-25. On a CPU without native bfloat16 the run computes in fp32 instead
  (:func:`nic_lib.training.precision.for_this_machine`, recorded as
  ``precision_computed`` in ``config.json``) and takes the fp32 times;
- ``STEPS_B = 12000``: the MIM model is the lever of issue 7's saving, the coding schedule
  is not. The first shipped set had 4,000 steps and saved 20.9% (M2), 15.6% (M4) and 15.2%
  (M8) of the independent prior's bits on Kodak; 12,000 steps (3x) save 27.1%, 21.9% and
  21.3% on the same codes (below). Training bits per masked code of M4 (mean of the last 50
  log rows): 7.05 at step 2,000, 6.78 at 4,000, 6.60 at 8,000, 6.52 at 12,000, so a
  longer schedule alone is near its end, and a larger MIM model is no better in the same CPU
  time (README: width 384, 6 layers, 5.9% more bits after 70 minutes on M4).
- ``--mask-law``: ``schedule`` (the hidden fractions at which the coding schedule codes,
  per-crop mean loss; the default of new runs) for M2 and M4, whose stage B was retrained
  with it on 2026-12-01 (1.7% / 2.0% fewer bits on the photos-hr tuning crops than with the
  cosine law, README); ``cosine`` (MaskGIT's) for M8, whose stage B has not been retrained.

Measured on the shipped checkpoints (2026-12-01, all 24 Kodak images, S = 10,
``OMP_NUM_THREADS=1 python benchmarks/pqmim_bits.py``, 17 min), with each checkpoint's tuned
attention radius (the last step below: M2 r = 5, M4 r = 5, M8 r = 7): every decode exact, real
streams within 1.2% of Σ −log2 P on every image; MIM saving over the independent prior
M2-K256 30.9% (0.0418 bpp, 22.88 dB), M4-K256 24.7% (0.0911 bpp, 23.55 dB), M8-K256 22.0%
(0.1894 bpp, 24.64 dB). Issue 7's target is 30%: met at M2 only. (The cosine-law stage B
of M2 and M4 saved 29.4% and 23.4%; with global attention the cosine-law set saved 27.1%,
21.9% and 21.3%.) (The first M4-K256 stage B, one whole position per masking unit and 2,000
steps on 8x8-token crops, saved 3.9% on 8 Kodak images.)

How the shipped files were made: stage A as above (M8's resumed once from its step-500
``ckpt.pt``); stage B first with 4,000 steps, then restarted at 12,000 in a copy of each
run folder (``cp -r runs/pqmim-cpu/M4-K256 runs/pqmim-exp/M4-K256-b12k``, then
``python -m nic_lib.train_pqmim --resume runs/pqmim-exp/M4-K256-b12k --restart-b --crop-b
192 --steps-b 12000 --threads 1 --export runs/pqmim-exp/M4-K256-b12k.pt``; so the shipped
``config.json`` names the original run folder as ``out_dir``). A restarted stage B is the
computation a fresh run does (same seeded initialisation; windows and masks depend on
(seed, step) only). M2's and M4's stage B was then restarted once more with the schedule
law, from their exported checkpoints (``python -m nic_lib.train_pqmim --resume
checkpoints/pqmim/M4-K256.pt --restart-b --mask-law schedule --steps-b 12000 --threads 1
--out-dir runs/pqmim-schedule/M4-K256 --export runs/pqmim-schedule/M4-K256.pt``, ~75 min each
on one core, two side by side), so their ``config.json`` and ``log_b.csv`` are those runs'
(``log_a.csv`` is stage A's, unchanged). Stage C then ran from the new ``M4-K256.pt`` as this
script runs it; it trains only ``g_s`` and never reads the MIM model (but the pairing digest
covers it, so it is rerun). Its decoder came out bit-identical to the previous one once
(from the 4,000-step checkpoint) and not the second time (float rounding in the
discriminator from step 10; last log row 20.71 vs 20.69 dB).

Last, the MIM model's attention radius at inference is tuned for every rate point that
lacks a ``<name>.radius.json`` tuned on its current file (``scripts/tune_pqmim_radius.py``:
held-out photos-hr crops, about 7 minutes per rate point on one core); a perceptual variant
gets its base's radius.

Runs go to ``runs/pqmim-cpu/<name>/`` (git-ignored); a finished run is exported with its
``config.json`` and logs copied beside the checkpoint, and the exported weights are stored
in float16 (``save_checkpoint(..., dtype=torch.float16)``: half the size; codebooks stay float32) to keep the
shipped checkpoints inside the project's size budget. A checkpoint that exists is skipped;
an interrupted run resumes from its ``ckpt.pt`` / ``ckpt_c.pt``.

Runs that span sessions: ``--ship-only`` exports each unfinished run's latest ``ckpt.pt``
as a snapshot, ``checkpoints/pqmim/snapshots/<name>.pt`` (weights in float16, codebooks
float32; the step, and the run's ``config.json`` and log rows up to it beside it as
``<name>.config.json`` / ``<name>.log_a.csv``;
:func:`nic_lib.training.pqmim.export_snapshot`), in a folder of its own because a
snapshot is not a usable rate point (its MIM model is untrained). On a machine without the
run folder, a rate point with a shipped snapshot continues from it instead of from scratch:
stage A with the same flags and ``--init-from <copy> --start-step <step>`` (fresh optimizer
state, the rate ramped up again to the schedule's), or, when its stage A was finished,
stage B from step 0 (``--resume <copy> --restart-b``). The copy goes to
``runs/pqmim-cpu/<name>-from-step<step>.pt`` with its log, which the continued run's
``log_a.csv`` starts with, so the shipped log covers the whole run. Delete the snapshot
files once the finished checkpoint is committed.

Usage::

    OMP_WAIT_POLICY=PASSIVE python scripts/train_pqmim_cpu.py              # everything missing
    python scripts/train_pqmim_cpu.py --only M4-K256 --threads 1          # one run
    python scripts/train_pqmim_cpu.py --list                              # the commands
    python scripts/train_pqmim_cpu.py --only M1-K256 --ship-only           # end of a session
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs" / "pqmim-cpu"
OUT = REPO / "checkpoints" / "pqmim"
#: Snapshots of unfinished runs (not rate points: find_checkpoints does not look here).
SNAPSHOTS = OUT / "snapshots"

#: Steps of stage A (autoencoder + product quantizer) and B (MIM transformer), batch 8.
STEPS_A = 2000
STEPS_B = 12000
#: Steps of stage C (decoder fine-tuned with an adversarial loss).
STEPS_C = 600
COMMON = ["--N", "64", "--crop", "128", "--crop-b", "192", "--lr-a", "5e-4",
          "--steps-a", str(STEPS_A), "--steps-b", str(STEPS_B), "--precision", "bf16"]
#: name -> (extra flags); names are the checkpoint stems. The masking law each shipped
#: stage B was trained with (M8's has not been retrained with the schedule law).
RATE_POINTS = {"M2-K256": ["--M", "2", "--K", "256", "--mask-law", "schedule"],
               "M4-K256": ["--M", "4", "--K", "256", "--mask-law", "schedule"],
               "M8-K256": ["--M", "8", "--K", "256", "--mask-law", "cosine"]}
#: The VQ baseline (issue 31, not trained yet): M = 1 is plain VQ (one codebook over the whole
#: latent vector), beside a PQ point with the same bits per token, so the pair differs only
#: in the quantizer. 8 bits per token (0.03125 bpp before the MIM coder), VQ K = 256 vs PQ
#: M = 2 x K = 16: the same rate as the shipped M2-K256 (16 bits) would need a VQ codebook of
#: 2^16 = 65,536 codewords (and a 65,536-way MIM output), which 2,000 stage-A steps of batch 8
#: (16,000 crops, ~1M latent vectors) cannot populate, so the pair sits one step below the
#: shipped points. Same recipe and step budgets as the shipped points (COMMON), schedule law.
VQ_PAIR = {"M1-K256": ["--M", "1", "--K", "256", "--mask-law", "schedule"],
           "M2-K16": ["--M", "2", "--K", "16", "--mask-law", "schedule"]}
RATE_POINTS.update(VQ_PAIR)
#: Seconds per step on one core in fp32, for --list's CPU-hour estimates: stage A and B of
#: the shipped points as measured 2026-11-30 (module docstring: A ~0.5, B ~0.35); the VQ
#: pair measured below (STEP_TIME_MEASURED), else these.
STEP_TIME = {"a": 0.5, "b": 0.35}
#: Stage A in bf16 (COMMON's --precision) against fp32, the smallest of the rate points'
#: measured ratios (module docstring: 1.84x M1-K256, 1.93x M2-K16, 1.97x M4-K256): --list
#: divides stage A's fp32 times by it. On a CPU without native bfloat16 the run computes
#: fp32 and stage A takes STEP_TIME's fp32 time instead (budget() says which).
BF16_SPEEDUP_A = 1.8
#: Measured 2026-12-07 at load average ~6 on the 2-core machine (so upper bounds): 30 steps
#: of each stage, ``python -m nic_lib.train_pqmim --N 64 --crop 128 --crop-b 192 --lr-a 5e-4
#: --M <M> --K <K> --mask-law schedule --steps-a 30 --steps-b 30 --log-every 10 --threads 1``,
#: seconds per step between the log rows at steps 10 and 30 (wall_s); stage B's one-off code
#: maps (~70 s) are not included.
STEP_TIME_MEASURED: dict[str, dict[str, float]] = {"M1-K256": {"a": 0.80, "b": 0.42},
                                                   "M2-K16": {"a": 0.67, "b": 0.41}}
#: The perceptual variant: name -> base rate point.
PERCEPTUAL = {"M4-K256-perceptual": "M4-K256"}


def shipped_snapshot(name: str) -> tuple[Path, str, int] | None:
    """The shipped snapshot of a rate point's unfinished run, ``(file, stage, step)``, when
    it is to be continued: None without one, or when the run folder is here (it resumes)."""
    file = SNAPSHOTS / f"{name}.pt"
    if name not in RATE_POINTS or not file.is_file() or (RUNS / name / "ckpt.pt").exists():
        return None
    import torch

    meta = torch.load(file, map_location="cpu", weights_only=True, mmap=True).get("snapshot")
    return (file, meta["stage"], int(meta["step"])) if meta else None


def continued_from(name: str, step: int) -> Path:
    """The copy of a shipped snapshot that a continued run starts from (the shipped file is
    replaced when the continued run is snapshotted again)."""
    return RUNS / f"{name}-from-step{step}.pt"


def prepare_continuation(name: str, snapshot: tuple[Path, str, int]) -> Path:
    """Copy a shipped snapshot and its records to :func:`continued_from` (stage B's
    restart: also its stage-A log into the new run folder, which ships it); returns the
    copy."""
    from nic_lib import fileio
    from nic_lib.training.pqmim import snapshot_records

    file, stage, step = snapshot
    start = continued_from(name, step)
    for source, dest in [(file, start), *((snapshot_records(file, r), snapshot_records(start, r))
                                          for r in ("log_a.csv", "log_b.csv", "config.json"))]:
        if source.is_file() and not dest.is_file():
            fileio.atomic_write_bytes(dest, source.read_bytes())
    if stage == "b" and snapshot_records(file, "log_a.csv").is_file():
        fileio.atomic_write_bytes(RUNS / name / "log_a.csv",
                                  snapshot_records(file, "log_a.csv").read_bytes())
    return start


def ship_snapshot(name: str) -> Path:
    """Export a rate point's unfinished run as its snapshot (float16 weight matrices)."""
    import torch

    from nic_lib.training.pqmim import export_snapshot

    dest = export_snapshot(RUNS / name, SNAPSHOTS / f"{name}.pt", dtype=torch.float16)
    shown = dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest
    print(f"{name}: snapshot of the unfinished run shipped to {shown} "
          f"({dest.stat().st_size / 1e6:.1f} MB)")
    return dest


def _commands(name: str, threads: int | None) -> tuple[list[str], Path, list[str]]:
    """(command, run folder, files to copy beside the checkpoint) of one checkpoint."""
    py = [sys.executable, "-m", "nic_lib.train_pqmim"]
    extra = ["--threads", str(threads)] if threads else []
    if name in RATE_POINTS:
        run = RUNS / name
        snapshot = shipped_snapshot(name)
        if (run / "ckpt.pt").exists() and not (run / "final.pt").exists():
            cmd = [*py, "--resume", str(run), *extra, "--export", str(OUT / f"{name}.pt")]
        elif snapshot is not None and snapshot[1] == "a":
            cmd = [*py, *COMMON, *RATE_POINTS[name], *extra, "--init-from",
                   str(continued_from(name, snapshot[2])), "--start-step", str(snapshot[2]),
                   "--out-dir", str(run), "--export", str(OUT / f"{name}.pt")]
        elif snapshot is not None:  # stage A finished: stage B from step 0 on its autoencoder
            cmd = [*py, "--resume", str(continued_from(name, snapshot[2])), "--restart-b",
                   *extra, "--out-dir", str(run), "--export", str(OUT / f"{name}.pt")]
        else:
            cmd = [*py, *COMMON, *RATE_POINTS[name], *extra, "--out-dir", str(run),
                   "--export", str(OUT / f"{name}.pt")]
        return cmd, run, ["config.json", "log_a.csv", "log_b.csv"]
    base = PERCEPTUAL[name]
    run = RUNS / name
    if (run / "ckpt_c.pt").exists():
        cmd = [*py, "--resume", str(run), *extra, "--export", str(OUT / f"{name}.pt")]
    else:
        cmd = [*py, "--perceptual-from", str(OUT / f"{base}.pt"), "--steps-c", str(STEPS_C),
               *extra, "--out-dir", str(run), "--export", str(OUT / f"{name}.pt")]
    return cmd, run, ["config_c.json", "log_c.csv"]


def _finish(target: Path, run: Path, logs: list[str]) -> None:
    """Store an exported checkpoint's weights in float16 (``save_checkpoint(...,
    dtype=torch.float16)``: PQ-MIM's weight matrices, :meth:`~nic_lib.models.pqmim.PQMIM.half_precision_keys`)
    unless they already are, and copy its run's logs beside it (both idempotent)."""
    import torch

    from nic_lib.models import pqmim, save_checkpoint
    from nic_lib.models.checkpoints import _RESERVED_KEYS as RESERVED_KEYS

    stored = torch.load(target, map_location="cpu", weights_only=True)
    if stored["dtype"] != "float16":
        model, ckpt = pqmim.load_pqmim(target)
        extra = {k: v for k, v in ckpt.items() if k not in RESERVED_KEYS}
        save_checkpoint(model, target, ckpt["config"], extra=extra, dtype=torch.float16)
    for log in logs:
        if (run / log).exists() and not (OUT / f"{target.stem}.{log}").exists():
            shutil.copy2(run / log, OUT / f"{target.stem}.{log}")


def _untuned() -> list[str]:
    """Rate points whose checkpoint (or whose perceptual variant's) lacks a radius tuned on
    its current file."""
    from nic_lib.models import pqmim

    out = []
    for name in RATE_POINTS:
        family = [name, *(v for v, base in PERCEPTUAL.items() if base == name)]
        files = [OUT / f"{n}.pt" for n in family if (OUT / f"{n}.pt").exists()]
        if (OUT / f"{name}.pt").exists() and not all(map(pqmim.radius_is_current, files)):
            out.append(name)
    return out


def budget(name: str) -> str:
    """`` [A+B steps, ~h CPU h]`` of a rate point from STEP_TIME (per-point measurements
    where STEP_TIME_MEASURED has them), stage A in bf16 (:data:`BF16_SPEEDUP_A`) where this
    machine computes it natively; empty for the perceptual variant."""
    if name not in RATE_POINTS:
        return ""
    from nic_lib.training.precision import native_bf16

    t = {**STEP_TIME, **STEP_TIME_MEASURED.get(name, {})}
    bf16 = native_bf16()
    hours = (STEPS_A * t["a"] / (BF16_SPEEDUP_A if bf16 else 1) + STEPS_B * t["b"]) / 3600
    return f" [{STEPS_A}+{STEPS_B} steps, stage A in {'bf16' if bf16 else 'fp32'}, ~{hours:.1f} CPU h]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [*RATE_POINTS, *PERCEPTUAL]
    p.add_argument("--only", nargs="+", choices=names, help="these checkpoints only")
    p.add_argument("--threads", type=int, help="torch threads per run (default torch's)")
    p.add_argument("--list", action="store_true", help="print the commands and exit")
    p.add_argument("--ship-only", action="store_true", help="train nothing: export each "
                   "unfinished run as its snapshot (checkpoints/pqmim/snapshots/<name>.pt)")
    args = p.parse_args(argv)
    for name in args.only or names:
        target = OUT / f"{name}.pt"
        cmd, run, logs = _commands(name, args.threads)
        if args.list:
            print(f"{name}{budget(name)}: {' '.join(cmd)}")
            continue
        if target.exists():
            _finish(target, run, logs)
            print(f"{name}: {target.relative_to(REPO)} exists, skipped")
            continue
        if args.ship_only:
            if name in RATE_POINTS and (run / "ckpt.pt").exists() and not (run / "final.pt").exists():
                ship_snapshot(name)
            continue
        snapshot = shipped_snapshot(name)
        if snapshot is not None:
            prepare_continuation(name, snapshot)
            print(f"{name}: no run folder; continuing from the shipped snapshot {snapshot[0]} "
                  f"(stage {snapshot[1].upper()}, step {snapshot[2]})", flush=True)
        if name in PERCEPTUAL and not (OUT / f"{PERCEPTUAL[name]}.pt").exists():
            print(f"{name}: needs {PERCEPTUAL[name]}.pt first (run without --only)", file=sys.stderr)
            return 1
        print(f"{name}: {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, check=True, cwd=REPO)
        _finish(target, run, logs)
    untuned = [] if args.ship_only else _untuned()
    if untuned:
        cmd = [sys.executable, str(REPO / "scripts" / "tune_pqmim_radius.py"), "--checkpoint",
               *(str((OUT / f"{n}.pt").relative_to(REPO)) for n in untuned)]
        print(f"attention radius: {' '.join(cmd)}", flush=True)
        if not args.list:
            subprocess.run(cmd, check=True, cwd=REPO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
