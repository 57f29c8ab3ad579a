"""Decode speed of the joint context model (mbt2018): wavefront against serial decoding.

One Kodak image, one set of weights, the same thread count for every decoder:

- ``ours-wavefront``: ``nic_lib``'s mbt2018 (default coding order): one network call
  per wavefront, float64 parameters snapped to a grid (deterministic);
- ``ours-raster``: the same coder, one position per call (``coding_order="raster"``);
- ``compressai``: ``compressai.models.JointAutoregressiveHierarchicalPriors.decompress``
  with our state dict loaded (its coder is 5x5 only), one position per call;
- ``mbt2018-mean``: CompressAI's mean-scale hyperprior with the same g_a/g_s/h_a/h_s
  weights: no context model, the floor for any decoder with one.

Round-trip checks: our decoders reproduce the encoder's y_hat and x_hat bit for bit,
also when the decoder runs with one thread; wavefront and raster decode the same y_hat.
Timings do not depend on training, so without ``--checkpoint`` the weights are random
(said in the output), with g_a's last layer scaled by ``--latent-gain`` so that y spans
several integers as a trained model's does. Writes
``build/results/benchmarks/decode_speed.{csv,json}`` atomically and prints a table.

    nice -n 19 python benchmarks/decode_speed.py                      # cpu widths
    python benchmarks/decode_speed.py --checkpoint checkpoints/mbt2018/n96-ablation.pt --floor-checkpoint checkpoints/mbt2018-mean/n96.pt
    nice -n 19 python benchmarks/decode_speed.py --N 192 --M 192      # the paper's widths

``--scaling`` measures, instead, how decoding grows with the image (issue 32), each case
in its own process so that its peak RSS (``ru_maxrss``) is its own: ``.nic`` files of a
high-resolution photo scaled to 0.4, 4 and 16 MP (resized by 1.6x, then mirrored to the
size: detail of a real photo at every size) are decoded with ``nic_lib.container``
(tiled transforms, default budget) by the joint model and by the mean-scale model with
the same transforms; and two decompression bombs: kodim23's file with its header forged
to announce 4096x4096 (the issue's case) and the format's maximum, 8192x4096. Writes
``build/results/benchmarks/decode_scaling.{csv,json}`` (time, CPU time, peak RSS, the
budget's estimate, per case)::

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/decode_speed.py --scaling --threads 1 \
        --checkpoint checkpoints/mbt2018/n96.pt
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import torch
from compressai.models import JointAutoregressiveHierarchicalPriors as CompressAIJoint
from compressai.models import MeanScaleHyperprior

from nic_lib import container, data, fileio
from nic_lib.models import build_model, load_checkpoint
from nic_lib.testing.fuzz import forge_size
from nic_lib.models.variable_rate import (is_variable_rate, make_variable_rate, rate_levels,
                                          set_rate_level)

REPO = Path(__file__).resolve().parent.parent
#: Results table (build/ is git-ignored); .csv and .json are written.
DEFAULT_OUT = REPO / "build" / "results" / "benchmarks" / "decode_speed"
#: The cpu profile's widths (this project's own models); --N 192 --M 192 for the paper's.
DEFAULT_N, DEFAULT_M = 64, 96
#: The issue's setting: two threads for every decoder.
DEFAULT_THREADS = 2
#: A 768 x 512 Kodak image (a multiple of 64 on both sides: no padding).
DEFAULT_IMAGE = "kodim01"
#: Timed decodes of the fast decoders (the minimum is reported); the serial ones once.
DEFAULT_REPEATS = 3
SERIAL_REPEATS = 1
#: Scale of g_a's last layer for random weights: y then spans several integers
#: (roughly a trained model's bits per latent), so rANS does real work.
DEFAULT_LATENT_GAIN = 10.0
#: CompressAI's decode counts as a correct round trip when its PSNR is this close to ours.
PSNR_AGREEMENT_DB = 0.05
#: Level of a variable-rate checkpoint: quality 4 (λ = 0.013, about 0.5 bpp on Kodak).
DEFAULT_QUALITY = 4
#: Seed of the random weights.
SEED = 0
#: Tile memory that puts any image in one tile (the round-trip checks read g_s's input).
ONE_TILE = 1 << 40
COLUMNS = ("variant", "decode_s", "decode_cpu_s", "encode_s", "speedup_vs_compressai",
           "ratio_to_mean_scale", "cpu_speedup_vs_compressai", "cpu_ratio_to_mean_scale",
           "bytes", "bpp", "psnr_db", "roundtrip_ok", "network_calls",
           "image", "N", "M", "threads", "weights")  # fmt: skip


def load_kodak(name: str) -> torch.Tensor:
    """One Kodak image as (1, 3, H, W) in [0, 1]."""
    paths = {p.stem: p for p in data.list_images("kodak")}
    if name not in paths:
        raise KeyError(f"{name!r} is not a Kodak image name (kodim01 .. kodim24)")
    pixels = data.load_image(paths[name]).copy()  # writable, for torch.from_numpy
    pixels = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    if pixels.shape[-1] % 64 or pixels.shape[-2] % 64:
        raise ValueError(f"{name} is {tuple(pixels.shape[-2:])}; pick a 768x512 image")
    return pixels


def _load_at_quality(path: str, quality: int) -> tuple[torch.nn.Module, str]:
    """(a checkpoint's model in eval mode, a description); a variable-rate checkpoint
    codes at ``quality``'s level."""
    model, ckpt = load_checkpoint(path)
    qualities = list(ckpt["config"].get("qualities") or [])
    if not qualities:
        return model.eval(), f"checkpoint {path}"
    if quality not in qualities:
        raise SystemExit(f"--quality {quality}: {path} holds {qualities}")
    set_rate_level(model, qualities.index(quality))
    return model.eval(), f"checkpoint {path} q{quality}"


def our_model(args) -> tuple[torch.nn.Module, str]:
    """(our mbt2018 with tables built, a description of its weights)."""
    if args.checkpoint:
        return _load_at_quality(args.checkpoint, args.quality)
    torch.manual_seed(SEED)
    model = build_model("mbt2018", N=args.N, M=args.M).eval()
    with torch.no_grad():
        model.g_a[-1].weight.mul_(args.latent_gain)
    model.update(force=True)
    return model, f"random-init (seed {SEED}, latent gain {args.latent_gain})"


def timed(fn, repeats: int) -> tuple[tuple[float, float], object]:
    """((fastest wall time, its process CPU time) of ``repeats`` calls in s, last result).

    CPU time (all threads of this process) is the fairer number on a machine shared
    with other jobs: it does not count the time the scheduler gave to them.
    """
    best, out = (math.inf, math.inf), None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        best = min(best, (time.perf_counter() - start, time.process_time() - start_cpu))
    return best, out


def psnr(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    # PSNR = 10 log10(1 / MSE) on [0, 1] images
    return 10 * math.log10(1 / torch.mean((x - x_hat) ** 2).item())


def n_bytes(strings) -> int:
    return sum(len(s) for per_latent in strings for s in per_latent)


def _same_rate(reference: torch.nn.Module, model: torch.nn.Module) -> torch.nn.Module:
    """A model of this project (``registry.build_model``) given ``model``'s gain units (same
    λ levels, same current level) when ``model`` is variable-rate, so it codes the same
    scaled latents; the gains themselves arrive with the state dict."""
    if is_variable_rate(model):
        make_variable_rate(reference, rate_levels(model), model.reference_lmbda)
        set_rate_level(reference, model.gain.level)
    return reference


def _compressai_reference(reference: torch.nn.Module, model: torch.nn.Module) -> torch.nn.Module:
    """CompressAI's class ``reference`` holding ``model``'s weights (those it has).

    CompressAI's classes apply no gain units, so for a variable-rate ``model`` the current
    level's gains are folded into the weights next to them (the same function, up to
    float rounding): ``conv(x) ⊙ γ`` is the convolution with weights and bias times γ per
    output channel (g_a's last layer), and ``deconv(ŷ ⊙ γ')`` the transposed convolution
    with its input rows times γ' (g_s's first layer).
    """
    own, theirs = reference.state_dict(), model.state_dict()
    if own.keys() - theirs.keys():
        raise ValueError(f"{type(model).__name__} lacks {sorted(own.keys() - theirs.keys())[:3]} "
                         f"of {type(reference).__name__}")
    reference.load_state_dict({k: v for k, v in theirs.items() if k in own})
    if is_variable_rate(model):
        gain, inverse = model.gain.gain().flatten(), model.inverse_gain.gain().flatten()
        with torch.no_grad():
            reference.g_a[-1].weight.mul_(gain.view(-1, 1, 1, 1))
            reference.g_a[-1].bias.mul_(gain)
            reference.g_s[0].weight.mul_(inverse.view(-1, 1, 1, 1))  # (in = M, out, k, k)
    return reference


def floor_model(args, model: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    """(the mean-scale floor with tables built, a description of its weights).

    With ``--floor-checkpoint`` a trained mean-scale model (at ``--quality`` when it is
    variable-rate); otherwise CompressAI's ``MeanScaleHyperprior`` holding ``model``'s
    g_a/g_s/h_a/h_s. The latter is the same network work, but with a trained joint model
    its h_s output was never trained to be means and scales on its own, so its rate (and
    the rANS work) is not a trained model's: pass a trained floor with trained weights.
    """
    if args.floor_checkpoint:
        return _load_at_quality(args.floor_checkpoint, args.quality)
    floor = _compressai_reference(MeanScaleHyperprior(N=model.N, M=model.M), model).eval()
    floor.update(force=True)
    return floor, "the joint model's g_a/g_s/h_a/h_s"


@torch.no_grad()
def measure(args) -> tuple[list[dict], str]:
    """Time every decoder on one image; returns (rows, weights description)."""
    torch.set_num_threads(args.threads)
    x = load_kodak(args.image)
    pixels = x.shape[-1] * x.shape[-2]
    model, weights = our_model(args)
    height, width = x.shape[-2] // 16, x.shape[-1] // 16
    k = model.context_size
    a = k // 2 + 1
    calls = {"ours-wavefront": a * (height - 1) + width, "ours-raster": height * width,
             "compressai": height * width, "mbt2018-mean": 0}  # fmt: skip
    rows = []

    def row(variant, decode_s, encode_s, strings, x_hat, ok):
        (decode_s, decode_cpu_s), (encode_s, _) = decode_s, encode_s
        rows.append({"variant": variant, "decode_s": decode_s, "decode_cpu_s": decode_cpu_s,
                     "encode_s": encode_s,
                     "bytes": n_bytes(strings), "bpp": 8 * n_bytes(strings) / pixels,
                     "psnr_db": psnr(x, x_hat), "roundtrip_ok": ok,
                     "network_calls": calls[variant]})  # fmt: skip

    # Ours, both orders: decoded y_hat and x_hat equal the encoder's, bit for bit.
    latents = {}
    for order in ("wavefront", "raster"):
        model.coding_order = order
        repeats = args.repeats if order == "wavefront" else SERIAL_REPEATS
        encode_s, coded = timed(lambda: model.compress(x, return_y_hat=True), 1)
        seen = []
        # g_s's input: the decoded latents, scaled by the level's inverse gain
        hook = model.g_s.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()),
                                                   prepend=True)
        decode_s, out = timed(lambda: model.decompress(coded["strings"], coded["shape"]), repeats)
        # the check: g_s in one tile, so the hook sees the whole decoded latent (tiles
        # give the one-tile output bit for bit: tests/test_tiling.py)
        model.tile_memory = ONE_TILE
        check = model.decompress(coded["strings"], coded["shape"])
        del model.tile_memory
        decoded_input = seen[-1]
        # the encoder's own x_hat, and g_s's input from the encoder's y_hat: the model
        # applies its inverse gain before g_s, so the two inputs are compared as g_s sees
        # them (equal inputs <=> equal decoded y_hat, the gain being the same)
        encoder_x_hat = model.synthesize(coded["y_hat"])
        hook.remove()
        ok_tiles = torch.equal(check["x_hat"], out["x_hat"])
        ok = ok_tiles and torch.equal(decoded_input, seen[-1]) and torch.equal(out["x_hat"], encoder_x_hat)
        if order == "wavefront":  # the decoder on one thread: the same y_hat
            torch.set_num_threads(1)
            hook = model.g_s.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()),
                                                       prepend=True)
            model.tile_memory = ONE_TILE
            model.decompress(coded["strings"], coded["shape"])
            del model.tile_memory
            hook.remove()
            ok = ok and torch.equal(seen[-1], decoded_input)
            torch.set_num_threads(args.threads)
        latents[order] = coded["y_hat"]
        row(f"ours-{order}", decode_s, encode_s, coded["strings"], out["x_hat"], ok)
    same = torch.equal(latents["wavefront"], latents["raster"])
    for r in rows:
        r["roundtrip_ok"] = r["roundtrip_ok"] and same

    # CompressAI's own serial coder, same weights (its context model is 5x5 only).
    if k == 5:
        theirs = _compressai_reference(CompressAIJoint(N=model.N, M=model.M), model).eval()
        theirs.update(force=True)
        encode_s, coded = timed(lambda: theirs.compress(x), 1)
        decode_s, out = timed(lambda: theirs.decompress(coded["strings"], coded["shape"]),
                              SERIAL_REPEATS)  # fmt: skip
        # Its stream decodes to (nearly) our image: its float32 means differ from our
        # snapped ones by < 2^-16, which moves PSNR by far less than the 0.05 dB allowed;
        # a desynchronised rANS stream would cost many dB.
        ok = abs(psnr(x, out["x_hat"]) - rows[0]["psnr_db"]) < PSNR_AGREEMENT_DB
        row("compressai", decode_s, encode_s, coded["strings"], out["x_hat"], ok)

    # The floor: a mean-scale hyperprior, with the same transforms or trained weights.
    floor, floor_weights = floor_model(args, model)
    encode_s, coded = timed(lambda: floor.compress(x), 1)
    decode_s, out = timed(lambda: floor.decompress(coded["strings"], coded["shape"]),
                          args.repeats)  # fmt: skip
    ok = torch.allclose(out["x_hat"], floor(x)["x_hat"].clamp(0, 1), atol=1e-3)
    row("mbt2018-mean", decode_s, encode_s, coded["strings"], out["x_hat"], ok)
    rows[-1]["weights"] = floor_weights

    for clock, prefix in [("decode_s", ""), ("decode_cpu_s", "cpu_")]:
        times = {r["variant"]: r[clock] for r in rows}
        for r in rows:
            r[f"{prefix}speedup_vs_compressai"] = times.get("compressai", math.nan) / r[clock]
            r[f"{prefix}ratio_to_mean_scale"] = r[clock] / times["mbt2018-mean"]
    for r in rows:
        r.update(image=args.image, N=model.N, M=model.M, threads=args.threads)
        r.setdefault("weights", weights)
    return rows, weights


