"""Grow a trained model without changing what it computes: wider layers, more levels.

    python scripts/widen_checkpoint.py checkpoints/mbt2018/vr-5h.pt --M 192 --out ~/nic-runs/widened/m192.pt
    python scripts/widen_checkpoint.py ~/nic-runs/mbt2018-M192-widened --qualities 1 2 3 4 5 6 7 8 \\
        --out ~/nic-runs/widened/m192-q8.pt
    python scripts/widen_checkpoint.py ~/nic-runs/cpu-profile/m192-q8 --N 96 \\
        --out ~/nic-runs/cpu-profile/n96-init.pt
    python scripts/widen_checkpoint.py checkpoints/mbt2018/n96.pt --keep-qualities 6 7 8 \\
        --out ~/nic-runs/cpu-profile/n96-top-init.pt
    python -m nic_lib.train --init-from ~/nic-runs/widened/m192.pt --M 192 ...   # train on

``--M``: the new latent channels start at zero and every new weight that reads them is
zero (:func:`nic_lib.models.widen.widen_latent`). ``--N``: the transforms' hidden
layers and z get new units that start at zero, read by fresh weights
(:func:`nic_lib.models.widen.widen_hidden`). ``--qualities``: rate levels are added
to a variable-rate model, the trained ones copied and the new ones extrapolated from the
learned gains (:func:`nic_lib.models.widen.add_levels`); ``--keep-qualities`` keeps only
some levels, each unchanged (:func:`nic_lib.models.widen.select_levels`: top levels to
fine-tune on their own, so the transforms specialise where they bind). The source is a registry
checkpoint or a run folder (its last ``ckpt.pt``, EMA weights, via
:func:`nic_lib.train.snapshot_final`). Either way every trained level codes a Kodak crop
to the same reconstruction as before; the script checks that before it writes anything,
and refuses to overwrite the source.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import torch

from nic_lib import data, train
from nic_lib.models import checkpoints, variable_rate
from nic_lib.models.widen import add_levels, select_levels, widen_hidden, widen_latent


def _load(source: Path):
    """(model, checkpoint, training step or None) of a registry checkpoint or of a run
    folder's ckpt.pt."""
    if source.is_dir():
        step = int(torch.load(source / "ckpt.pt", map_location="cpu", weights_only=False)["step"])
        with tempfile.TemporaryDirectory() as tmp:
            snap = train.snapshot_final(source, Path(tmp) / "snapshot.pt")
            return (*checkpoints.load_checkpoint(snap, calibrated=False), step)
    return (*checkpoints.load_checkpoint(source, calibrated=False), None)


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path,
                   help="a registry checkpoint (final.pt, a shipped .pt) or a run folder")
    p.add_argument("--M", type=int, help="new latent width (even, > the source's)")
    p.add_argument("--N", type=int, help="new hidden width of the transforms and z (> the source's)")
    p.add_argument("--qualities", type=int, nargs="+",
                   help="qualities of the grown variable-rate model (a superset of its own)")
    p.add_argument("--keep-qualities", type=int, nargs="+",
                   help="keep only these levels (a subset), each unchanged: top levels to "
                   "fine-tune on their own (select_levels)")
    p.add_argument("--out", type=Path, required=True, help="where to write the grown checkpoint")
    p.add_argument("--seed", type=int, default=0, help="init of the new hidden units")
    args = p.parse_args(argv)
    if args.M is None and args.N is None and args.qualities is None and args.keep_qualities is None:
        p.error("nothing to do: give --M (wider latent), --N (wider hidden layers), "
                "--qualities (more levels), --keep-qualities (fewer), or several")
    source = args.source.expanduser()
    out = args.out.expanduser()
    if out.resolve() == source.resolve() or (source.is_dir() and out.parent.resolve() == source.resolve()):
        p.error("--out is the source (or inside its run folder); write the grown model elsewhere")
    model, ckpt, step = _load(source)
    grown, config = model, dict(ckpt["config"])
    if args.M is not None:
        grown, config = widen_latent(grown, config, args.M, seed=args.seed)
    if args.N is not None:
        grown, config = widen_hidden(grown, config, args.N, seed=args.seed)
    if args.qualities is not None:
        grown, config = add_levels(grown, config, args.qualities)
    if args.keep_qualities is not None:
        grown, config = select_levels(grown, config, args.keep_qualities)
    # the promise, checked: same reconstruction at every trained level on a Kodak crop
    x = torch.from_numpy(data.load_images("kodak", limit=1)[0][1][:256, :256].copy())
    x = x.permute(2, 0, 1)[None].float().div(255)
    old, new = variable_rate.rate_levels(model), variable_rate.rate_levels(grown)
    # every level the two share (all trained ones; the kept ones after --keep-qualities)
    pairs = [(i, j) for j, v in enumerate(new) for i, w in enumerate(old)
             if math.isclose(v, w)] or [(None, None)]
    for level, kept in pairs:
        if level is not None:
            variable_rate.set_rate_level(model, level)
            variable_rate.set_rate_level(grown, kept)
        with torch.no_grad():
            diff = (model(x)["x_hat"] - grown(x)["x_hat"]).abs().max().item()
        if diff > 1e-5:
            sys.exit(f"growing changed the reconstruction at level {level} by {diff:.2e}; "
                     "nothing written")
    config.pop("train_config", None)
    checkpoints.save_checkpoint(grown, out, config, extra={
        "grown_from": str(source), "grown_from_step": step, "grown_from_M": int(model.M), "grown_from_N": int(model.N), "grown_from_lmbdas": old})
    print(f"{source} (N={model.N}, M={model.M}, {len(old)} levels) -> {out} (N={grown.N}, M={grown.M}, {len(new)} "
          f"levels): same reconstruction at the {len(pairs)} level(s) they share")
    return out


if __name__ == "__main__":
    main()
