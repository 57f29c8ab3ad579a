"""CompressAI's model zoo: which published weights exist, where they come from, and how
they are downloaded, checked, cached and loaded (the ``"full"`` profile).

What CompressAI 1.2.8 serves for images (``compressai/zoo/image.py`` and
``image_vbr.py``; MSE-trained weights, the metric of this project's quality table):

==========================  ========================================  ==========
key                         paper                                     qualities
==========================  ========================================  ==========
``bmshj2018-factorized``    Ballé et al. 2018, factorized prior       1-8
``bmshj2018-hyperprior``    Ballé et al. 2018, scale hyperprior       1-8
``mbt2018-mean``            Minnen et al. 2018, mean-scale            1-8
``mbt2018``                 Minnen et al. 2018, joint (context + z)   1-8
``cheng2020-anchor``        Cheng et al. 2020, anchor (residual)      1-6
``cheng2020-attn``          Cheng et al. 2020, with attention         1-6
``bmshj2018-hyperprior-vbr`` Kamisli et al. 2024, variable rate       1-8 (one network)
``mbt2018-mean-vbr``        Kamisli et al. 2024, variable rate        1-8 (one network)
``mbt2018-vbr``             Kamisli et al. 2024, variable rate        1-8 (one network)
==========================  ========================================  ==========

Not served: the context-only, GMM and checkerboard ablations of Minnen et al. and He et
al., context sizes other than 5, ELIC (CompressAI 1.2.8 has the ``elic2022-*``
architectures but no weights), and ``bmshj2018-factorized-relu`` (its zoo function loads
the GDN factorized weights). The notebooks use this project's ``cpu`` profile models for
those, labelled as such.

Every file's name embeds the first hex digits of its SHA-256
(``mbt2018-3-22901978.pth.tar``, torch.hub's ``HASH_REGEX``). CompressAI downloads with
``check_hash=False``; here every download is hashed and a file whose digest does not
start with its name's prefix is refused and never enters the cache, and a cached file is
hashed again before it is loaded.

The URLs are CompressAI's own (``model_urls`` of its zoo modules). ``$NIC_ZOO_URLS``
names a JSON file ``{key: {"mse": {quality: url}}}`` (the variable-rate keys: ``{key:
{"mse": url}}``) whose entries replace them: a mirror, or the stand-in zoo that the tests
serve from a loopback HTTP server (:mod:`nic_lib.testing.standin_zoo`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import socket
import urllib.error
import uuid
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import torch
from torch import nn

from nic_lib.errors import NicReproError

from .registry import MODELS

__all__ = [
    "DOWNLOAD_TIMEOUT_S",
    "ZOO",
    "ZOO_URLS_ENV",
    "ZooEntry",
    "PretrainedWeightsUnavailableError",
    "ZooHashMismatchError",
    "VariableRateLevel",
    "cache_dir",
    "fetch_weights",
    "hash_prefix",
    "load_zoo_model",
    "weights_digest",
    "zoo_url",
]

#: Seconds a socket may stay silent while the zoo downloads weights, so an offline
#: machine behind a black-holing firewall fails within a minute instead of hanging.
DOWNLOAD_TIMEOUT_S = 30.0

#: Env var naming a JSON file of zoo URLs that replace CompressAI's (see the docstring).
ZOO_URLS_ENV = "NIC_ZOO_URLS"

#: Metric of the weights (this project's quality table is MSE's).
METRIC = "mse"

#: Bytes hashed per read: a few hundred per file, a few MB of memory.
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """One model of CompressAI's zoo.

    Attributes:
        key: CompressAI's key (``compressai.zoo.image_models``), also this table's.
        module: the zoo module holding its URLs (``"image"`` or ``"image_vbr"``).
        qualities: the qualities served.
        variable_rate: one network for every quality (a gain per level), not one per
            quality.
        paper: the paper, for tables and notices.
    """

    key: str
    module: str
    qualities: tuple[int, ...]
    variable_rate: bool
    paper: str


#: CompressAI 1.2.8's image zoo, MSE weights (checked against its ``model_urls`` by
#: tests/test_zoo.py).
ZOO: dict[str, ZooEntry] = {
    e.key: e for e in (
        ZooEntry("bmshj2018-factorized", "image", tuple(range(1, 9)), False, "Ballé et al. 2018, factorized prior"),
        ZooEntry("bmshj2018-hyperprior", "image", tuple(range(1, 9)), False, "Ballé et al. 2018, scale hyperprior"),
        ZooEntry("mbt2018-mean", "image", tuple(range(1, 9)), False, "Minnen et al. 2018, mean-scale hyperprior"),
        ZooEntry("mbt2018", "image", tuple(range(1, 9)), False, "Minnen et al. 2018, joint context + hyperprior"),
        ZooEntry("cheng2020-anchor", "image", tuple(range(1, 7)), False, "Cheng et al. 2020, anchor"),
        ZooEntry("cheng2020-attn", "image", tuple(range(1, 7)), False, "Cheng et al. 2020, attention"),
        ZooEntry("bmshj2018-hyperprior-vbr", "image_vbr", tuple(range(1, 9)), True, "Kamisli et al. 2024, variable-rate scale hyperprior"),
        ZooEntry("mbt2018-mean-vbr", "image_vbr", tuple(range(1, 9)), True, "Kamisli et al. 2024, variable-rate mean-scale"),
        ZooEntry("mbt2018-vbr", "image_vbr", tuple(range(1, 9)), True, "Kamisli et al. 2024, variable-rate joint"),
    )
}


class PretrainedWeightsUnavailableError(NicReproError, RuntimeError):
    """Published weights could not be obtained (offline, bad mirror, unknown model)."""


class ZooHashMismatchError(PretrainedWeightsUnavailableError):
    """A downloaded or cached weights file does not have the digest its name promises."""


def cache_dir() -> Path:
    """Where downloaded weights are kept: torch.hub's ``<hub dir>/checkpoints``, the
    folder CompressAI itself uses (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _entry(key: str, quality: int) -> ZooEntry:
    if key not in ZOO:
        raise PretrainedWeightsUnavailableError(
            f"CompressAI's zoo has no model {key!r}; it serves {', '.join(ZOO)} "
            "(nic_lib.models.zoo.ZOO). Use profile='cpu' for this project's own models")
    entry = ZOO[key]
    if int(quality) not in entry.qualities:
        raise PretrainedWeightsUnavailableError(
            f"CompressAI's zoo serves {key} at qualities {list(entry.qualities)}, not {quality}")
    return entry


def _override_urls() -> dict[str, Any]:
    path = os.environ.get(ZOO_URLS_ENV)
    if not path:
        return {}
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise PretrainedWeightsUnavailableError(
            f"${ZOO_URLS_ENV}={path} is not a readable JSON file of zoo URLs ({exc}); fix the "
            f"file or unset {ZOO_URLS_ENV} to download from CompressAI's own URLs") from exc


def zoo_url(key: str, quality: int) -> str:
    """The URL of a zoo file: ``$NIC_ZOO_URLS``'s entry when it has one, else CompressAI's.

    Args:
        key: a key of :data:`ZOO`.
        quality: one of its qualities (ignored by the variable-rate models: one file).

    Returns:
        The URL.

    Raises:
        PretrainedWeightsUnavailableError: unknown key or quality, or an unreadable ``$NIC_ZOO_URLS``.
    """
    entry = _entry(key, quality)
    override = _override_urls().get(key, {}).get(METRIC)
    if override is not None:
        url = override if entry.variable_rate else override.get(str(int(quality)))
        if url:
            return url
    import importlib

    urls = importlib.import_module(f"compressai.zoo.{entry.module}").model_urls[key][METRIC]
    return urls if entry.variable_rate else urls[int(quality)]


def hash_prefix(filename: str) -> str:
    """The SHA-256 prefix a zoo file name promises (torch.hub's ``HASH_REGEX``).

    Raises:
        PretrainedWeightsUnavailableError: the name has none (so it could not be checked).
    """
    match = torch.hub.HASH_REGEX.search(filename)
    if not match or not match.group(1):
        raise PretrainedWeightsUnavailableError(
            f"zoo file name {filename!r} has no '-<sha256 prefix>.' part, so its download "
            "cannot be checked; name it as CompressAI does (<model>-<quality>-<prefix>.pth.tar)")
    return match.group(1)


def weights_digest(key: str, qualities) -> str:
    """A short digest naming the zoo weights of ``key`` at ``qualities``: from the file
    names, which embed each file's SHA-256 prefix (the cache key of results computed
    from them; a mirror serving other files gives another digest).

    Raises:
        PretrainedWeightsUnavailableError: as :func:`zoo_url`.
    """
    names = [os.path.basename(urlparse(zoo_url(key, q)).path) for q in qualities]
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Temporarily set the default socket timeout (urllib, hence torch.hub, uses it)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def fetch_weights(url: str, folder: Path | None = None, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """The checked local copy of a zoo file: downloaded once, then read from the cache.

    The download goes to a temporary name beside the target and is renamed only after its
    SHA-256 matched the prefix in its name, so an interrupted or corrupt download never
    sits in the cache under the real name. A cached file is hashed again before use.

    Args:
        url: ``http(s)://`` or ``file://`` URL whose file name embeds a hash prefix.
        folder: the cache (default :func:`cache_dir`).
        timeout: seconds a socket may stay silent.

    Returns:
        The cached file.

    Raises:
        ZooHashMismatchError: the downloaded (or cached) file's digest does not start with
            its name's prefix; a download is then deleted, not cached.
        PretrainedWeightsUnavailableError: the download failed (offline, no such file).
    """
    folder = Path(folder) if folder is not None else cache_dir()
    filename = os.path.basename(urlparse(url).path)
    prefix = hash_prefix(filename)
    target = folder / filename
    if target.is_file():
        digest = _sha256(target)
        if not digest.startswith(prefix):
            raise ZooHashMismatchError(
                f"cached zoo file {target} has SHA-256 {digest}, but its name promises a digest "
                f"starting with {prefix}: the file was altered or truncated after download. "
                f"Delete it (rm {target}) and run again to download it afresh")
        return target
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{filename}.{uuid.uuid4().hex}.partial"
    try:
        try:
            with _socket_timeout(timeout):
                torch.hub.download_url_to_file(url, str(partial), hash_prefix=None, progress=False)
        except (OSError, urllib.error.URLError, ValueError) as exc:
            raise PretrainedWeightsUnavailableError(
                f"could not download {url} ({type(exc).__name__}: {exc}). CompressAI's published "
                f"weights are downloaded once into {folder}: connect to the internet, or copy the "
                f"zoo file {filename} into that folder (set TORCH_HOME to move it), or point "
                f"${ZOO_URLS_ENV} at a mirror") from exc
        digest = _sha256(partial)
        if not digest.startswith(prefix):
            raise ZooHashMismatchError(
                f"refused {url}: its SHA-256 is {digest}, but the file name promises a digest "
                f"starting with {prefix}. The download is corrupt or the server sent another "
                f"file; nothing was cached. Run again; if it persists, the server "
                f"{'(from $' + ZOO_URLS_ENV + ') ' if os.environ.get(ZOO_URLS_ENV) else ''}serves a "
                "wrong file")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


class VariableRateLevel(nn.Module):
    """One rate level of a CompressAI variable-rate (``*-vbr``) model, with the usual
    contract: ``forward(x)``, ``compress(x)``, ``decompress(strings, shape)``,
    ``update(force)``.

    Kamisli et al.'s models take the level as an argument (``s``) of every call and
    rebuild the hyper-latent's coder tables per level (``update(scale=...)``), so each
    level is its own copy with its own tables.

    Args:
        model: a ``*Vbr`` model of :mod:`compressai.models.vbr`.
        level: 0-based level (quality - 1).
    """

    def __init__(self, model: nn.Module, level: int):
        super().__init__()
        if not 0 <= level < model.levels:
            raise ValueError(f"level must be in 0..{model.levels - 1}, got {level}")
        self.model = model
        self.level = int(level)

    @property
    def downsampling_factor(self) -> int:
        return int(getattr(self.model, "downsampling_factor", 64))

    def forward(self, x: torch.Tensor) -> dict:
        return self.model(x, stage=2, s=self.level)

    def compress(self, x: torch.Tensor) -> dict:
        return self.model.compress(x, stage=2, s=self.level)

    def decompress(self, strings: list, shape) -> dict:
        return self.model.decompress(strings, shape, stage=2, s=self.level)

    def update(self, scale_table=None, force: bool = False) -> bool:
        # the hyper-latent's tables depend on this level's gain (CompressAI's update(scale=))
        scale = torch.abs(self.model.Gain[self.level]).detach()
        return self.model.update(scale_table=scale_table, force=force, scale=scale)


def _build(key: str, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """The model of a zoo state dict: this project's class for its registered keys (the
    same layers and keys, with its deterministic coders), else CompressAI's."""
    from compressai.zoo import image, image_vbr

    if key in MODELS:
        return MODELS[key].from_state_dict(state_dict)
    if key in image.model_architectures:
        return image.model_architectures[key].from_state_dict(state_dict)
    cls = image_vbr.model_architectures[key]
    if key in ("bmshj2018-hyperprior-vbr", "mbt2018-mean-vbr"):  # as compressai.zoo.image_vbr
        return cls.from_state_dict(state_dict, vr_entbttlnck=True)
    return cls.from_state_dict(state_dict)


def load_zoo_model(key: str, quality: int, device: str | torch.device = "cpu",
                   folder: Path | None = None) -> nn.Module:
    """A published model at a quality: download (once), hash check, load, coder tables.

    Args:
        key: a key of :data:`ZOO`.
        quality: one of its qualities.
        device: where to put the model.
        folder: the download cache (default :func:`cache_dir`).

    Returns:
        The model in eval mode with its coder tables built; for the variable-rate models
        a :class:`VariableRateLevel` at level ``quality - 1``.

    Raises:
        PretrainedWeightsUnavailableError, ZooHashMismatchError: see :func:`fetch_weights`; also a file
            that is not a state dict of the model's architecture.
    """
    entry = _entry(key, quality)
    url = zoo_url(key, quality)
    path = fetch_weights(url, folder)
    from compressai.zoo import load_state_dict

    try:
        state_dict = load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        model = _build(key, state_dict)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise PretrainedWeightsUnavailableError(
            f"{path} (from {url}) is not a {key} state dict ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); delete it and download it again") from exc
    if entry.variable_rate:
        model = VariableRateLevel(model, int(quality) - 1)
    # coder tables from the weights (CompressAI's update; for the vbr models per level),
    # on the CPU, so that they are the same whichever device the model then runs on
    model.update(force=True)
    return model.to(device).eval()
