"""Checkpoints: one self-describing file format for every registered model.

:func:`save_checkpoint` writes ``{"format", "format_version", "model", "quality",
"config", "state_dict", "dtype", "versions", **extra}`` atomically (version 2 adds
``"base"`` and ``"int8_scales"``, see below); :func:`load_checkpoint`
reads it with ``torch.load(..., weights_only=True)`` (no arbitrary code runs), rebuilds the
architecture from the stored config through :mod:`nic_lib.models.registry`, loads the
weights strictly, builds the entropy coders' tables and applies the file's scale
calibration (:mod:`nic_lib.models.calibration`). :func:`checkpoint_digest` names a
checkpoint's exact bytes (with its calibration) for result caches.

Two ways to make a family of models small (the ablations of notebook 01 share one set of
frozen transforms):

- ``base=``: tensors equal to those of another checkpoint (the *base*) are not stored; the
  file names the base by a path relative to itself and a SHA-256 of the shared tensors, and
  :func:`load_checkpoint` takes them from there (refusing a base whose shared tensors
  changed).
- ``dtype=torch.int8``: convolution kernels stored as int8 with one float32 scale per output
  channel, ``w ≈ s_c · q``, ``q = round(w / s_c) ∈ [−127, 127]``, ``s_c = max |w_c| / 127``
  (biases in float16). A quarter of float32's bytes; on the entropy model of
  ``mbt2018/n96.pt`` it moves the estimated rate by −0.24 … +0.14% (q1, q4, q8; 4 Kodak
  crops). Results are always measured on the weights as stored.

Where the ``"cpu"`` profile's checkpoints live, and which one :func:`~nic_lib.models.get_model`
loads, is :mod:`nic_lib.models.hub`'s business.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import compressai
import torch
from compressai.entropy_models import EntropyModel
from compressai.layers import MaskedConv2d
from torch import nn

from nic_lib import fileio
from nic_lib.errors import NicReproError

from . import calibration, tables, variable_rate
from .registry import MODELS, _architecture_of, available_models, build_model, model_name

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "checkpoint_digest",
    "load_checkpoint",
    "read_config",
    "save_checkpoint",
    "update_config",
    "write_calibration",
]

#: Version of the checkpoint layout written by save_checkpoint.
CHECKPOINT_FORMAT = "nic-repro-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
#: The version of files that use a base checkpoint or int8 kernels (older readers would
#: fail on them with a less helpful message).
CHECKPOINT_FORMAT_VERSION_SHARED = 2

#: Keys save_checkpoint owns; ``extra`` may not overwrite them.
_RESERVED_KEYS = ("format", "format_version", "model", "quality", "config", "state_dict",
                  "dtype", "versions", "base", "int8_scales")

#: Entropy-coder tables whose shape depends on update(), not on the architecture;
#: CompressAI's load_state_dict resizes them, so they are exempt from shape checks.
_RESIZABLE_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")

#: Floating dtypes checkpoints may store convolution weights in.
_STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16,
                   "bfloat16": torch.bfloat16, "int8": torch.int8}

class CheckpointError(NicReproError, ValueError):
    """A checkpoint file cannot be used (not a nic-repro checkpoint, unsafe pickle...)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The "cpu" profile's checkpoint for a model and quality does not exist yet."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint does not match the architecture or model it is loaded as."""


def _half_tensor_keys(model: nn.Module) -> set[str]:
    """State-dict keys a checkpoint stores in ``dtype`` (float16, bfloat16, int8): the
    model's own ``half_precision_keys()`` where it defines one (PQ-MIM: its weight matrices
    too, its biases not), else :func:`_conv_tensor_keys`."""
    own = getattr(model, "half_precision_keys", None)
    return set(own()) if callable(own) else _conv_tensor_keys(model)


def _conv_tensor_keys(model: nn.Module) -> set[str]:
    """State-dict keys of convolution layers: the bulk of the bytes, safe in fp16."""
    keys = set()
    for prefix, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            for key in module.state_dict():
                keys.add(f"{prefix}.{key}" if prefix else key)
    return keys


