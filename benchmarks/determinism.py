"""Cross-thread determinism of the shipped learned codecs on Kodak (issues 4 and 32).

For every image and quality: encode with ``--threads-a`` threads and decode with
``--threads-b``, then the other way round, and check that both decodes give the latents
the encoder reconstructed (``compress(x, return_y_hat=True)``) bit for bit, and the same
image. Writes ``build/results/benchmarks/determinism.csv`` (one row per image, quality and
direction) and prints a summary; exits 1 if any case differs.

    python benchmarks/determinism.py                        # mbt2018, 24 images, q1-6
    python benchmarks/determinism.py --model mbt2018-gmm --images 4 --qualities 1 6

``--synthesis`` measures instead which arithmetic g_s needs (issue 32): for every image
and quality it feeds each layer of g_s the same input on ``--threads-a`` and
``--threads-b`` threads and compares the outputs bit for bit, for three paths: float64,
float32 on oneDNN (PyTorch's default on CPU) and float32 on the im2col + GEMM path
(``nic_lib.models.tiling.deterministic_convolutions``); also whether the decoded uint8
image differs, and the time of the whole g_s on one thread. Writes
``build/results/benchmarks/synthesis_determinism.csv``::

    OMP_NUM_THREADS=2 nice -n 19 python benchmarks/determinism.py --synthesis \
        --checkpoint checkpoints/mbt2018/n96.pt --qualities 1 4 8 --images 24
"""

from __future__ import annotations

import argparse
import copy
import inspect
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from nic_lib import cache, coding, data
from nic_lib.models import hub, tiling
from nic_lib.models.variable_rate import set_rate_level

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "build" / "results" / "benchmarks" / "determinism.csv"
#: The issue's pair: 2 threads against 1.
DEFAULT_THREADS = (2, 1)
#: Tile memory that puts a Kodak image in one tile of g_s.
ONE_TILE = 1 << 40


