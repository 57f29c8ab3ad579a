"""Cross-thread determinism of the shipped context models on Kodak (issue 4).

For every image and quality: encode with ``--threads-a`` threads and decode with
``--threads-b``, then the other way round, and check that both decodes give the latents
the encoder reconstructed (``compress(x, return_y_hat=True)``) bit for bit, and the same
image. Writes ``build/results/benchmarks/determinism.csv`` (one row per image, quality and
direction) and prints a summary; exits 1 if any case differs.

    python benchmarks/determinism.py                        # mbt2018, 24 images, q1-6
    python benchmarks/determinism.py --model mbt2018-gmm --images 4 --qualities 1 6
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from nic_lib import cache, data, neural
from nic_lib.models import registry

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "build" / "results" / "benchmarks" / "determinism.csv"
#: The issue's pair: 2 threads against 1.
DEFAULT_THREADS = (2, 1)


def check(model, x, threads_enc: int, threads_dec: int) -> dict:
    """Encode with one thread count, decode with another; compare with the encoder."""
    torch.set_num_threads(threads_enc)
    coded = model.compress(x, return_y_hat=True)
    reference = model.synthesize(coded["y_hat"])
    torch.set_num_threads(threads_dec)
    t0 = time.perf_counter()
    captured = []
    # prepend: record g_s's input before a variable-rate model's inverse gain
    hook = model.g_s.register_forward_pre_hook(lambda m, a: captured.append(a[0].clone()),
                                               prepend=True)
    try:
        x_hat = model.decompress(coded["strings"], coded["shape"])["x_hat"]
    finally:
        hook.remove()
    return {"decode_s": time.perf_counter() - t0,
            "latents_identical": bool(torch.equal(captured[0].float(), coded["y_hat"])),
            "image_identical": bool(torch.equal(x_hat, reference)),
            "bytes": sum(len(s) for streams in coded["strings"] for s in streams)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mbt2018", help="cpu-profile model key")
    parser.add_argument("--qualities", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--images", type=int, default=24, help="first N Kodak images")
    parser.add_argument("--threads", type=int, nargs=2, default=DEFAULT_THREADS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    a, b = args.threads
    rows = []
    torch.set_grad_enabled(False)
    images = data.load_images("kodak", limit=args.images)
    for quality in args.qualities:
        model = registry.get_model(args.model, quality, profile="cpu")
        for name, img in images:
            x = neural.pad_to(neural.to_tensor(img), model.downsampling_factor)
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