def _output_dim(model: nn.Module, key: str) -> int:
    """The output-channel dimension of a convolution kernel (ConvTranspose2d: 1)."""
    module = model.get_submodule(key.rsplit(".", 1)[0]) if "." in key else model
    return 1 if isinstance(module, nn.ConvTranspose2d) else 0


def quantize_int8(weight: torch.Tensor, out_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: ``(q, s)`` with ``w ≈ s · q``.

    s_c = max |w_c| / 127 (1 where a channel is all zero), q = round(w / s_c).
    """
    w = weight.detach().float()
    dims = [d for d in range(w.dim()) if d != out_dim]
    scale = w.abs().amax(dim=dims, keepdim=True) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.round(w / scale).clamp(-127, 127).to(torch.int8), scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``s · q`` in float32 (the weights an int8 checkpoint's model computes with)."""
    return q.float() * scale.float()


def _tensors_sha256(tensors: dict[str, torch.Tensor], keys: list[str]) -> str:
    """SHA-256 of tensors (float32 bytes, in the order of ``keys``, names included)."""
    digest = hashlib.sha256()
    for key in keys:
        digest.update(key.encode())
        digest.update(tensors[key].detach().float().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def _stored_weights(checkpoint: dict, path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's state dict as its model computes with it: int8 kernels dequantized and
    the tensors it shares with its base (``"base"``) taken from there, after checking them.
    """
    weights = dict(checkpoint["state_dict"])
    for key, scale in (checkpoint.get("int8_scales") or {}).items():
        weights[key] = dequantize_int8(weights[key], scale)
    base = checkpoint.get("base")
    if base:
        base_path = (path.parent / base["checkpoint"]).resolve()
        if not base_path.is_file():
            raise CheckpointNotFoundError(
                f"{path} stores only what differs from its base checkpoint {base['checkpoint']} "
                f"(looked for {base_path}); restore that file (git checkout) next to it")
        base_ckpt = _read(base_path)
        shared = _stored_weights(base_ckpt, base_path)
        keys = list(base["keys"])
        absent = [k for k in keys if k not in shared]
        if absent or _tensors_sha256(shared, keys) != base["sha256"]:
            raise CheckpointMismatchError(
                f"{path} was made on other weights of its base {base_path} than the base now "
                f"holds ({'missing ' + ', '.join(absent[:3]) if absent else 'SHA-256 differs'})"
                "; re-train it on the current base, or check out the base it was made on")
        weights.update({k: shared[k] for k in keys})
    return weights


#: Types torch.load(weights_only=True) reads back without help.
_PLAIN_TYPES = (str, int, float, bool, type(None), torch.Tensor)


def _check_plain(value: Any, where: str) -> None:
    """Raise ValueError if ``value`` holds anything weights_only loading would refuse."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, f"{where} key")
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif type(value) not in _PLAIN_TYPES and not isinstance(value, torch.Tensor):
        raise ValueError(
            f"{where} is a {type(value).__name__}; checkpoints are read with "
            "weights_only=True, so store only dicts, lists, str, int, float, bool, None "
            "and tensors (convert paths with str(), arrays with torch.as_tensor())"
        )


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike,
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
    base: str | os.PathLike | None = None,
    keep_float16: tuple[str, ...] = (),
) -> Path:
    """Write a self-describing checkpoint atomically (temp file + ``os.replace``).

    The file holds ``{"format", "format_version", "model", "quality", "config",
    "state_dict", "dtype", "versions", **extra}``; ``config`` is completed with the
    model's own architecture arguments (N, M, context_size, K, ...), so
    :func:`load_checkpoint` can rebuild the network without other information. Call
    ``model.update(force=True)`` before saving a final checkpoint: the entropy-coder
    tables are stored as they are, except the CDFs of Gaussian conditionals built for
    this project's scale table (:func:`nic_lib.models.tables.scale_table`): they depend
    on that table alone, are stored empty (3.2 MB less per model) and rebuilt by
    :func:`load_checkpoint`; so are the masks of masked (context) convolutions, which
    their constructor makes (:func:`_mask_keys`: 3.7 MB of n96's 5×5 context model in
    float16, 7.5 MB of a 7×7 one).

    Args:
        model: a registered model.
        path: destination file; parent folders are created.
        config: run configuration (lmbda, quality, training settings, ...); plain
            Python values only, as the file is read with ``weights_only=True``.
        extra: more top-level entries (epoch, optimizer state, metrics...), same rule.
        dtype: storage dtype of convolution weights and biases: ``torch.float32``
            (exact) or ``torch.float16`` / ``torch.bfloat16`` (half the size), or
            ``torch.int8`` (kernels in int8 with per-output-channel scales, biases in
            float16; a quarter). GDN and entropy-model tensors stay float32, whatever
            this says. A model with a ``half_precision_keys()`` method names the tensors
            this applies to itself (PQ-MIM:
            :meth:`~nic_lib.models.pqmim.PQMIM.half_precision_keys`).
        base: another checkpoint file; the tensors this model has equal to the base's
            (as the base's model computes with them) are not stored but taken from the
            base when loading. The base is named by its path relative to ``path``'s
            folder, so the two move together.
        keep_float16: module-name prefixes (``("g_a", "g_s")``) whose kernels stay float16
            under ``dtype=torch.int8``: a file that is the base of others keeps their
            shared frozen transforms as they were trained on (float16 is exact for weights
            that were shipped in float16 before).

    Returns:
        The path written.

    Raises:
        KeyError: the model's class is not registered.
        ValueError: ``config`` disagrees with the model's architecture, ``extra`` uses a
            reserved key or holds non-plain objects, or ``dtype`` is not supported.
    """
    name = model_name(model)
    dtype_name = str(dtype).removeprefix("torch.")
    if dtype_name not in _STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {list(_STORAGE_DTYPES)}, got {dtype}")
    config = dict(config)
    if config.setdefault("model", name) != name:
        raise ValueError(f"config says model {config['model']!r} but the model is {name!r}")
    for key, value in _architecture_of(model).items():
        if key in config and config[key] != value:
            raise ValueError(
                f"config[{key!r}] = {config[key]!r} but the model has {key} = {value!r}; "
                "save the config the model was built with"
            )
        config[key] = value
    if variable_rate.is_variable_rate(model):
        vr = {"lmbdas": variable_rate.rate_levels(model),
              "reference_lmbda": float(model.reference_lmbda)}
        if getattr(model, "per_level_hyper_density", False):
            vr["per_level_hyper_density"] = True
        for key, value in vr.items():
            if config.get(key) not in (None, value):
                raise ValueError(f"config[{key!r}] = {config[key]!r} but the model has "
                                 f"{key} = {value!r}; save the config the model was built with")
        config.update(vr)
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(_RESERVED_KEYS))
    if clash:
        raise ValueError(f"extra uses reserved checkpoint keys {clash}; rename them")

    path = Path(path)
    half_keys = _half_tensor_keys(model) if dtype != torch.float32 else set()
    derived = _derived_table_keys(model) | _mask_keys(model)
    own = model.state_dict()
    shared: list[str] = []
    base_entry = None
    if base is not None:
        base = Path(base)
        base_weights = _stored_weights(_read(base), base)
        shared = [k for k, t in own.items() if k not in derived and k in base_weights
                  and base_weights[k].shape == t.shape
                  and torch.equal(base_weights[k].to(t.dtype), t.detach().cpu())]
        base_entry = {"checkpoint": os.path.relpath(base.resolve(), path.parent.resolve()),
                      "keys": shared, "sha256": _tensors_sha256(base_weights, shared)}
    state_dict, int8_scales = {}, {}
    for key, tensor in own.items():
        if key in shared:
            continue
        tensor = tensor.detach().cpu()
        if key in half_keys and tensor.is_floating_point():
            if (dtype == torch.int8 and key.endswith(".weight") and tensor.dim() == 4
                    and not any(key == k or key.startswith(k + ".") for k in keep_float16)):
                tensor, int8_scales[key] = quantize_int8(tensor, _output_dim(model, key))
            else:
                tensor = tensor.to(torch.float16 if dtype == torch.int8 else dtype)
        # the Gaussian CDFs are a function of the scale table (kept), the context masks
        # of the architecture: stored empty
        state_dict[key] = tensor[:0].clone() if key in derived else tensor.clone()

    shares = base_entry is not None or int8_scales
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION_SHARED if shares else CHECKPOINT_FORMAT_VERSION,
        "model": name,
        "quality": config.get("quality"),
        "config": config,
        "state_dict": state_dict,
        "dtype": dtype_name,
        "versions": {"torch": str(torch.__version__), "compressai": str(compressai.__version__)},
        **({"base": base_entry} if base_entry is not None else {}),
        **({"int8_scales": int8_scales} if int8_scales else {}),
        **extra,
    }
    _check_plain(checkpoint, "checkpoint")
    with fileio.atomic_open(path, "wb", suffix=".tmp") as f:
        torch.save(checkpoint, f)
    return path