def _decode(model, coded) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_hat, the latents g_s read) of a decode, in one tile."""
    captured = []
    model.tile_memory = ONE_TILE
    hook = model.g_s.register_forward_pre_hook(lambda m, a: captured.append(a[0].clone()),
                                               prepend=True)
    try:
        x_hat = model.decompress(coded["strings"], coded["shape"])["x_hat"]
    finally:
        hook.remove()
        del model.tile_memory
    return x_hat, captured[0]


def check(model, x, threads_enc: int, threads_dec: int) -> dict:
    """Encode with one thread count, decode with another; compare with the encoder.

    The context models return the encoder's own ŷ (``compress(x, return_y_hat=True)``);
    for the others (factorized, scale and mean-scale hyperpriors) the reference is the
    decode of the same file on the encoder's thread count, so the row says whether a
    decoder on another thread count reads the same latents and image from the file.
    """
    if "return_y_hat" in inspect.signature(model.compress).parameters:
        torch.set_num_threads(threads_enc)
        coded = model.compress(x, return_y_hat=True)
        y_ref, reference = coded["y_hat"], model.synthesize(coded["y_hat"])
    else:
        torch.set_num_threads(threads_enc)
        coded = model.compress(x)
        reference, y_ref = _decode(model, coded)
    torch.set_num_threads(threads_dec)
    t0 = time.perf_counter()
    x_hat, seen = _decode(model, coded)
    return {"decode_s": time.perf_counter() - t0,
            "latents_identical": bool(torch.equal(seen.to(y_ref.dtype), y_ref)),
            "image_identical": bool(torch.equal(x_hat, reference)),
            "bytes": sum(len(s) for streams in coded["strings"] for s in streams)}


#: g_s arithmetic compared by --synthesis: (dtype, oneDNN enabled).
SYNTHESIS_PATHS = {"float64": (torch.float64, True), "float32-onednn": (torch.float32, True),
                   "float32-gemm": (torch.float32, False)}


def _on_path(fn, onednn: bool):
    if onednn:
        return fn()
    with tiling.deterministic_convolutions():
        return fn()


def synthesis_rows(model, y_hat: torch.Tensor, threads: tuple[int, int]) -> list[dict]:
    """Per path and layer of g_s: are the outputs on two thread counts bit-identical?"""
    rows = []
    layers = list(model.g_s)
    for path, (dtype, onednn) in SYNTHESIS_PATHS.items():
        g_s = [layer.to(dtype) for layer in copy.deepcopy(layers)]
        # the input of g_s as the decoder sees it (after a variable-rate inverse gain)
        first = (model.inverse_gain(y_hat) if hasattr(model, "inverse_gain") else y_hat).to(dtype)
        h, images = first, {}
        for n, layer in enumerate(g_s):
            outs = []
            for t in threads:
                torch.set_num_threads(t)
                outs.append(_on_path(lambda: layer(h), onednn))
            rows.append({"path": path, "layer": f"{n}:{type(layer).__name__}",
                         "identical": bool(torch.equal(*outs))})
            h = outs[0]
        for t in threads:  # the whole g_s, as the decoder runs it
            torch.set_num_threads(t)
            start = time.perf_counter()
            x = _on_path(lambda: _chain(g_s, first), onednn)
            images[t] = ((x.clamp(0, 1) * 255).round(), time.perf_counter() - start)
        a, b = (images[t][0] for t in threads)
        rows.append({"path": path, "layer": "image (uint8)", "identical": bool(torch.equal(a, b)),
                     "pixels_differing": int((a != b).any(1).sum()),
                     "g_s_s_threads_a": images[threads[0]][1], "g_s_s_threads_b": images[threads[1]][1]})
    return rows


def _chain(layers, x):
    for layer in layers:
        x = layer(x)
    return x


def synthesis_main(args) -> int:
    """--synthesis: which g_s arithmetic is bit-exact across thread counts."""
    from nic_lib.models import load_checkpoint

    out = args.out.with_name("synthesis_determinism.csv")
    rows = []
    images = data.load_images("kodak", limit=args.images)
    base, ckpt = load_checkpoint(args.checkpoint)
    held = list(ckpt["config"].get("qualities") or [])
    for quality in args.qualities:
        model = set_rate_level(copy.deepcopy(base), held.index(quality)).eval() if held else base
        for name, img in images:
            x = coding.pad_to(coding.to_tensor(img), model.downsampling_factor)
            torch.set_num_threads(1)
            y_hat = model.compress(x, return_y_hat=True)["y_hat"]
            for r in synthesis_rows(model, y_hat, tuple(args.threads)):
                rows.append({"quality": quality, "image": name, **r})
        print(f"q{quality} done", flush=True)
    table = pd.DataFrame(rows)
    cache.write_table(table, out)
    summary = table.groupby(["path", "layer"])["identical"].mean().unstack(0)
    print(summary.to_string(float_format=lambda v: f"{100 * v:.0f}%"))
    timing = table.dropna(subset=["g_s_s_threads_a"]).groupby("path")[
        ["g_s_s_threads_a", "g_s_s_threads_b", "pixels_differing"]].mean()
    print(timing.to_string())
    print(f"({len(images)} Kodak images x qualities {args.qualities}, threads "
          f"{args.threads[0]} vs {args.threads[1]}, {args.checkpoint}); results in {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mbt2018", help="cpu-profile model key")
    parser.add_argument("--qualities", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--images", type=int, default=24, help="first N Kodak images")
    parser.add_argument("--threads", type=int, nargs=2, default=DEFAULT_THREADS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--synthesis", action="store_true",
                        help="compare g_s arithmetic (float64, float32 oneDNN, float32 GEMM) "
                        "per layer across the two thread counts instead")
    parser.add_argument("--checkpoint", default="checkpoints/mbt2018/n96.pt",
                        help="--synthesis: the checkpoint whose g_s is measured")
    args = parser.parse_args(argv)
    if args.synthesis:
        torch.set_grad_enabled(False)
        return synthesis_main(args)
    a, b = args.threads
    rows = []
    torch.set_grad_enabled(False)
    images = data.load_images("kodak", limit=args.images)
    for quality in args.qualities:
        model = hub.get_model(args.model, quality, profile="cpu")
        for name, img in images:
            x = coding.pad_to(coding.to_tensor(img), model.downsampling_factor)
            for enc, dec in ((a, b), (b, a)):
                rows.append({"model": args.model, "quality": quality, "image": name,
                             "encode_threads": enc, "decode_threads": dec,
                             **check(model, x, enc, dec)})
        done = [r for r in rows if r["quality"] == quality]
        print(f"q{quality}: {sum(r['latents_identical'] and r['image_identical'] for r in done)}"
              f"/{len(done)} identical", flush=True)
    table = pd.DataFrame(rows)
    cache.write_table(table, args.out)
    bad = table[~(table["latents_identical"] & table["image_identical"])]
    print(f"{len(table) - len(bad)}/{len(table)} encode/decode pairs bit-identical "
          f"({args.model}, {len(images)} images, qualities {args.qualities}, threads {a}<->{b}); "
          f"results in {args.out}")
    return 1 if len(bad) else 0


if __name__ == "__main__":
    sys.exit(main())
