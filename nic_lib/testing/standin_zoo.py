"""A stand-in for CompressAI's model zoo: the ``full`` profile tested without internet.

For every model and quality of :data:`nic_lib.models.zoo.ZOO` it writes a state dict of
the zoo model's architecture (coder tables built), named as CompressAI names the
published file with the hash prefix of the stand-in's own SHA-256
(``mbt2018-3-<8 hex>.pth.tar``), and serves the folder from a loopback HTTP server.
``$NIC_ZOO_URLS`` pointed at the manifest it writes makes
:func:`nic_lib.models.zoo.load_zoo_model` download from it: the same download, hash
check, cache and load as with the real zoo.

The factorized, scale-hyperprior, mean-scale and joint models (:data:`CODEC_KEYS`, whose
RD curves notebook 01 draws) hold hand-designed weights that make each a small codec
whose rate and PSNR rise with the quality (a Haar transform and its adjoint, densities
fitted to Kodak: :func:`_make_codec`). The others (cheng2020, the variable-rate models)
hold seeded random weights of their architecture's own initialisation: they round-trip
a bitstream but do not reconstruct the image.

Widths are the published ones divided by :data:`WIDTH_DIVISOR`: the loader sizes every
model from its state dict (CompressAI's ``from_state_dict``), so the small files exercise
the same path with files of at most ~3 MB (47 files, ~72 MB, built in ~6 s) instead of
the real zoo's tens of MB each.

Command line (serve until Control-C, e.g. to run a notebook's ``full`` path offline)::

    python -m nic_lib.testing.standin_zoo serve [--folder build/standin-zoo] [--port 0]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import http.server
import io
import json
import math
import os
import threading
from pathlib import Path
from typing import Iterator

import torch

from nic_lib import fileio
from nic_lib.models import zoo

__all__ = ["WIDTH_DIVISOR", "StandinZoo", "build", "serve", "standin_widths"]

#: Published widths / this = the stand-in's widths (small files; see the docstring).
WIDTH_DIVISOR = 8

#: Seed of the random weights; each file adds a stable number of its own.
SEED = 20181203


def standin_widths(key: str, quality: int) -> tuple[int, ...]:
    """The stand-in's constructor widths of a zoo model: CompressAI's ``cfgs`` // 8."""
    from compressai.zoo import image, image_vbr

    entry = zoo.ZOO[key]
    published = (image_vbr.cfgs[key] if entry.variable_rate else image.cfgs[key][int(quality)])
    return tuple(max(8, w // WIDTH_DIVISOR) for w in published)


def _architecture(key: str):
    from compressai.zoo import image, image_vbr

    return image.model_architectures[key] if key in image.model_architectures else image_vbr.model_architectures[key]


def _legacy_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Entropy-bottleneck keys in the ParameterList form (``_biases.0``) that CompressAI's
    loader renames (``compressai.zoo.load_state_dict``), so that the rename runs too."""
    out = {}
    for key, value in state_dict.items():
        for short, long in (("_bias", "_biases"), ("_matrix", "_matrices"), ("_factor", "_factors")):
            stem = f"entropy_bottleneck.{short}"
            if key.startswith(stem) and key[len(stem):].isdigit():
                key = f"entropy_bottleneck.{long}.{key[len(stem):]}"
                break
        out[key] = value
    return out


#: Gain of the random-weight stand-ins' latents per quality step (cheng2020 and the
#: variable-rate models, see :func:`_spread_rates`): random weights give every quality the
#: same rate, and RD curves with repeated rates have no BD-rate; scaling y by
#: RATE_GAIN^quality (and g_s's input back), with a narrow factorized density, spreads the
#: qualities' rates as real ones are spread.
RATE_GAIN = 2.0


@torch.no_grad()
def _spread_rates(model: torch.nn.Module, quality: int) -> None:
    convs = (torch.nn.Conv2d, torch.nn.ConvTranspose2d)
    last_analysis = [m for m in model.g_a.modules() if isinstance(m, convs)][-1]
    first_synthesis = [m for m in model.g_s.modules() if isinstance(m, convs)][0]
    # a narrow factorized density (CompressAI's init_scale is 10: every small latent costs
    # the same ~4 bits, whatever the gain); same keys and shapes
    from compressai.entropy_models import EntropyBottleneck

    if type(getattr(model, "entropy_bottleneck", None)) is EntropyBottleneck:
        model.entropy_bottleneck = EntropyBottleneck(model.entropy_bottleneck.channels, init_scale=1.0)
    gain = RATE_GAIN ** int(quality)
    last_analysis.weight.mul_(gain)
    if last_analysis.bias is not None:
        last_analysis.bias.mul_(gain)
    first_synthesis.weight.div_(gain)


# --------------------------------------------------------------------------------------
# A codec with designed weights: the four models notebook 01 draws RD curves of
# --------------------------------------------------------------------------------------
#
# Random decoders do not invert their encoders, so their PSNR does not rise with rate
# and BD-rate (rightly) refuses their curves. The factorized, scale-hyperprior,
# mean-scale and joint models of the stand-in therefore get weights written by hand, in
# their own architectures (same keys, shapes and widths), that make them a small codec:
#
# - g_a is a 4-level orthonormal Haar analysis (each 5x5 stride-2 convolution uses its
#   2x2 taps at offsets 0 and 1). Per colour: the 16x16 block's mean and its three 8x8
#   details (4 latents); of the luminance Y = (R + G + B)/sqrt(3): the three 4x4 details
#   of each quarter of the block (12 latents): 24 latents per 16x16x3 block, the least
#   width (M = 24) of any stand-in. Wider models leave their other channels at 0.
# - g_s is g_a's adjoint: every transposed convolution holds the weights of the
#   convolution it mirrors (conv_transpose2d with a conv's weight is that conv's
#   adjoint), so g_s(g_a(x)) is the orthogonal projection of x on the kept basis, and
#   the MSE of a decoded image is the projection's plus the quantization's (Parseval).
# - GDN and IGDN are the identity (beta = 1, gamma = 0).
# - Quality q multiplies y by CODEC_GAIN_BASE^(q - 3) (g_s's first layer divides it
#   back): the quantization step shrinks, the rate rises, PSNR rises towards the
#   projection's (~24 dB on two 256x256 Kodak crops: 18.6, 21.3, 22.8, 23.6, 23.9,
#   24.0 dB at q1..6, measured with empirical entropies of 0.01-0.28 bpp).
# - Entropy models: each latent's density is set from the coefficient statistics of
#   Kodak (LATENT_STD, measured on its 24 images): a logistic of that spread for the
#   factorized prior; a constant Gaussian scale from h_s's last bias for the
#   hyperpriors (their h_a is 0, so z is 0 and costs ~nothing: a hyperprior that
#   predicts nothing image-dependent); for the joint model the context model predicts
#   each latent's mean from its left neighbour (CONTEXT_RHO) through the
#   entropy-parameters network, and the scale is the residual's (RESIDUAL_STD), so the
#   joint model spends fewer bits than the mean-scale one, as in the paper.

#: Quality q scales y by CODEC_GAIN_BASE^(q - CODEC_GAIN_PIVOT): quantization step 4 at
#: q1 (coarse block means, ~18.6 dB) down to 1/8 at q6 (~0.1 dB from the projection).
CODEC_GAIN_BASE = 2.0
CODEC_GAIN_PIVOT = 3

#: Orthonormal 2x2 Haar patterns, [dy][dx] (times 1/2).
_HAAR = {"LL": ((1, 1), (1, 1)), "LH": ((1, 1), (-1, -1)), "HL": ((1, -1), (1, -1)), "HH": ((1, -1), (-1, 1))}
_DETAILS = ("LH", "HL", "HH")

#: Latents of the design (see above); channels from here on are 0.
CODEC_LATENTS = 24

#: Mean of each colour's 16x16 block-mean latent (16 x mean pixel value in [0, 1]) on
#: Kodak, subtracted by g_a's last bias (and added back by g_s's first) so that the
#: zero-mean Gaussian of the scale hyperprior fits.
BLOCK_MEAN = (7.45, 6.88, 5.76)

#: Standard deviation of each latent at gain 1 on Kodak's 24 images (per colour: block
#: mean, LH, HL, HH; then Y's 4x4 details, LH/HL/HH x 4 positions).
LATENT_STD = (3.09, 0.59, 0.53, 0.27, 3.31, 0.60, 0.55, 0.27, 3.21, 0.53, 0.50, 0.24,
              0.45, 0.46, 0.43, 0.43, 0.42, 0.42, 0.43, 0.42, 0.21, 0.21, 0.20, 0.21)
#: Joint model: mean of a latent = CONTEXT_RHO x its decoded left neighbour (least-squares
#: slope on Kodak; 0 where it was below 0.3), RESIDUAL_STD the spread around it.
CONTEXT_RHO = (0.91, 0.55, 0.0, 0.0, 0.91, 0.54, 0.0, 0.0, 0.92, 0.53, 0.0, 0.0,
               0.38, 0.37, 0.31, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
RESIDUAL_STD = (1.30, 0.50, 0.53, 0.27, 1.36, 0.51, 0.55, 0.27, 1.23, 0.45, 0.50, 0.24,
                0.42, 0.43, 0.41, 0.41, 0.42, 0.42, 0.43, 0.42, 0.21, 0.21, 0.20, 0.21)

#: Spread (in latent units) of the densities of channels that are always 0 (unused y
#: channels, z): narrow, so each such symbol costs ~1e-5 bits.
_IDLE_SCALE = 0.05


def _haar_analysis_weights(N: int, M: int) -> list[torch.Tensor]:
    """The weights (out, in, 5, 5) of g_a's four convolutions (see the section above)."""
    if N < 6 or M < CODEC_LATENTS:
        raise ValueError(f"the stand-in codec needs N >= 6 and M >= {CODEC_LATENTS}, got N={N}, M={M}")
    W = [torch.zeros(N, 3, 5, 5), torch.zeros(N, N, 5, 5), torch.zeros(N, N, 5, 5), torch.zeros(M, N, 5, 5)]

    def pattern(name):
        return torch.tensor(_HAAR[name], dtype=torch.float32) / 2

    for c in range(3):
        for w in W[:3]:  # levels 1-3: the colour's 2x2 mean (low-pass), channel c
            w[c, c, 2:4, 2:4] = pattern("LL")
        for p, name in enumerate(_HAAR):  # level 4: the colour's 4 Haar coefficients
            W[3][4 * c + p, c, 2:4, 2:4] = pattern(name)
    for o, name in enumerate(_DETAILS):
        for c in range(3):  # level 3: Y's details, Y = (R + G + B) / sqrt(3)
            W[2][3 + o, c, 2:4, 2:4] = pattern(name) / math.sqrt(3)
        for dy in range(2):  # level 4: each detail of the 4 quarters to its own channel
            for dx in range(2):
                W[3][12 + 4 * o + 2 * dy + dx, 3 + o, 2 + dy, 2 + dx] = 1.0
    return W


def _identity_gdn(gdn) -> None:
    """GDN / IGDN as the identity: beta = 1, gamma = 0 (through CompressAI's reparam)."""
    gdn.beta.copy_(gdn.beta_reparam.init(torch.ones_like(gdn.beta)))
    gdn.gamma.copy_(gdn.gamma_reparam.init(torch.zeros_like(gdn.gamma)))


def _set_logistic(bottleneck, scale: torch.Tensor) -> None:
    """An EntropyBottleneck's density per channel: a logistic centred at 0 of ``scale``.

    With its factors at 0 the density network is linear: logits = a x + b; the matrices
    average (softplus = 1/fan-in) except the first, softplus = 1/scale, and the biases
    are 0, so CDF(x) = sigmoid(x / scale). The quantiles are where the aux loss would put
    them, logits = -t, 0, t (t = log(2/tail_mass - 1)).
    """
    filters = (1, *bottleneck.filters, 1)
    for i, (matrix, bias) in enumerate(zip(bottleneck.matrices, bottleneck.biases)):
        value = (1.0 / scale).view(-1, 1, 1).expand_as(matrix) if i == 0 else torch.full_like(matrix, 1.0 / filters[i])
        matrix.copy_(torch.log(torch.expm1(value)))  # softplus^-1
        bias.zero_()
    for factor in bottleneck.factors:
        factor.zero_()
    bottleneck.quantiles.copy_(scale.view(-1, 1, 1) * bottleneck.target.view(1, 1, 3))


def _per_channel(values, channels: int, idle: float) -> torch.Tensor:
    """The design's per-latent values, ``idle`` for the channels past CODEC_LATENTS."""
    out = torch.full((channels,), float(idle))
    out[: len(values)] = torch.tensor(values, dtype=torch.float32)
    return out


def _leaky_slope(network: torch.nn.Sequential) -> float:
    slopes = {m.negative_slope for m in network if isinstance(m, torch.nn.LeakyReLU)}
    if len(slopes) != 1:
        raise ValueError(f"expected one leaky ReLU slope in {network}, got {slopes}")
    return slopes.pop()


@torch.no_grad()
def _make_codec(model: torch.nn.Module, quality: int) -> None:
    """Give a factorized / scale / mean-scale / joint model the designed weights above."""
    from compressai.layers import GDN

    gain = CODEC_GAIN_BASE ** (int(quality) - CODEC_GAIN_PIVOT)
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            module.weight.zero_()
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, GDN):
            _identity_gdn(module)
    analysis = [m for m in model.g_a if isinstance(m, torch.nn.Conv2d)]
    synthesis = [m for m in model.g_s if isinstance(m, torch.nn.ConvTranspose2d)]
    M = analysis[-1].out_channels
    for conv, deconv, weight in zip(analysis, reversed(synthesis), _haar_analysis_weights(analysis[0].out_channels, M)):
        conv.weight.copy_(weight)
        deconv.weight.copy_(weight)  # the adjoint (same stride, padding, output padding)
    centre = torch.tensor(BLOCK_MEAN)
    for c in range(3):
        analysis[-1].bias[4 * c] = -centre[c]
    # g_s's first layer maps a block-mean latent to its 4 children with weight 1/2
    synthesis[0].bias[:3] = centre / 2
    # y = gain * g_a(x); g_s reads y / gain
    analysis[-1].weight.mul_(gain)
    analysis[-1].bias.mul_(gain)
    synthesis[0].weight.div_(gain)

    std = gain * _per_channel(LATENT_STD, M, 0.0)
    idle = torch.full((M,), _IDLE_SCALE)
    kind = type(model).__name__
    if kind == "FactorizedPrior":
        # logistic of the latent's standard deviation: s = std * sqrt(3) / pi
        _set_logistic(model.entropy_bottleneck, torch.maximum(std * math.sqrt(3) / math.pi, idle))
        return
    # hyperpriors: h_a = 0, so z = 0, coded with a narrow density at 0
    _set_logistic(model.entropy_bottleneck, torch.full((model.entropy_bottleneck.channels,), _IDLE_SCALE))
    last = model.h_s[-2] if kind == "ScaleHyperprior" else model.h_s[-1]  # ScaleHyperprior ends with a ReLU
    if kind == "ScaleHyperprior":
        last.bias.copy_(std)  # scales
    elif kind == "MeanScaleHyperprior":
        last.bias[:M] = std  # (scales, means = 0)
    elif kind == "JointAutoregressiveHierarchicalPriors":
        # mean = rho * left neighbour: the masked convolution's tap (row k//2, column k//2 - 1)
        rho = _per_channel(CONTEXT_RHO, M, 0.0)
        k = model.context_prediction.kernel_size[0]
        for c in range(M):
            model.context_prediction.weight[c, c, k // 2, k // 2 - 1] = rho[c]
        # entropy parameters, input (h_s features 2M, context 2M): the context's first M
        # channels pass two leaky ReLUs as +x and -x; LReLU(LReLU(x)) - LReLU(LReLU(-x))
        # = (1 + slope^2) x for either sign, so the means come out exact
        first, second, third = [m for m in model.entropy_parameters if isinstance(m, torch.nn.Conv2d)]
        slope = _leaky_slope(model.entropy_parameters)
        eye = torch.eye(M)
        first.weight[:M, 2 * M : 3 * M, 0, 0] = eye
        first.weight[M : 2 * M, 2 * M : 3 * M, 0, 0] = -eye
        second.weight[: 2 * M, : 2 * M, 0, 0] = torch.eye(2 * M)
        third.weight[M:, :M, 0, 0] = eye / (1 + slope**2)
        third.weight[M:, M : 2 * M, 0, 0] = -eye / (1 + slope**2)
        third.bias[:M] = gain * _per_channel(RESIDUAL_STD, M, 0.0)  # scales
    else:
        raise TypeError(f"no stand-in codec design for {kind}")


#: Architectures that get the designed codec (the others keep random weights), and their
#: zoo keys.
CODEC_ARCHITECTURES = ("FactorizedPrior", "ScaleHyperprior", "MeanScaleHyperprior",
                       "JointAutoregressiveHierarchicalPriors")
CODEC_KEYS = ("bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean", "mbt2018")


def _state_dict(key: str, quality: int) -> dict[str, torch.Tensor]:
    entry = zoo.ZOO[key]
    seed = SEED + int(hashlib.sha256(f"{key}-{quality}".encode()).hexdigest()[:6], 16)
    torch.manual_seed(seed)
    widths = standin_widths(key, quality)
    kwargs = {"vr_entbttlnck": True} if key in ("bmshj2018-hyperprior-vbr", "mbt2018-mean-vbr") else {}
    model = _architecture(key)(*widths, **kwargs)
    if type(model).__name__ in CODEC_ARCHITECTURES:
        _make_codec(model, quality)
    else:
        _spread_rates(model, quality)
    if not entry.variable_rate:
        # coder tables in the file, as in the published files; the vbr models' tables
        # depend on the level (built at load time), and their loader cannot resize them
        model.update(force=True)
    return _legacy_keys({k: v.detach().clone() for k, v in model.state_dict().items()})


def _compressai_url(key: str, quality: int) -> str:
    import importlib

    entry = zoo.ZOO[key]
    urls = importlib.import_module(f"compressai.zoo.{entry.module}").model_urls[key][zoo.METRIC]
    return urls if entry.variable_rate else urls[int(quality)]


def build(folder: str | os.PathLike, keys: list[str] | None = None) -> dict[str, dict]:
    """Write the stand-in files into ``folder`` (seeded: the same bytes every time).

    Args:
        folder: where the files go.
        keys: zoo keys (default: all of :data:`nic_lib.models.zoo.ZOO`).

    Returns:
        ``{key: {"mse": {quality: file name}}}`` (variable-rate keys: ``{"mse": name}``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names: dict[str, dict] = {}
    for key in keys or list(zoo.ZOO):
        entry = zoo.ZOO[key]
        qualities = entry.qualities[-1:] if entry.variable_rate else entry.qualities
        for quality in qualities:
            published = os.path.basename(_compressai_url(key, quality))
            buffer = io.BytesIO()
            torch.save(_state_dict(key, quality), buffer)
            digest = hashlib.sha256(buffer.getvalue()).hexdigest()
            # CompressAI's name with this file's own prefix, as long as the published one's
            prefix = zoo.hash_prefix(published)
            name = published.replace(f"-{prefix}.", f"-{digest[:len(prefix)]}.")
            fileio.atomic_write_bytes(folder / name, buffer.getvalue())
            if entry.variable_rate:
                names.setdefault(key, {})[zoo.METRIC] = name
            else:
                names.setdefault(key, {}).setdefault(zoo.METRIC, {})[str(quality)] = name
    return names


@dataclasses.dataclass
class StandinZoo:
    """A running stand-in zoo.

    Attributes:
        folder: the served files.
        base_url: ``http://127.0.0.1:<port>/``.
        manifest: the JSON file to put in ``$NIC_ZOO_URLS``.
        names: ``build``'s result.
        requests: paths the server has answered, in order (a cache hit asks for none).
        corrupt: file names served with one byte flipped (a corrupt download).
    """

    folder: Path
    base_url: str
    manifest: Path
    names: dict
    requests: list[str] = dataclasses.field(default_factory=list)
    corrupt: set[str] = dataclasses.field(default_factory=set)

    def file_name(self, key: str, quality: int) -> str:
        entry = self.names[key][zoo.METRIC]
        return entry if isinstance(entry, str) else entry[str(int(quality))]

    @property
    def env(self) -> dict[str, str]:
        """The environment that points :mod:`nic_lib.models.zoo` here."""
        return {zoo.ZOO_URLS_ENV: str(self.manifest)}


class _Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, standin: StandinZoo, **kwargs):
        self.standin = standin
        super().__init__(*args, directory=str(standin.folder), **kwargs)

    def do_GET(self):  # noqa: N802 (http.server's name)
        name = self.path.lstrip("/")
        self.standin.requests.append(name)
        if name in self.standin.corrupt and (self.standin.folder / name).is_file():
            body = bytearray((self.standin.folder / name).read_bytes())
            body[len(body) // 2] ^= 0xFF
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(bytes(body))
            return
        super().do_GET()

    def log_message(self, *args):  # quiet: the tests read StandinZoo.requests
        pass


@contextlib.contextmanager
def serve(folder: str | os.PathLike, keys: list[str] | None = None, port: int = 0) -> Iterator[StandinZoo]:
    """Build the stand-in (:func:`build`) and serve it on 127.0.0.1 while the block runs.

    Writes ``<folder>/urls.json`` for ``$NIC_ZOO_URLS`` (set it from ``StandinZoo.env``;
    this function leaves the environment alone).

    Args:
        folder: where the files go.
        keys: zoo keys (default all).
        port: 0 picks a free one.

    Yields:
        The :class:`StandinZoo`.
    """
    folder = Path(folder)
    names = build(folder, keys)
    standin = StandinZoo(folder=folder, base_url="", manifest=folder / "urls.json", names=names)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(_Handler, standin=standin))
    standin.base_url = f"http://127.0.0.1:{server.server_address[1]}/"
    urls = {key: {metric: (f"{standin.base_url}{v}" if isinstance(v, str)
                           else {q: f"{standin.base_url}{n}" for q, n in v.items()})
                  for metric, v in by_metric.items()} for key, by_metric in names.items()}
    fileio.atomic_write_text(standin.manifest, json.dumps(urls, indent=1))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield standin
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nic_lib.testing.standin_zoo", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="build and serve the stand-in zoo until Control-C")
    p.add_argument("--folder", default="build/standin-zoo")
    p.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with serve(args.folder, port=args.port) as standin:
        print(f"stand-in zoo at {standin.base_url}; in another shell:\n"
              f"  export {zoo.ZOO_URLS_ENV}={standin.manifest.resolve()} TORCH_HOME=build/standin-torch-home", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