def _state_dict_differences(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Human-readable differences between a model's state dict and a checkpoint's."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict
        and not k.endswith(_RESIZABLE_BUFFERS)
        and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]

    def listing(label: str, items: list[str]) -> list[str]:
        shown = ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
        return [f"{label}: {shown}"] if items else []

    return (
        listing("missing keys", missing)
        + listing("unexpected keys", unexpected)
        + listing("shape mismatches", shapes)
    )


def _derived_table_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the CDF buffers of Gaussian conditionals whose scale table is
    this project's: :func:`load_checkpoint` rebuilds them from the table."""
    keys = set()
    for name, module in tables.named_conditionals(model):
        if (module._quantized_cdf.numel()
                and tables.scale_table_matches(module, tables.scale_table())):
            prefix = f"{name}." if name else ""
            keys |= {f"{prefix}{b}" for b in ("_quantized_cdf", "_offset", "_cdf_length")}
    return keys


def _mask_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the masks of masked convolutions (CompressAI's ``MaskedConv2d``
    and its checkerboard subclass): made by the layer's constructor from the kernel size
    and mask type, so a checkpoint stores them empty and :func:`load_checkpoint` takes
    them from the freshly built model."""
    return {f"{name}.mask" if name else "mask"
            for name, module in model.named_modules() if isinstance(module, MaskedConv2d)}


def _restore_masks(model: nn.Module, weights: dict[str, torch.Tensor], path: Path) -> None:
    """Fill the masks a checkpoint stores empty from the built model, in place; a mask a
    file stores in full (written before 2026-12-07) must equal the built one."""
    own = model.state_dict()
    for key in _mask_keys(model):
        stored = weights.get(key)
        if stored is None:
            continue  # reported as a missing key by _state_dict_differences
        if stored.numel() == 0:
            weights[key] = own[key].clone()
        elif stored.shape != own[key].shape or not torch.equal(stored.to(own[key].dtype),
                                                               own[key]):
            raise CheckpointMismatchError(
                f"{path}: its {key} is not the mask the architecture builds (context size "
                f"or mask type differ); load it with the code version that wrote it")


def _tables_missing(model: nn.Module) -> bool:
    """True if some entropy model has no coder tables yet (update() never ran)."""
    return any(
        isinstance(m, EntropyModel) and m._quantized_cdf.numel() == 0 for m in model.modules()
    )


def _read(path: Path) -> dict:
    """Read a checkpoint file safely and check that it is one of ours (a version this code
    reads)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} holds Python objects that safe loading (weights_only=True) refuses; "
            "re-save it with nic_lib.models.save_checkpoint, which stores only tensors "
            f"and plain values ({exc})"
        ) from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a nic-repro checkpoint (no format={CHECKPOINT_FORMAT!r} entry); "
            "write checkpoints with nic_lib.models.save_checkpoint"
        )
    absent = [k for k in ("model", "config", "state_dict") if k not in checkpoint]
    if absent:
        raise CheckpointError(
            f"{path} lacks {absent}; it was not written by nic_lib.models.save_checkpoint"
        )
    if checkpoint.get("format_version", 1) > CHECKPOINT_FORMAT_VERSION_SHARED:
        raise CheckpointError(
            f"{path} has checkpoint format version {checkpoint['format_version']}; this code "
            f"reads versions up to {CHECKPOINT_FORMAT_VERSION_SHARED}: update nic-repro")
    return checkpoint


