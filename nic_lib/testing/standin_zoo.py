"""A stand-in for CompressAI's model zoo: the ``full`` profile tested without internet.

For every model and quality of :data:`nic_lib.models.zoo.ZOO` it writes a state dict of the
zoo model's architecture with random weights (each architecture's own initialisation,
seeded, coder tables built), named as CompressAI names the published file with the hash
prefix of the stand-in's own SHA-256 (``mbt2018-3-<8 hex>.pth.tar``), and serves the
folder from a loopback HTTP server. ``$NIC_ZOO_URLS`` pointed at the manifest it writes
makes :func:`nic_lib.models.zoo.load_zoo_model` download from it: the same download, hash
check, cache and load as with the real zoo.

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


#: Gain of the stand-in's latents per quality step: random weights give every quality the
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


def _state_dict(key: str, quality: int) -> dict[str, torch.Tensor]:
    entry = zoo.ZOO[key]
    seed = SEED + int(hashlib.sha256(f"{key}-{quality}".encode()).hexdigest()[:6], 16)
    torch.manual_seed(seed)
    widths = standin_widths(key, quality)
    kwargs = {"vr_entbttlnck": True} if key in ("bmshj2018-hyperprior-vbr", "mbt2018-mean-vbr") else {}
    model = _architecture(key)(*widths, **kwargs)
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
