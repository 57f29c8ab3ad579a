"""Our classic codecs on Kodak, against the published curves for the same codecs.

Runs :func:`nic_lib.codecs.rate_sweep` on the 24 Kodak images for JPEG, WebP, JPEG 2000
and AVIF (each codec's default configuration and sweep), writes the tidy table to
``build/benchmarks/classic_codecs_kodak.csv`` and prints:

1. BD-rate (over the PSNR interval both curves share) and BD-PSNR (over the log-bpp
   interval both share) of our curve against the published one for the same codec
   (CompressAI's ``jpeg-pillow``, ``webp-pillow``, ``jpeg2000-ffmpeg``); negative BD-rate /
   positive BD-PSNR = ours is better, as it should be;
2. BD-rates between our codecs, against our JPEG 2000;
3. mean encode and decode seconds per image (one image at one setting) for each codec.

Curves are (mean bpp, mean PSNR-RGB) per setting over the images, as in the published
numbers; BD values come from :mod:`nic_lib.rd` (the ``bjontegaard`` package, Akima).

Usage (the whole sweep takes ~20 min on a shared 2-core machine, almost all of it AVIF)::

    nice python benchmarks/classic_codecs_vs_published.py            # run and report
    python benchmarks/classic_codecs_vs_published.py --reuse         # report from the saved table
    python benchmarks/classic_codecs_vs_published.py --limit 4 --output /tmp/quick.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from nic_lib import cache, codecs, data, rd

#: Where the tidy per-image table goes (build/ is not committed).
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "build" / "benchmarks" / "classic_codecs_kodak.csv"
#: The codecs Pillow ships; the published anchors cover the first three.
DEFAULT_CODECS = ("jpeg", "webp", "jpeg2000", "avif")
#: Reference for the BD-rates between our codecs: the classic anchor the papers use most.
REFERENCE_CODEC = "jpeg2000"
#: The dataset the published curves were measured on.
DATASET = "kodak"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codecs", nargs="+", default=list(DEFAULT_CODECS), help="codec names (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N Kodak images (quick checks)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="CSV to write (default: %(default)s)")
    parser.add_argument("--reuse", action="store_true", help="report from an existing --output table, no encoding")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.reuse:
        if not args.output.exists():
            print(f"--reuse: {args.output} does not exist; run once without --reuse to create it", file=sys.stderr)
            return 2
        sweep = pd.read_csv(args.output)
    else:
        images = data.load_images(DATASET, limit=args.limit)
        for name in args.codecs:
            print(codecs.get_codec(name).description)
        sweep = codecs.rate_sweep(images, args.codecs, progress=not args.no_progress)
        cache.write_table(sweep, args.output)
        print(f"wrote {len(sweep)} rows to {args.output}")
    n_images = sweep["image"].nunique()
    if n_images != len(data.get_spec(DATASET).files):
        print(f"note: {n_images} images, not the full Kodak set; comparisons with published curves are indicative")

    curves = rd.rd_table(sweep)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_colwidth", 80)
    print("\nRD curves (mean over images):")
    print(curves[["codec", "setting", "bpp", "psnr_rgb", "ms_ssim"]].round(4).to_string(index=False))

    print("\n1. Ours vs the published curve of the same codec (negative BD-rate = ours better):")
    print(rd.published_comparison(curves).round(2).to_string(index=False))

    if REFERENCE_CODEC in set(curves["codec"]):
        print(f"\n2. BD-rate between our codecs, reference {REFERENCE_CODEC} (PSNR-RGB and MS-SSIM dB):")
        tables = [rd.bd_rate_table(curves, reference=REFERENCE_CODEC, metric=m) for m in ("psnr_rgb", "ms_ssim_db")]
        both = tables[0][["codec", "bd_rate_percent", "bd_distortion"]].merge(
            tables[1][["codec", "bd_rate_percent"]], on="codec", suffixes=("_psnr", "_msssim")
        )
        print(both.rename(columns={"bd_distortion": "bd_psnr_dB"}).round(2).to_string(index=False))

    print("\n3. Mean seconds per image (one encode / one decode at one setting; this machine):")
    speed = sweep.groupby("codec", sort=False)[["encode_s", "decode_s"]].mean()
    print(speed.round(4).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