def read_config(path: str | os.PathLike) -> dict:
    """The training config a checkpoint file records (its ``config`` entry), without
    building the model: e.g. the rate levels (``qualities``) a file holds.

    Args:
        path: a checkpoint written by :func:`save_checkpoint`.

    Returns:
        The config dict (plain values).

    Raises:
        CheckpointError: the file is not one of this project's checkpoints, or is of a
            newer format.
    """
    return _read(Path(path))["config"]


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu", calibrated: bool = True
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a checkpoint written by :func:`save_checkpoint`.

    The file is read with ``torch.load(..., weights_only=True)`` (no arbitrary code
    runs), the architecture is rebuilt from the stored config, the state dict is loaded
    strictly (CompressAI resizes the entropy-coder tables), the Gaussian coders' CDFs
    are built for :func:`nic_lib.models.tables.scale_table` (they depend on the table, not
    on the weights; checkpoints store them empty, and a file built for another table is
    refused), the other tables with ``update(force=True)`` only if the checkpoint has
    none, and the model is put in eval mode.

    Scale calibration (:mod:`nic_lib.models.calibration`): factors in the state dict
    (``scale_calibration``, written by ``scripts/calibrate_scales.py``) are loaded with
    the weights: the buffer is registered before the strict load, since a freshly built
    model has none. The ``<name>.calibration.json`` record beside a file describes the fit
    (every candidate's bits); it is not read here.

    Args:
        path: checkpoint file.
        device: where to put the model.
        calibrated: apply the checkpoint's scale calibration when it has one (False: the
            weights alone, e.g. to warm-start training from them; the buffer is dropped).

    Returns:
        ``(model, checkpoint)``: the model in eval mode and the checkpoint dict (config,
        extra entries; its ``state_dict`` as stored).

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointError: the file is not a nic-repro checkpoint or contains Python
            objects that ``weights_only`` loading refuses.
        CheckpointMismatchError: the stored weights do not fit the stored architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    checkpoint = _read(path)
    name, config = checkpoint["model"], checkpoint["config"]
    if name not in MODELS:
        raise CheckpointMismatchError(
            f"{path} stores unknown model {name!r}; available: {', '.join(available_models())}"
        )
    try:
        model = build_model(name, **config)
    except (TypeError, ValueError) as exc:
        raise CheckpointMismatchError(
            f"{path}: cannot build {name!r} from the stored config {config}: {exc}"
        ) from exc
    weights = _stored_weights(checkpoint, path)
    _restore_masks(model, weights, path)
    if calibration.BUFFER in weights:  # calibrated in the state dict: the buffer must exist
        try:
            calibration.apply_calibration(model, weights[calibration.BUFFER].tolist())
        except ValueError as exc:
            raise CheckpointMismatchError(f"{path}: its {calibration.BUFFER} does not fit "
                                          f"{name!r} ({exc})") from exc
    differences = _state_dict_differences(model, weights)
    if differences:
        raise CheckpointMismatchError(
            f"{path} does not match the {name!r} architecture built from its config "
            f"(N={config.get('N')}, M={config.get('M')}): " + "; ".join(differences)
            + ". Retrain it, or load it with the code version that wrote it "
            f"({checkpoint.get('versions')})"
        )
    model.load_state_dict(weights)
    # Gaussian CDFs depend on the scale table alone: stored empty (save_checkpoint), they
    # are built here for this project's table; the other tables only if the checkpoint
    # has none. A file coded for another table is refused, not converted (the files of
    # CompressAI's 64 scales, before 2026-11-30, left the tree with the M = 96 set).
    table = tables.scale_table()
    other = {name or "model": gc.scale_table.numel() for name, gc in tables.named_conditionals(model)
             if gc._quantized_cdf.numel() and not tables.scale_table_matches(gc, table)}
    if other:
        raise CheckpointMismatchError(
            f"{path}: its Gaussian coder ({', '.join(other)}) was built for another scale table "
            f"({', '.join(map(str, set(other.values())))} scales; this code builds {table.numel()}); "
            "re-save it with `nic_lib.models.tables.set_scale_table(model)` and save_checkpoint, "
            f"using the code version that wrote it ({checkpoint.get('versions')})")
    tables.set_scale_table(model)
    if _tables_missing(model):
        model.update(force=True)
    if not calibrated:
        calibration.remove_calibration(model)
    return model.to(device).eval(), checkpoint


