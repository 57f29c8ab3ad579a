"""Where PQ-MIM's decoded colours shift (issue 31): the colour measure stage by stage.

Users see kodim23's yellow macaw turn orange and green turn khaki. Bug (channel order, a
normalisation not undone, a bias) or capacity (a small codebook averaging hues)? Each
stage of the pipeline is measured with :func:`nic_lib.colour.colour_shift` on a few
Kodak images (kodim23 first):

=========  ==================================================================================
stage      reconstruction
=========  ==================================================================================
input      x -> to_tensor -> from_tensor: the data path alone (x = v8/255, round(255 x));
           must be exact: any colour change here is a bug of the path
mean16     each 16x16 block replaced by its mean colour: what the token grid's resolution
           alone costs (no model; a reference, not a stage of PQ-MIM)
ae         g_s(g_a(x)): the autoencoder on the continuous latent, no quantizer (g_s was
           trained on quantized latents only; the commitment loss keeps z near them)
pq         g_s(PQ(g_a(x))): stage A's reconstruction through the product quantizer
coded      the real stream: compress -> rANS bytes -> decompress (every code transmitted);
           equal to pq when the codes decode exactly (column ``exact``)
=========  ==================================================================================

A bug shows up already in ``input`` or ``ae`` as a permuted colour map (``order`` not
012), a constant offset, or a diagonal far from 1 with no mixing; capacity as a chroma ratio
below 1 and mixing off-diagonals that grow from ``ae`` to ``pq`` and as the rate falls
(M8 -> M4 -> M2).

    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/pqmim_colour.py --images 5
    python benchmarks/pqmim_colour.py --images 2 --checkpoint checkpoints/pqmim/M2-K256.pt

Writes ``build/results/benchmarks/pqmim_colour.csv`` (one row per image x model x stage)
and ``pqmim_colour_hue.csv`` beside it (:func:`nic_lib.colour.hue_shift_profile` per model
x stage x 30-degree hue bin, pooled over the images: hue averaging pulls the hues on either
side of a common one toward it) atomically, and prints the means over images per model and
stage and the hue profile of the ``pq`` stage.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nic_lib import cache, coding, colour, data, metrics, plotting
from nic_lib.models import pqmim

OUT = plotting.BUILD_DIR / "results" / "benchmarks" / "pqmim_colour.csv"
#: The image of the issue (the yellow macaw), always measured first.
FOCUS_IMAGE = "kodim23"
#: Stages in pipeline order (the module docstring's table); the model-free ones first.
STAGES = ("input", "mean16", "ae", "pq", "coded")
#: Printed means: the colour measures that tell a bug from capacity.
SUMMARY = ["bpp", "psnr", "delta_L", "delta_a", "delta_b", "delta_E", "hue_shift",
           "hue_shift_abs", "chroma_ratio", "lp_delta_E", "lp_hue_shift", "lp_chroma_ratio",
           "bias_r", "bias_g", "bias_b", "map_diag", "map_mix", "map_offset"]
#: Measures repeated on the block means (``lp_`` columns): low-pass colour, one per token.
LOW_PASS = ("delta_E", "hue_shift", "chroma_ratio")
#: Hue bins printed (all are written): those holding at least this many pixels, about 1%
#: of 5 Kodak images, so a handful of stray pixels does not read as a hue shift.
MIN_BIN_PIXELS = 20_000


def hue_path(out: Path) -> Path:
    """Where the hue profile goes: beside ``out``, ``<stem>_hue.csv``."""
    return out.with_name(f"{out.stem}_hue.csv")


def block_mean(img: np.ndarray, side: int = pqmim.DOWNSAMPLING) -> np.ndarray:
    """Every ``side`` x ``side`` block of a uint8 (H, W, 3) image replaced by its mean colour
    (blocks cut at the right/bottom edge average what they hold), rounded to uint8."""
    h, w = img.shape[:2]
    x = coding.pad_to(coding.to_tensor(img), side)
    pooled = torch.nn.functional.avg_pool2d(x, side)
    up = torch.nn.functional.interpolate(pooled, scale_factor=side, mode="nearest")
    # replicate padding biases the edge blocks a little; the reference only has to be close
    return coding.from_tensor(up[..., :h, :w])


@torch.no_grad()
def reconstructions(model: pqmim.PQMIM, img: np.ndarray, stages=STAGES) -> dict[str, tuple]:
    """``{stage: (x_hat uint8, bpp or NaN, exact or None)}`` of one image (see the table)."""
    h, w = img.shape[:2]
    x = coding.pad_to(coding.to_tensor(img), pqmim.DOWNSAMPLING)
    fixed = model.M * math.log2(model.K) / pqmim.DOWNSAMPLING**2  # bpp of fixed-length codes
    out = {}
    if "input" in stages:
        out["input"] = (coding.from_tensor(coding.to_tensor(img)), math.nan, None)
    if "mean16" in stages:
        out["mean16"] = (block_mean(img), math.nan, None)
    z = model.g_a(x)
    if "ae" in stages:
        out["ae"] = (coding.from_tensor(model.g_s(z)[..., :h, :w]), math.nan, None)
    if "pq" in stages:
        x_pq = model.g_s(model.quantizer.dequantize(model.quantizer.quantize(z)))
        out["pq"] = (coding.from_tensor(x_pq[..., :h, :w]), fixed, None)
    if "coded" in stages:
        r = pqmim.code_image(model, img)
        out["coded"] = (r["x_hat"], r["bpp"], r["exact"])
    return out


def rows_for(label: str, model: pqmim.PQMIM, name: str, img: np.ndarray, stages=STAGES,
             recs: dict | None = None) -> list[dict]:
    """One tidy row per stage: rate, PSNR and :func:`~nic_lib.colour.colour_shift`, the
    colour map summarised as its mean diagonal (``map_diag``), mean off-diagonal
    (``map_mix``), mean offset (``map_offset``, grey levels) and channel ``order``; and
    ``lp_*``: :data:`LOW_PASS` measures between the 16x16 block means of x and x̂ (the
    colour of each token's area: lost there, the model averages hues across blocks; kept
    there but lost in the full measure, only the detail's colour is lost). ``recs``:
    :func:`reconstructions` already computed (else computed here)."""
    rows = []
    img_low = block_mean(img)
    recs = reconstructions(model, img, stages) if recs is None else recs
    for stage, (x_hat, bpp, exact) in recs.items():
        s = colour.colour_shift(img, x_hat)
        # the same measure on 16x16 block means of both: is each token's mean colour kept?
        low = colour.colour_shift(img_low, block_mean(x_hat))
        s |= {f"lp_{k}": low[k] for k in LOW_PASS}
        A = np.asarray(s.pop("colour_map"))
        t = np.asarray(s.pop("colour_offset"))
        order = "".join(str(i) for i in s.pop("channel_order"))
        rows.append({"image": name, "model": label, "stage": stage, "bpp": bpp,
                     "psnr": metrics.psnr(img, x_hat), **s,
                     "map_diag": float(np.diag(A).mean()),
                     "map_mix": float((A.sum() - np.trace(A)) / 6), "map_offset": float(t.mean()),
                     "order": order, "exact": exact})
    return rows


def hue_rows(label: str, images: list, recs: list[dict]) -> list[dict]:
    """:func:`~nic_lib.colour.hue_shift_profile` of each stage, pooled over the images:
    one row per model x stage x hue bin (``recs[i]`` holds image i's reconstructions)."""
    rows = []
    for stage in recs[0]:
        profile = colour.hue_shift_profile([img for _, img in images], [r[stage][0] for r in recs])
        rows += [{"model": label, "stage": stage, **row} for row in profile]
    return rows


def pick_images(n: int) -> list[tuple[str, np.ndarray]]:
    """:data:`FOCUS_IMAGE` and the first ``n`` − 1 other Kodak images."""
    if n < 1:
        raise SystemExit(f"--images must be >= 1, got {n}")
    paths = data.list_images("kodak")
    paths = ([p for p in paths if p.stem == FOCUS_IMAGE]
             + [p for p in paths if p.stem != FOCUS_IMAGE][: n - 1])
    return [(p.stem, data.load_image(p)) for p in paths]


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", nargs="+", type=Path, help="PQ-MIM checkpoints (default: "
                   f"every .pt in {pqmim.checkpoint_dir()}, perceptual variants included)")
    p.add_argument("--images", type=int, default=5, help=f"{FOCUS_IMAGE} and the first N-1 "
                   "other Kodak images (default 5)")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                   help="stages to measure (default all; 'coded' is the slow one)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", type=Path, default=OUT, help=f"CSV (default {OUT})")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = args.checkpoint or (pqmim.find_checkpoints() + pqmim.find_checkpoints(perceptual=True))
    if not paths:
        raise SystemExit(f"no PQ-MIM checkpoints in {pqmim.checkpoint_dir()}; pass --checkpoint")
    for path in paths:
        if not Path(path).is_file():
            raise SystemExit(f"{path}: no such checkpoint; the shipped ones are in "
                             f"{pqmim.checkpoint_dir()}")
    images = pick_images(args.images)
    rows, hues = [], []
    for path in paths:
        model, label = pqmim.load_pqmim(path)[0].eval(), Path(path).stem
        t0 = time.perf_counter()
        recs = [reconstructions(model, img, args.stages) for _, img in images]
        for (name, img), rec in zip(images, recs):
            rows += rows_for(label, model, name, img, args.stages, rec)
        hues += hue_rows(label, images, recs)
        print(f"{label}: {len(images)} images in {time.perf_counter() - t0:.0f} s", flush=True)
    table = pd.DataFrame(rows)
    cache.write_table(table, args.out)
    hue_table = pd.DataFrame(hues)
    cache.write_table(hue_table, hue_path(args.out))
    order = {s: i for i, s in enumerate(STAGES)}
    means = (table.groupby(["model", "stage"])[SUMMARY].mean().reset_index()
             .sort_values(["model", "stage"], key=lambda c: c.map(order) if c.name == "stage" else c))
    pd.set_option("display.width", 250)
    print(f"\n{len(images)} Kodak images ({', '.join(n for n, _ in images)}); means over images; "
          f"rows -> {args.out}")
    print(means.round(3).to_string(index=False))
    focus = table[table.image == FOCUS_IMAGE][["model", "stage", *SUMMARY, "order"]]
    print(f"\n{FOCUS_IMAGE}:")
    print(focus.round(3).to_string(index=False))
    stage = "pq" if "pq" in args.stages else args.stages[-1]
    shown = hue_table[(hue_table.stage == stage) & (hue_table.pixels >= MIN_BIN_PIXELS)]
    print(f"\nhue shift (degrees) and chroma ratio by the original's hue, stage {stage}, "
          f"pooled over the images (bins of >= {MIN_BIN_PIXELS} pixels); rows -> {hue_path(args.out)}")
    print(shown.pivot_table(index=["hue_from", "hue_to"], columns="model",
                            values=["pixels", "hue_shift", "chroma_ratio"]).round(2).to_string())
    if "exact" in table and table["exact"].notna().any():
        print(f"\ncoded codes decode exactly: {bool(table['exact'].dropna().all())}")
    return table


if __name__ == "__main__":
    sys.exit(main() is None)
