"""How high can a model's transforms go on distortion alone? A capacity probe.

The unquantized-autoencoder ceiling (:func:`nic_lib.capacity.autoencoder_ceiling`) caps a
model's RD curve. When it is low, is that the transforms' capacity (their width N) or just
how far training has got? This probe trains *only* g_a and g_s of a checkpoint, at its top
rate level's gains, on the mean squared error of ``g_s(g_a(x))`` (no rounding, no rate
term: the most the transforms could give), on 128² crops of the training set, batch 8,
Adam, the networks in bfloat16 (:func:`nic_lib.train.reduced_precision`), and measures the
ceiling on the first 6 Kodak images every ``--every`` steps. A ceiling that flattens well
below the PCA bound of the same latent width (notebook 01, section 2b) says the transforms
bind; comparing two widths from the same start (a model and its
:func:`nic_lib.models.widen.widen_hidden` copy) says whether width lifts it.

    python benchmarks/ae_ceiling_probe.py checkpoints/mbt2018/n96.pt --steps 1500
    python benchmarks/ae_ceiling_probe.py ~/nic-runs/cpu-profile/n96-init.pt --steps 1500

Appends to ``build/benchmarks/ae_ceiling_probe.csv`` (checkpoint, N, M, lr, step, ceiling).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nic_lib import capacity, data, fileio, train
from nic_lib.models import checkpoints, variable_rate

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "build" / "benchmarks" / "ae_ceiling_probe.csv"


def probe(checkpoint: Path, steps: int, lr: float, every: int, seed: int = 0) -> pd.DataFrame:
    """Ceiling (dB, first 6 Kodak images, top level) before and every ``every`` steps."""
    torch.manual_seed(seed)
    model, _ = checkpoints.load_checkpoint(checkpoint, calibrated=False)
    model = model.float()
    top = len(variable_rate.rate_levels(model)) - 1
    kodak = data.load_images("kodak", limit=6)
    crops = [img for _, img in data.load_images("train", limit=300) if min(img.shape[:2]) >= 128]
    rng = np.random.default_rng(seed)
    variable_rate.set_rate_level(model, top)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(("g_a.", "g_s.")))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    rows = [{"step": 0, "seconds": 0.0, "ceiling_db": capacity.autoencoder_ceiling(model, kodak, top)}]
    print(f"{checkpoint}: N={model.N} M={model.M} step 0 ceiling {rows[-1]['ceiling_db']:.3f}", flush=True)
    t0 = time.time()
    model.train()
    for step in range(1, steps + 1):
        batch = []
        for _ in range(8):
            img = crops[rng.integers(len(crops))]
            r, c = rng.integers(img.shape[0] - 127), rng.integers(img.shape[1] - 127)
            batch.append(img[r:r + 128, c:c + 128])
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().div(255)
        with train.reduced_precision(model, "bf16"):
            x_hat = model.synthesis(model.analysis(x))  # g_s(g_a(x) ⊙ γ_l ⊙ γ'_l)
        loss = torch.mean((x_hat - x) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % every == 0:
            rows.append({"step": step, "seconds": time.time() - t0,
                         "ceiling_db": capacity.autoencoder_ceiling(model, kodak, top)})
            model.train()
            print(f"step {step} ceiling {rows[-1]['ceiling_db']:.3f}", flush=True)
    return pd.DataFrame(rows).assign(checkpoint=str(checkpoint), N=int(model.N), M=int(model.M), lr=lr)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--every", type=int, default=250)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    table = probe(args.checkpoint.expanduser(), args.steps, args.lr, args.every)
    old = pd.read_csv(OUT) if OUT.is_file() else pd.DataFrame()
    fileio.atomic_write_text(OUT, pd.concat([old, table]).to_csv(index=False))
    return table


if __name__ == "__main__":
    main()