def write_calibration(path: str | os.PathLike, factors: list[float] | None) -> Path:
    """Store scale-calibration factors in a checkpoint's state dict, in place (atomically).

    ``load_checkpoint`` then gives the calibrated model (:mod:`nic_lib.models.calibration`);
    every other entry of the file is kept.

    Args:
        path: a checkpoint of a model that supports calibration.
        factors: one per rate level; None removes the factors (an uncalibrated file).

    Returns:
        The path.

    Raises:
        CheckpointMismatchError: the factors do not fit the checkpoint's model.
    """
    path = Path(path)
    checkpoint = _read(path)
    model, _ = load_checkpoint(path, calibrated=False)
    checkpoint["state_dict"].pop(calibration.BUFFER, None)
    if factors is not None:
        try:
            calibration.apply_calibration(model, factors)
        except ValueError as exc:
            raise CheckpointMismatchError(f"{path}: {exc}") from exc
        checkpoint["state_dict"][calibration.BUFFER] = model.scale_calibration.detach().cpu().clone()
    with fileio.atomic_open(path, "wb", suffix=".tmp") as f:
        torch.save(checkpoint, f)
    return path


def update_config(path: str | os.PathLike, **entries: Any) -> Path:
    """Set entries of a checkpoint's config in place (atomically), keeping every other entry.

    For settings chosen after training that are not weights (PQ-MIM's tuned
    ``attention_radius``, :func:`nic_lib.models.pqmim.save_tuned_radius`). The model is
    rebuilt from the new config and the file's weights before anything is written.

    Args:
        path: a checkpoint.
        **entries: config keys and plain values.

    Returns:
        The path.

    Raises:
        CheckpointMismatchError: the model cannot be built from the new config with the
            file's weights.
    """
    path = Path(path)
    checkpoint = _read(path)
    config = {**checkpoint["config"], **entries}
    _check_plain(config, "config")
    try:
        model = build_model(checkpoint["model"], **config)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointMismatchError(f"{path}: cannot build {checkpoint['model']!r} from "
                                      f"the config with {entries}: {exc}") from exc
    weights = _stored_weights(checkpoint, path)
    _restore_masks(model, weights, path)
    differences = _state_dict_differences(model, weights)
    if differences:
        raise CheckpointMismatchError(f"{path}: with {entries} its weights no longer fit its "
                                      "model: " + "; ".join(differences))
    checkpoint["config"] = config
    with fileio.atomic_open(path, "wb", suffix=".tmp") as f:
        torch.save(checkpoint, f)
    return path


def checkpoint_digest(path: str | os.PathLike) -> str:
    """First 16 hex digits of a checkpoint's SHA-256 and its sidecars' (``<stem>.*.json``:
    a scale-calibration record, or an attention-radius record, which PQ-MIM's loading
    applies): the cache key of results computed from it, :func:`nic_lib.fileio.file_digest`,
    the project's one file identity (the result caches key a checkpoint path the same way).
    """
    return fileio.file_digest(path)