"""PQ-MIM stage A's learning curve on Kodak: does more training still move the autoencoder?

Issue 31: the shipped PQ-MIM autoencoders trained 2,000 steps (training PSNR ~21 dB), and
their Kodak curve lies 1.5-3.7 dB below JPEG 2000, so stage A, not the MIM entropy model,
limits what notebook 05 can show. A long stage A run spans sessions; this benchmark reads
its current ``ckpt.pt`` (or any exported PQ-MIM checkpoint) and measures what the
autoencoder with its product quantizer reconstructs on Kodak, without entropy coding:

    x̂ = g_s(dequantize(quantize(g_a(x))))        PSNR(x, x̂) over all pixels of each image

at the fixed-length rate ``M·log2(K)`` bits per 16x16 token (the MIM model's entropy
coding only lowers the rate, by 22-31% on the shipped files; benchmarks/pqmim_bits.py).
Each call adds one row per source (its step) to a tidy CSV, so calls an hour apart build
the curve:

    python benchmarks/pqmim_ae_curve.py ~/nic-runs/pqmim/M4-K256-a30k checkpoints/pqmim/M4-K256.pt

It also measures issue 31's colour shift on the same reconstructions: each image's colour
cast (the length of its mean error colour) and chroma ratio (saturation of x̂ over x); see
:func:`autoencoder_stats`.

Output: ``build/benchmarks/pqmim_ae_curve/curve.csv`` (``source, stage, step, images,
psnr, bpp_fixed, cast, chroma_ratio, cast_worst, worst, worst_rgb``; a row of the same
source and step is replaced) and ``curve.png``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nic_lib import coding, data, fileio, metrics
from nic_lib.models import checkpoints, pqmim

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "build" / "benchmarks" / "pqmim_ae_curve"
COLUMNS = ["source", "stage", "step", "images", "psnr", "bpp_fixed", "cast", "chroma_ratio",
           "cast_worst", "worst", "worst_rgb"]


def checkpoint_file(source: Path) -> Path:
    """The checkpoint a source names: a run folder's ``ckpt.pt``, or the file itself."""
    source = source.expanduser()
    file = source / "ckpt.pt" if source.is_dir() else source
    if not file.is_file():
        raise SystemExit(f"{source}: no checkpoint at {file}; pass a PQ-MIM run folder "
                         "(holding ckpt.pt; a new run writes its first at step 500) or a "
                         "checkpoint file")
    return file


def load(source: Path) -> tuple[pqmim.PQMIM, str, int]:
    """``(model in eval mode, stage, step)`` of a run folder / ``ckpt.pt`` or an exported
    checkpoint (stage ``"export"``, its stage-A steps)."""
    file = checkpoint_file(source)
    state = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and state.get("format") == checkpoints.CHECKPOINT_FORMAT:
        model, ckpt = pqmim.load_pqmim(file)
        return model, "export", int((ckpt.get("train_config") or {}).get("steps_a", 0))
    cfg = state["config"]
    model = pqmim.PQMIM(cfg["N"], cfg["latent_dim"], cfg["M"], cfg["K"], cfg["width"],
                        cfg["layers"], cfg["heads"])
    model.load_state_dict(state["model"])
    # a run in stage B has finished stage A: its autoencoder is stage A's last
    step = int(state["step"]) if state["stage"] == "a" else int(cfg["steps_a"])
    return model.eval(), str(state["stage"]), step


def chroma(img: np.ndarray) -> float:
    """Mean over pixels of max(R, G, B) − min(R, G, B): how colourful an image is."""
    a = img.astype(np.float64)
    return float((a.max(-1) - a.min(-1)).mean())


@torch.no_grad()
def autoencoder_stats(model: pqmim.PQMIM, images: dict[str, np.ndarray]) -> dict:
    """Reconstruction x̂ = g_s(PQ(g_a(x))) of each image (uint8, replicate padding to 16).

    The colour measures (issue 31: the macaw turning orange): an image's *cast* is the
    length of its mean error colour, ‖mean over pixels of (x̂ − x)‖₂ over (R, G, B) in grey
    levels (0 when errors cancel on average; a tinted image has a large one); its
    *chroma ratio* is :func:`chroma` of x̂ over that of x (below 1: washed-out colours).

    Returns:
        Means over images of ``psnr`` (dB), ``cast`` and ``chroma_ratio``; the largest cast
        (``cast_worst``), its image (``worst``) and that image's mean error colour
        (``worst_rgb``, "ΔR/ΔG/ΔB").
    """
    rows = []
    for name, img in images.items():
        h, w = img.shape[:2]
        x = coding.pad_to(coding.to_tensor(img), pqmim.DOWNSAMPLING)
        x_hat = coding.from_tensor(model.decode_codes_to_image(model.codes(x))[..., :h, :w])
        bias = (x_hat.astype(np.float64) - img).reshape(-1, 3).mean(0)
        rows.append({"image": name, "psnr": metrics.psnr(img, x_hat),
                     "cast": float(np.linalg.norm(bias)), "bias": bias,
                     "chroma_ratio": chroma(x_hat) / max(chroma(img), 1e-9)})
    worst = max(rows, key=lambda r: r["cast"])
    return {"psnr": float(np.mean([r["psnr"] for r in rows])),
            "cast": float(np.mean([r["cast"] for r in rows])),
            "chroma_ratio": float(np.mean([r["chroma_ratio"] for r in rows])),
            "cast_worst": worst["cast"], "worst": worst["image"],
            "worst_rgb": "/".join(f"{b:+.1f}" for b in worst["bias"])}


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sources", nargs="+", type=Path, help="run folders (ckpt.pt) or checkpoints")
    p.add_argument("--images", type=int, default=24, help="first N Kodak images (default 24)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    for source in args.sources:  # every source is checked before any work
        checkpoint_file(source)
    images = dict(data.load_images("kodak", limit=args.images))
    rows = []
    for source in args.sources:
        model, stage, step = load(source)
        stats = autoencoder_stats(model, images)
        bpp = model.M * math.log2(model.K) / pqmim.DOWNSAMPLING ** 2
        rows.append({"source": str(source), "stage": stage, "step": step,
                     "images": len(images), "bpp_fixed": bpp, **stats})
        print(f"{source}: stage {stage}, step {step}: {stats['psnr']:.2f} dB at {bpp:.4f} bpp "
              f"(fixed length); colour cast {stats['cast']:.2f} grey levels (worst {stats['worst']}: "
              f"ΔRGB {stats['worst_rgb']}), chroma ×{stats['chroma_ratio']:.2f}",
              flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    csv = args.out / "curve.csv"
    table = pd.DataFrame(rows, columns=COLUMNS)
    if csv.is_file():
        old = pd.read_csv(csv)
        keep = ~old.set_index(["source", "step", "images"]).index.isin(
            table.set_index(["source", "step", "images"]).index)
        table = pd.concat([old[keep], table], ignore_index=True)
    table = table.sort_values(["source", "step"]).reset_index(drop=True)
    fileio.atomic_write_text(csv, table.to_csv(index=False))
    _plot(table, args.out / "curve.png")
    return table


def _plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for source, rows in table.groupby("source"):
        style = "o-" if len(rows) > 1 else "s"
        ax.plot(rows.step, rows.psnr, style, label=f"{Path(source).name} ({rows.bpp_fixed.iloc[0]:.3f} bpp)")
    ax.set_xlabel("stage A step")
    ax.set_ylabel("Kodak PSNR of g_s(PQ(g_a(x))) (dB)")
    ax.set_title("PQ-MIM autoencoder: learning curve")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main() is None)
