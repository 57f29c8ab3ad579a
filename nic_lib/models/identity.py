"""What identifies a model: its weights and the settings that change its bitstream.

One definition, used wherever a model must be recognised:

- the ``.nic`` container's weights fingerprint (:func:`nic_lib.container.weights_fingerprint`:
  the first 16 bytes of :func:`model_digest`, without the scale-calibration buffer, for
  the format's sake: see there), so a decoder refuses a file made with other weights;
- the cache keys of results computed with an in-memory model: :func:`model_id` (the OOD
  grid's :class:`nic_lib.bench.NicCodec`, :func:`nic_lib.neural.cached_rate_sweep`), and
  :func:`model_ids` for the ``models=`` of :func:`nic_lib.cache.cached_table`, which
  refuses a model object: the cache imports nothing of :mod:`nic_lib.models` (that import
  would close a cycle through :mod:`nic_lib.data`), so the caller names its models.

A *file* is identified by its bytes instead (:func:`nic_lib.fileio.file_digest`,
:func:`nic_lib.models.checkpoints.checkpoint_digest`): cheap, and it needs no loading.

The digest, in order:

    SHA-256( for key in sorted(state_dict):  key \\0 dtype \\0 shape \\0 bytes(tensor)
             then  JSON(coding_settings(model), sorted keys) )

tensor bytes little-endian, as every supported platform stores them; entropy-coder tables
included (they are what the coder reads).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from . import calibration

__all__ = ["coding_settings", "model_digest", "model_id", "model_ids"]

#: Hex digits of :func:`model_id` (as the result caches' other digests).
ID_CHARS = 16


def coding_settings(model: nn.Module) -> dict[str, object]:
    """Model state outside the state dict that changes the bitstream: the context models'
    symbol order, a variable-rate model's selected level, its scale calibration factor
    (:mod:`nic_lib.models.calibration`; absent when 1), and PQ-MIM's attention radius
    (a setting of its config that its encoder uses)."""
    settings: dict[str, object] = {}
    order = getattr(model, "coding_order", None)
    if isinstance(order, str):
        settings["coding_order"] = order
    level = getattr(getattr(model, "gain", None), "level", None)
    if isinstance(level, int):
        settings["rate_level"] = level
    factor = calibration.calibration_factor(model)
    if factor != 1.0:  # σ' = c σ changes every Gaussian table index
        settings["scale_factor"] = factor
    radius = getattr(model, "attention_radius", None)
    if isinstance(radius, int):
        settings["attention_radius"] = radius
    return settings


def model_digest(model: nn.Module, skip: Iterable[str] = ()) -> bytes:
    """SHA-256 of a model's weights and coding settings (the module docstring's formula).

    Args:
        model: any ``nn.Module`` (a submodule such as ``g_a`` too: no settings then).
        skip: state-dict keys left out (the container leaves out the calibration buffer,
            whose current factor enters through :func:`coding_settings`).

    Returns:
        The 32-byte digest.
    """
    skip = frozenset(skip)
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        if key in skip:
            continue
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    digest.update(json.dumps(coding_settings(model), sort_keys=True).encode())
    return digest.digest()


def model_id(model: nn.Module) -> str:
    """:func:`model_digest` as :data:`ID_CHARS` hex digits: a cache key of a model."""
    return model_digest(model).hex()[:ID_CHARS]


def model_ids(models):
    """:func:`model_id` of every model in a mapping or list (nested), anything else as given.

    What :func:`nic_lib.cache.cached_table` takes as ``models=`` for in-memory models:
    ``cached_table(..., models=model_ids({"mbt2018": {q: model, ...}}))``. Checkpoint
    paths, digest strings and ``None`` pass through (the cache digests a file itself).

    Args:
        models: an ``nn.Module``, a mapping or list/tuple of them (nested), or a value the
            cache digests itself (a path, a digest string, ``None``).

    Returns:
        The same shape with every module replaced by its :func:`model_id`; mapping keys as
        strings, tuples as lists (as in the cache's JSON key).
    """
    if isinstance(models, nn.Module):
        return model_id(models)
    if isinstance(models, Mapping):
        return {str(k): model_ids(v) for k, v in models.items()}
    if isinstance(models, (list, tuple)):
        return [model_ids(m) for m in models]
    return models
