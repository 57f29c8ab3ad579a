"""Does a wider network pay, measured on a trained model: fork a run, widen, compare.

Issue 25 asks for the next lever to be measured, not guessed. Once M = 192 no longer
binds, the transforms' hidden width N is the candidate (the autoencoder ceiling of the
N = 64 model rose only ~1.2 dB in ~5 hours). Starting a wider model from scratch throws
away hours of training; instead this benchmark forks a running ("control") run at its
last checkpoint:

1. ``fork``: the control's EMA weights are widened in a function-preserving way
   (:func:`nic_lib.models.widen.widen_hidden`: the same x̂ and y bytes at every level), and a
   new run trains them with the control's *remaining* schedule (the learning rate the
   control has at that step, cosine over its remaining steps down to the same floor; the
   same crops, batch, levels and EMA). It runs in the foreground (``nohup ... &`` it).
2. ``report``: both runs keep training side by side. Their evaluations (EMA weights;
   every level on 4 Kodak crops of 256², bpp of the likelihoods) are put on one clock,
   hours of one core since the fork (steps ÷ each run's median throughput over the same
   period, so work that shares a core now and then does not bias it), and at every
   fork evaluation the BD-rate of fork vs control at the nearest control evaluation in
   time is computed (negative: the wider model needs fewer bits). The latest checkpoint of
   each run also gets the unquantized-autoencoder ceiling at the top level (6 Kodak images,
   :func:`nic_lib.capacity.autoencoder_ceiling`).

    python benchmarks/widen_lever.py fork --control ~/nic-runs/cpu-profile/m192-q8 --N 96 \\
        --out ~/nic-runs/cpu-profile/n96
    python benchmarks/widen_lever.py report --control ~/nic-runs/cpu-profile/m192-q8 \\
        --fork ~/nic-runs/cpu-profile/n96

The fork pays a cost the control does not: a fresh Adam state and a restarted EMA (the
first evaluations of the fork show that transient), and fewer steps per hour (a wider
network). The report's clock is CPU time, so the throughput cost is counted. Output in
``build/benchmarks/widen_lever/``: ``curves.csv`` (both runs' evaluations on one clock),
``bd_rate.csv`` (fork vs control over time), ``summary.csv`` (latest evaluation and
ceiling of each), ``widen_lever.png``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "build" / "benchmarks" / "widen_lever"
#: Kodak images (whole) for the autoencoder ceiling, as in benchmarks/width_study.py.
CEILING_IMAGES = 6


def _train_state(run: Path) -> dict:
    import torch

    state = torch.load(run / "ckpt.pt", map_location="cpu", weights_only=False)
    return {"step": int(state["step"]), "config": state["config"]}


def fork_schedule(log: pd.DataFrame, config: dict, step: int) -> dict:
    """The control's remaining schedule from ``step`` on, as ``nic_lib.train`` flags.

    Args:
        log: the control's log.csv (``step``, ``lr``).
        config: the control's train config (``max_steps``, ``lr``, ``min_lr_ratio``,
            ``lr_schedule``).
        step: the step of the checkpoint the fork starts from.

    Returns:
        ``{"lr", "steps", "min_lr_ratio"}``: the learning rate logged nearest ``step``,
        the steps left, and the floor as a fraction of that rate (the same absolute floor).

    Raises:
        ValueError: not a cosine schedule, or no steps left.
    """
    if config.get("lr_schedule") != "cosine":
        raise ValueError(f"fork needs a cosine control schedule, got {config.get('lr_schedule')!r}")
    steps = int(config["max_steps"]) - step
    if steps <= 0:
        raise ValueError(f"the control finished at step {step}; nothing left to fork")
    lr = float(log.iloc[(log.step - step).abs().argsort().iloc[0]].lr)
    floor = float(config["lr"]) * float(config["min_lr_ratio"])
    return {"lr": lr, "steps": steps, "min_lr_ratio": min(1.0, floor / lr)}


def fork(control: Path, n: int, out: Path, warmup: int = 200) -> None:
    """Widen the control's latest EMA weights to N and train them on (foreground)."""
    if out.exists():
        sys.exit(f"{out} exists; resume it with: python -m nic_lib.train --resume {out}")
    state = _train_state(control)
    cfg = state["config"]
    sched = fork_schedule(pd.read_csv(control / "log.csv"), cfg, state["step"])
    init = out.parent / f"{out.name}-init.pt"
    subprocess.run([sys.executable, str(REPO / "scripts" / "widen_checkpoint.py"), str(control),
                    "--N", str(n), "--out", str(init)], check=True, cwd=REPO)
    cmd = [sys.executable, "-m", "nic_lib.train", "--model", cfg["model"], "--N", str(n),
           "--M", str(cfg["M"]), "--qualities", *map(str, cfg["qualities"]),
           "--init-from", str(init), "--crop", str(cfg["crop"]),
           "--batch-size", str(cfg["batch_size"]), "--lr", f"{sched['lr']:.4g}",
           "--warmup-steps", str(warmup), "--lr-decay-steps", str(sched["steps"]),
           "--max-steps", str(sched["steps"]), "--min-lr-ratio", f"{sched['min_lr_ratio']:.4g}",
           "--ema", str(cfg["ema"]), "--ckpt-every", str(cfg["ckpt_every"]),
           "--eval-every", str(cfg["eval_every"]), "--eval-images", str(cfg["eval_images"]),
           "--eval-crop", str(cfg["eval_crop"]), "--threads", "1", "--out-dir", str(out)]
    print(f"fork of {control} at step {state['step']}: {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def _clock(run: Path, start_step: int | None) -> pd.DataFrame:
    """EMA evaluations of a run since ``start_step`` (None: the run's start), with ``hours``:
    the hours of one core the steps since then cost at the run's median throughput
    (images/s) over those steps.

    Wall time would be unfair on a shared machine (a run that shares its core with other
    work for a while looks slower), so the clock is steps ÷ throughput, both runs' being
    measured over the same period, side by side.
    """
    ev = pd.read_csv(run / "eval.csv").drop_duplicates(["step", "quality", "weights"], keep="last")
    ev = ev[ev.weights == "ema"] if "ema" in set(ev.weights) else ev[ev.weights == "model"]
    # a resumed run logs the steps after its checkpoint again: keep the last of each
    log = pd.read_csv(run / "log.csv").drop_duplicates("step", keep="last").sort_values("step")
    start = int(start_step or 0)
    ev, log = ev[ev.step >= start], log[log.step > start]
    batch = int(json.loads((run / "config.json").read_text())["config"]["batch_size"])
    ips = float(log.images_per_s.median())
    return ev.assign(hours=(ev.step - start) * batch / ips / 3600, images_per_s=ips)


def _bd(control: pd.DataFrame, test: pd.DataFrame) -> float:
    from nic_lib import rd

    return rd.bd_rate(control.bpp.to_numpy(), control.psnr.to_numpy(),
                      test.bpp.to_numpy(), test.psnr.to_numpy())


def report(control: Path, fork_run: Path, fork_step: int | None = None) -> pd.DataFrame:
    """Write curves, BD-rate over time and the ceilings; draw the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nic_lib import capacity, data, fileio, train
    from nic_lib.models import checkpoints, variable_rate

    if fork_step is None:
        init = Path(json.loads((fork_run / "config.json").read_text())["config"]["init_from"])
        fork_step = checkpoints.load_checkpoint(init, calibrated=False)[1].get("grown_from_step")
        if fork_step is None:
            sys.exit(f"{init} does not record the control step it was grown from; give --fork-step")
    start_step = int(fork_step)
    a = _clock(control, start_step).assign(run="control")
    b = _clock(fork_run, None).assign(run="fork")
    curves = pd.concat([a, b], ignore_index=True)
    rows = []
    for step, fb in b.groupby("step"):
        t = float(fb.hours.iloc[0])
        near = a.iloc[(a.hours - t).abs().argsort().iloc[0]]
        fa = a[a.step == near.step]
        rows.append({"fork_step": int(step), "hours": t, "control_step": int(near.step),
                     "control_hours": float(near.hours), "bd_rate_fork_vs_control": _bd(fa, fb),
                     "psnr_top_fork": float(fb.psnr.iloc[-1]), "psnr_top_control": float(fa.psnr.iloc[-1])})
    bd = pd.DataFrame(rows)
    images = data.load_images("kodak", limit=CEILING_IMAGES)
    summary = []
    for name, run in (("control", control), ("fork", fork_run)):
        with tempfile.TemporaryDirectory() as tmp:
            snap = train.snapshot_final(run, Path(tmp) / "snap.pt")
            model, ck = checkpoints.load_checkpoint(snap, calibrated=False)
        top = len(variable_rate.rate_levels(model)) - 1
        ev = curves[curves.run == name]
        last = ev[ev.step == ev.step.max()]
        summary.append({"run": name, "N": int(model.N), "M": int(model.M),
                        "images_per_s": float(ev.images_per_s.iloc[0]), "hours_since_fork": float(last.hours.iloc[0]), "step": int(last.step.iloc[0]),
                        "psnr_top": float(last.psnr.iloc[-1]), "bpp_top": float(last.bpp.iloc[-1]),
                        "ceiling_psnr_top": capacity.autoencoder_ceiling(model, images, top)})
    summary = pd.DataFrame(summary)
    OUT.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_text(OUT / "curves.csv", curves.to_csv(index=False))
    fileio.atomic_write_text(OUT / "bd_rate.csv", bd.to_csv(index=False))
    fileio.atomic_write_text(OUT / "summary.csv", summary.to_csv(index=False))
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for name, style in (("control", "-o"), ("fork", "-s")):
        ev = curves[curves.run == name]
        top = ev[ev.quality == ev.quality.max()]
        ax[0].plot(top.hours, top.psnr, style, label=f"{name} (N={int(summary.set_index('run').N[name])})")
    ax[0].set(xlabel="hours of one core since the fork", ylabel="PSNR at the top level (dB, 4 crops)",
              title="top level: PSNR")
    ax[0].legend()
    if len(bd):
        ax[1].plot(bd.hours, bd.bd_rate_fork_vs_control, "-o", color="k")
    ax[1].axhline(0, color="grey", lw=0.8)
    ax[1].set(xlabel="hours of one core since the fork", ylabel="BD-rate, fork vs control (%)",
              title="all levels: bits at equal PSNR (negative: wider is better)")
    fig.tight_layout()
    with fileio.atomic_path(OUT / "widen_lever.png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    print(bd.to_string(index=False))
    print(summary.to_string(index=False))
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fork", help="widen the control's latest weights and train them on")
    f.add_argument("--control", type=Path, required=True, help="the running run folder")
    f.add_argument("--N", type=int, required=True, help="the wider hidden width")
    f.add_argument("--out", type=Path, required=True, help="run folder of the fork")
    r = sub.add_parser("report", help="compare the two runs on one clock")
    r.add_argument("--control", type=Path, required=True)
    r.add_argument("--fork", type=Path, required=True)
    r.add_argument("--fork-step", type=int, help="the control step the fork was made from "
                   "(default: recorded in the fork's init checkpoint by widen_checkpoint.py)")
    args = p.parse_args(argv)
    if args.command == "fork":
        fork(args.control.expanduser(), args.N, args.out.expanduser())
    else:
        report(args.control.expanduser(), args.fork.expanduser(), args.fork_step)


if __name__ == "__main__":
    main()