# --------------------------------------------------------------------------------------
# --scaling: time and peak memory against image size, decompression bombs
# --------------------------------------------------------------------------------------

#: Sizes of the scaling run (height, width): ~0.4, 4 and 16 MP.
SCALING_SIZES = ((512, 768), (2048, 2048), (4096, 4096))
#: The high-resolution photo the scaled images come from (photos-hr, ~1.2 MP).
SCALING_PHOTO = "001"
#: Upscaling of the photo before mirroring it to size (keeps a photo's detail per pixel).
SCALING_UPSCALE = 1.6
#: The bombs: kodim23's file announcing the issue's 4096x4096 and the format's maximum.
BOMBS = {"bomb-4096x4096": (4096, 4096), "bomb-max-8192x4096": (4096, 8192)}
#: Raised budget (MiB) under which the maximum-size bomb is decoded too (the default
#: budget refuses it).
RAISED_BUDGET_MB = 1300
SCALING_COLUMNS = ("case", "model", "height", "width", "megapixels", "budget_mb", "decode_s",
                   "decode_cpu_s", "s_per_mp", "peak_rss_mb", "rss_before_decode_mb",
                   "budget_estimate_mb", "outcome", "threads", "weights")


def scaled_photo(height: int, width: int) -> np.ndarray:
    """The scaling photo resized by :data:`SCALING_UPSCALE`, mirrored to height x width."""
    from PIL import Image

    path = next(p for p in data.list_images("photos-hr") if p.stem == SCALING_PHOTO)
    img = Image.fromarray(data.load_image(path))
    img = np.asarray(img.resize((round(img.width * SCALING_UPSCALE),
                                 round(img.height * SCALING_UPSCALE)), Image.BICUBIC))
    reps = (-(-height // img.shape[0]), -(-width // img.shape[1]))
    tiles = [[img[:, ::1 - 2 * (j % 2)] for j in range(reps[1])] for _ in range(reps[0])]
    rows = [np.concatenate(r, axis=1)[::1 - 2 * (i % 2)] for i, r in enumerate(tiles)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0)[:height, :width])


def _scaling_models(args) -> dict[str, torch.nn.Module]:
    """The joint model and the mean-scale model with its transforms (our tiled class)."""
    from nic_lib.models import registry

    model, _ = our_model(args)
    floor = _same_rate(registry.build_model("mbt2018-mean", N=model.N, M=model.M), model)
    floor.load_state_dict({k: v for k, v in model.state_dict().items()
                           if k in floor.state_dict()}, strict=False)
    floor.update(force=True)
    return {"mbt2018": model, "mbt2018-mean": floor.eval()}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def scaling_worker(args) -> dict:
    """One case in this process: encode (``--encode``) or decode a .nic file."""
    torch.set_num_threads(args.threads)
    model = _scaling_models(args)[args.model_key]
    if args.encode:
        h, w = args.encode
        img = scaled_photo(h, w) if args.image != "kodim23" else data.load_image(
            next(p for p in data.list_images("kodak") if p.stem == "kodim23"))
        payload = container.encode_image(model, img, args.model_key, args.quality, "cpu")
        fileio.atomic_write_bytes(Path(args.worker), payload)
        return {"bytes": len(payload), "peak_rss_mb": _rss_mb()}
    payload = Path(args.worker).read_bytes()
    header = container.read_header(payload)
    before = _rss_mb()
    start, start_cpu = time.perf_counter(), time.process_time()
    try:
        img = container.decode_image(payload, model, max_memory=args.max_memory_mb * 2**20)
        outcome = f"decoded {img.shape[1]}x{img.shape[0]}"
    except container.NicBudgetError as exc:
        outcome = f"refused: {exc}"
    return {"decode_s": time.perf_counter() - start, "decode_cpu_s": time.process_time() - start_cpu,
            "peak_rss_mb": _rss_mb(), "rss_before_decode_mb": before,
            "budget_estimate_mb": container.decode_memory_bytes(header, model) / 2**20,
            "outcome": outcome}


def _run_worker(args, path: Path, model_key: str, encode: tuple[int, int] | None = None,
                image: str = "photo", budget_mb: int = container.DEFAULT_MAX_MEMORY // 2**20) -> dict:
    command = [sys.executable, __file__, "--scaling", "--worker", str(path), "--model-key",
               model_key, "--threads", str(args.threads), "--quality", str(args.quality),
               "--max-memory-mb", str(budget_mb),
               "--image", image, "--N", str(args.N), "--M", str(args.M),
               "--latent-gain", str(args.latent_gain)]
    if args.checkpoint:
        command += ["--checkpoint", args.checkpoint]
    if encode:
        command += ["--encode", *map(str, encode)]
    done = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    if done.returncode:
        raise SystemExit(f"worker {' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def scaling(args) -> list[dict]:
    """Every case of ``--scaling``, each in a fresh process; returns the rows."""
    rows = []
    weights = f"checkpoint {args.checkpoint} q{args.quality}" if args.checkpoint else "random-init"
    with tempfile.TemporaryDirectory(dir=args.out.parent) as tmp:
        default = container.DEFAULT_MAX_MEMORY // 2**20
        cases = [(f"photo-{h}x{w}", key, (h, w), "photo", default)
                 for h, w in SCALING_SIZES for key in ("mbt2018", "mbt2018-mean")]
        cases += [(name, "mbt2018", size, "kodim23", default) for name, size in BOMBS.items()]
        cases.append(("bomb-max-8192x4096", "mbt2018", BOMBS["bomb-max-8192x4096"], "kodim23",
                      RAISED_BUDGET_MB))
        for case, key, (h, w), image, budget_mb in cases:
            path = Path(tmp) / f"{case}-{key}.nic"
            encoded = _run_worker(args, path, key, (512, 768) if image == "kodim23" else (h, w),
                                  image)
            if image == "kodim23":  # the bomb: a valid file announcing (h, w)
                forged = forge_size(path.read_bytes(), h, w)
                fileio.atomic_write_bytes(path, forged)
            r = _run_worker(args, path, key, budget_mb=budget_mb)
            rows.append({"case": case, "model": key, "height": h, "width": w,
                         "megapixels": h * w / 1e6, "budget_mb": budget_mb, **r,
                         "s_per_mp": r["decode_s"] / (h * w / 1e6),
                         "threads": args.threads, "weights": weights})
            print(f"{case:22} {key:13} budget {budget_mb:5d} MiB {r['decode_s']:7.2f} s ({r['decode_cpu_s']:7.2f} CPU s) "
                  f"peak RSS {r['peak_rss_mb']:6.0f} MB (estimate {r['budget_estimate_mb']:5.0f}"
                  f" MB + {r['rss_before_decode_mb']:4.0f} before), encoder peak "
                  f"{encoded['peak_rss_mb']:5.0f} MB: {r['outcome'][:60]}", flush=True)
    return rows


def write(rows: list[dict], out: Path, columns=COLUMNS) -> None:
    """Write ``out``.csv and ``out``.json atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    fileio.atomic_write_text(out.with_suffix(".csv"), buffer.getvalue())
    fileio.atomic_write_text(out.with_suffix(".json"), json.dumps(rows, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--N", type=int, default=DEFAULT_N, help="hidden widths / z channels")
    parser.add_argument("--M", type=int, default=DEFAULT_M, help="channels of y")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="Kodak image name")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                        help="timed decodes of the fast decoders (minimum reported)")
    parser.add_argument("--checkpoint", help="a save_checkpoint .pt of an mbt2018 model; "
                        "default: random weights (timing does not depend on training)")
    parser.add_argument("--floor-checkpoint", help="a trained mean-scale (mbt2018-mean) "
                        "checkpoint for the floor row; default: the joint model's transforms "
                        "in CompressAI's MeanScaleHyperprior")
    parser.add_argument("--quality", type=int, default=DEFAULT_QUALITY,
                        help="quality of a variable-rate checkpoint (default %(default)s)")
    parser.add_argument("--latent-gain", type=float, default=DEFAULT_LATENT_GAIN)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="path without suffix")
    parser.add_argument("--scaling", action="store_true", help="time and peak RSS against "
                        "image size (0.4, 4, 16 MP) and of two decompression bombs")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one --scaling case: .nic path
    parser.add_argument("--model-key", default="mbt2018", help=argparse.SUPPRESS)
    parser.add_argument("--encode", type=int, nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--max-memory-mb", type=int, default=container.DEFAULT_MAX_MEMORY // 2**20,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scaling and args.worker:
        print(json.dumps(scaling_worker(args)))
        return 0
    if args.scaling:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        out = args.out.with_name("decode_scaling")
        rows = scaling(args)
        write(rows, out, SCALING_COLUMNS)
        print(f"written: {out.with_suffix('.csv')} and .json")
        return 0

    rows, weights = measure(args)
    write(rows, args.out)
    print(f"{args.image}, N={rows[0]['N']} M={rows[0]['M']}, {args.threads} threads, "
          f"weights: {weights}")
    print(f"{'variant':16} {'decode s':>9} {'CPU s':>8} {'x faster than CompressAI':>25} "
          f"{'x mean-scale':>17} {'calls':>6} {'bpp':>6} {'round trip':>10}")
    for r in rows:
        print(f"{r['variant']:16} {r['decode_s']:9.3f} {r['decode_cpu_s']:8.3f} "
              f"{r['speedup_vs_compressai']:12.1f} (CPU {r['cpu_speedup_vs_compressai']:5.1f}) "
              f"{r['ratio_to_mean_scale']:6.2f} (CPU {r['cpu_ratio_to_mean_scale']:5.2f}) "
              f"{r['network_calls']:6d} {r['bpp']:6.3f} "
              f"{'ok' if r['roundtrip_ok'] else 'FAILED':>10}")
    print(f"written: {args.out.with_suffix('.csv')} and .json")
    return 0 if all(r["roundtrip_ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
