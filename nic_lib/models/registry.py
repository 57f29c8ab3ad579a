"""Model registry, quality tables, profiles and checkpoints for the learned codecs.

One place answers "which network is quality q of model X, and where are its weights":

- ``MODELS`` maps a paper key (``"mbt2018"``, ``"bmshj2018-hyperprior"``, ...) to its
  class; classes join it with ``@register_model("key")``.
- ``LAMBDA_MSE``, ``FULL_WIDTHS`` and ``CPU_PROFILE_WIDTHS`` are the quality tables.
- Two profiles: ``"full"`` is CompressAI's zoo (published widths and weights, needs
  internet once); ``"cpu"`` is this project's own smaller models, trained with
  ``python -m nic_lib.train`` and stored as ``checkpoints/<model>/q<quality>.pt``, or as
  one variable-rate file ``checkpoints/<model>/vr.pt`` covering several qualities.
- :func:`save_checkpoint` / :func:`load_checkpoint` write and read self-describing
  checkpoints (model key and full config inside, loaded with ``weights_only=True``).
"""

from __future__ import annotations

import inspect
import os
import pickle
from pathlib import Path
from typing import Any, Callable

import torch
from compressai.entropy_models import EntropyModel
from torch import nn

from nic_lib import fileio

from . import calibration, tables, variable_rate, zoo
from .zoo import PretrainedWeightsUnavailableError, ZooHashMismatchError

__all__ = [
    "CPU_PROFILE_WIDTHS",
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "FULL_WIDTHS",
    "LAMBDA_MSE",
    "MODELS",
    "PretrainedWeightsUnavailableError",
    "ZooHashMismatchError",
    "available_models",
    "build_model",
    "checkpoint_dir",
    "checkpoint_path",
    "default_config",
    "default_device",
    "get_model",
    "load_checkpoint",
    "model_name",
    "register_model",
    "resolve_device",
    "save_checkpoint",
    "variable_rate_checkpoint_path",
    "widths",
]

# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------

#: Paper key -> model class. Filled by ``@register_model`` in ``nic_lib.models.google``.
MODELS: dict[str, type[nn.Module]] = {}


def register_model(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator registering a model under its paper key.

    Args:
        name: the key, in the paper's words (``"mbt2018"``, ``"mbt2018-gmm"``).

    Returns:
        A decorator that adds the class to :data:`MODELS` and returns it unchanged.

    Raises:
        ValueError: if the key is already taken by another class.
    """

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        if name in MODELS and MODELS[name] is not cls:
            raise ValueError(
                f"model key {name!r} is already registered to {MODELS[name].__name__}; "
                "pick another key in nic_lib/models/"
            )
        MODELS[name] = cls
        return cls

    return decorator


def available_models() -> list[str]:
    """Registered model keys, sorted.

    Returns:
        The keys accepted by :func:`get_model` and :func:`build_model`.
    """
    return sorted(MODELS)


def _model_class(name: str) -> type[nn.Module]:
    if name not in MODELS:
        raise KeyError(
            f"unknown model {name!r}; available: {', '.join(available_models())} "
            "(new models register themselves with @register_model in nic_lib/models/)"
        )
    return MODELS[name]


def model_name(model: nn.Module) -> str:
    """The registry key of a model instance (exact class match).

    Args:
        model: an instance of a registered class.

    Returns:
        Its key in :data:`MODELS`.

    Raises:
        KeyError: if the model's class is not registered.
    """
    for name, cls in MODELS.items():
        if type(model) is cls:
            return name
    raise KeyError(
        f"{type(model).__name__} is not a registered model; register it with "
        "@register_model in nic_lib/models/ before saving checkpoints of it"
    )


# --------------------------------------------------------------------------------------
# Quality tables (the only place they live)
# --------------------------------------------------------------------------------------

#: Quality levels, as in CompressAI's zoo (1 = lowest rate).
QUALITIES = tuple(range(1, 9))

#: Rate-distortion trade-off for MSE training, L = R + lambda * 255^2 * MSE, per quality
#: (CompressAI's values, which the zoo's published weights were trained with).
LAMBDA_MSE: dict[int, float] = {
    1: 0.0018,
    2: 0.0035,
    3: 0.0067,
    4: 0.0130,
    5: 0.0250,
    6: 0.0483,
    7: 0.0932,
    8: 0.1800,
}

#: Rate-distortion trade-off for MS-SSIM training, L = R + lambda * (1 - MS-SSIM), per
#: quality (CompressAI's zoo values for its MS-SSIM weights).
LAMBDA_MSSSIM: dict[int, float] = {
    1: 2.40,
    2: 4.58,
    3: 8.73,
    4: 16.64,
    5: 31.73,
    6: 60.50,
    7: 115.37,
    8: 220.00,
}

_LOW, _HIGH = (128, 192), (192, 320)  # bmshj2018 / mbt2018-mean widths (N, M)
_JOINT_LOW, _JOINT_HIGH = (192, 192), (192, 320)  # mbt2018 widths (N, M)
_MBT2018_WIDTHS = {q: _JOINT_LOW if q <= 4 else _JOINT_HIGH for q in QUALITIES}

#: Published (N, M) per model and quality: CompressAI's ``compressai/zoo/image.py``
#: ``cfgs``, copied so the table reads in one place (tests check they agree). The
#: ablations without a zoo model use the mbt2018 widths, so they differ from it only in
#: their entropy model.
FULL_WIDTHS: dict[str, dict[int, tuple[int, int]]] = {
    "bmshj2018-factorized": {q: _LOW if q <= 5 else _HIGH for q in QUALITIES},
    "bmshj2018-hyperprior": {q: _LOW if q <= 5 else _HIGH for q in QUALITIES},
    "mbt2018-mean": {q: _LOW if q <= 4 else _HIGH for q in QUALITIES},
    "mbt2018": dict(_MBT2018_WIDTHS),
    "mbt2018-context": dict(_MBT2018_WIDTHS),
    "mbt2018-gmm": dict(_MBT2018_WIDTHS),
    "mbt2018-checkerboard": dict(_MBT2018_WIDTHS),
}

#: (N, M) of every model at every quality in the "cpu" profile: a third of the paper's
#: N=192 and half its M=192. Measured here (benchmarks/train_throughput.py, mbt2018, 128x128
#: crops, batch 8, 2 idle cores): 54-59 images/s, i.e. ~10,000 steps in 25 minutes: what a
#: 2-core budget of a few hours can train (scripts/train_cpu_profile.py).
CPU_PROFILE_WIDTHS: tuple[int, int] = (64, 96)

#: Our key -> CompressAI zoo function (``compressai.zoo.<fn>``) with published weights;
#: the whole zoo, cheng2020 and the variable-rate models included, is
#: :data:`nic_lib.models.zoo.ZOO`.
ZOO_FUNCTIONS: dict[str, str] = {
    "bmshj2018-factorized": "bmshj2018_factorized",
    "bmshj2018-hyperprior": "bmshj2018_hyperprior",
    "mbt2018-mean": "mbt2018_mean",
    "mbt2018": "mbt2018",
}

#: Profiles: "cpu" = this project's own small models, "full" = CompressAI's zoo.
PROFILES = ("cpu", "full")

#: Seconds a socket may stay silent while the zoo downloads weights (nic_lib.models.zoo).
DOWNLOAD_TIMEOUT_S = zoo.DOWNLOAD_TIMEOUT_S

#: Metric the quality tables and zoo weights refer to.
METRIC = "mse"


def _check_quality(quality: int) -> int:
    if int(quality) not in QUALITIES:
        raise ValueError(f"quality must be one of {QUALITIES}, got {quality!r}")
    return int(quality)


def _check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    return profile


def widths(name: str, quality: int, profile: str = "cpu") -> tuple[int, int]:
    """Channel widths (N, M) of a model at a quality in a profile.

    Args:
        name: model key.
        quality: 1..8.
        profile: ``"cpu"`` (this project's :data:`CPU_PROFILE_WIDTHS`) or ``"full"``
            (CompressAI's published widths, :data:`FULL_WIDTHS`).

    Returns:
        ``(N, M)``.

    Raises:
        KeyError: unknown model. ValueError: bad quality or profile.
    """
    _model_class(name)
    quality = _check_quality(quality)
    if _check_profile(profile) == "cpu":
        return CPU_PROFILE_WIDTHS
    return FULL_WIDTHS[name][quality]


def _architecture_parameters(cls: type[nn.Module]) -> dict[str, inspect.Parameter]:
    """Named constructor parameters of a model class (N, M, context_size, K, ...)."""
    params = inspect.signature(cls.__init__).parameters
    return {
        k: p
        for k, p in list(params.items())[1:]  # drop self
        if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    }


def default_config(name: str, quality: int, profile: str = "cpu") -> dict[str, Any]:
    """The full configuration of a model at a quality: what a checkpoint stores.

    Args:
        name: model key.
        quality: 1..8.
        profile: ``"cpu"`` or ``"full"``.

    Returns:
        ``{"model", "quality", "profile", "metric", "lmbda", "N", "M", ...}`` with every
        other constructor argument (``context_size``, ``K``, ...) at its default, so the
        training module can extend it and :func:`save_checkpoint` can store it.

    Raises:
        KeyError: unknown model. ValueError: bad quality or profile.
    """
    cls = _model_class(name)
    n, m = widths(name, quality, profile)
    config: dict[str, Any] = {
        "model": name,
        "quality": int(quality),
        "profile": profile,
        "metric": METRIC,
        "lmbda": LAMBDA_MSE[int(quality)],
    }
    for key, param in _architecture_parameters(cls).items():
        if param.default is not inspect.Parameter.empty:
            config[key] = param.default
    config.update(N=n, M=m)
    return config


def build_model(name: str, **config: Any) -> nn.Module:
    """Build an untrained model from a config (extra keys such as lmbda are ignored).

    Args:
        name: model key.
        **config: at least ``N`` and ``M``; other constructor arguments
            (``context_size``, ``K``, ...) are taken when present; ``lmbdas`` (and
            ``reference_lmbda``, ``per_level_hyper_density``) make it a variable-rate
            model (:func:`nic_lib.models.variable_rate.make_variable_rate`).

    Returns:
        A freshly initialised model (train mode, entropy-coder tables not built yet).

    Raises:
        KeyError: unknown model. ValueError: a required width is missing.
    """
    cls = _model_class(name)
    params = _architecture_parameters(cls)
    missing = [
        k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in config
    ]
    if missing:
        raise ValueError(
            f"config for {name!r} lacks {missing}; start from "
            f"nic_lib.models.default_config({name!r}, quality, profile)"
        )
    model = cls(**{k: v for k, v in config.items() if k in params})
    if config.get("lmbdas"):
        # one network for several λ (gain units): see nic_lib.models.variable_rate
        variable_rate.make_variable_rate(
            model, config["lmbdas"], config.get("reference_lmbda"),
            per_level_hyper_density=bool(config.get("per_level_hyper_density", False)))
    return model


def _architecture_of(model: nn.Module) -> dict[str, Any]:
    """Constructor arguments read back from a model's attributes (N, M, context_size...)."""
    params = _architecture_parameters(type(model))
    return {k: getattr(model, k) for k in params if hasattr(model, k)}


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------

#: Version of the checkpoint layout written by save_checkpoint.
CHECKPOINT_FORMAT = "nic-repro-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1

#: Keys save_checkpoint owns; ``extra`` may not overwrite them.
_RESERVED_KEYS = ("format", "format_version", "model", "quality", "config", "state_dict",
                  "dtype", "versions")

#: Entropy-coder tables whose shape depends on update(), not on the architecture;
#: CompressAI's load_state_dict resizes them, so they are exempt from shape checks.
_RESIZABLE_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")

#: Floating dtypes checkpoints may store convolution weights in.
_STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16,
                   "bfloat16": torch.bfloat16}

#: Env var overriding the folder of the "cpu" profile's checkpoints.
CHECKPOINT_DIR_ENV = "NIC_CHECKPOINT_DIR"

#: Repository root (this file is nic_lib/models/registry.py).
_REPO_ROOT = Path(__file__).resolve().parents[2]


class CheckpointError(ValueError):
    """A checkpoint file cannot be used (not a nic-repro checkpoint, unsafe pickle...)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The "cpu" profile's checkpoint for a model and quality does not exist yet."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint does not match the architecture or model it is loaded as."""


def checkpoint_dir() -> Path:
    """Folder holding the "cpu" profile's checkpoints.

    Returns:
        ``$NIC_CHECKPOINT_DIR`` when set, else ``checkpoints/`` at the repository root.
    """
    env = os.environ.get(CHECKPOINT_DIR_ENV)
    return Path(env).expanduser() if env else _REPO_ROOT / "checkpoints"


def checkpoint_path(name: str, quality: int) -> Path:
    """Where the "cpu" profile's checkpoint of a model at a quality lives.

    Args:
        name: model key.
        quality: 1..8.

    Returns:
        ``checkpoint_dir() / name / f"q{quality}.pt"``.
    """
    return checkpoint_dir() / name / f"q{_check_quality(quality)}.pt"


def variable_rate_checkpoint_path(name: str) -> Path:
    """Where the "cpu" profile's variable-rate checkpoint of a model lives.

    One file holds every quality it was trained for (its config's ``qualities``); see
    :mod:`nic_lib.models.variable_rate`.

    Args:
        name: model key.

    Returns:
        ``checkpoint_dir() / name / "vr.pt"``.
    """
    _model_class(name)
    return checkpoint_dir() / name / "vr.pt"


def _conv_tensor_keys(model: nn.Module) -> set[str]:
    """State-dict keys of convolution layers: the bulk of the bytes, safe in fp16."""
    keys = set()
    for prefix, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            for key in module.state_dict():
                keys.add(f"{prefix}.{key}" if prefix else key)
    return keys


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
    :func:`load_checkpoint`.

    Args:
        model: a registered model.
        path: destination file; parent folders are created.
        config: run configuration (lmbda, quality, training settings, ...); plain
            Python values only, as the file is read with ``weights_only=True``.
        extra: more top-level entries (epoch, optimizer state, metrics...), same rule.
        dtype: storage dtype of convolution weights and biases: ``torch.float32``
            (exact) or ``torch.float16`` / ``torch.bfloat16`` (half the size). GDN and
            entropy-model tensors stay float32, whatever this says.

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

    half_keys = _conv_tensor_keys(model) if dtype != torch.float32 else set()
    derived = _derived_table_keys(model)
    state_dict = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if key in half_keys and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        # the Gaussian CDFs are a function of the scale table (kept): stored empty
        state_dict[key] = tensor[:0].clone() if key in derived else tensor.clone()

    import compressai

    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "model": name,
        "quality": config.get("quality"),
        "config": config,
        "state_dict": state_dict,
        "dtype": dtype_name,
        "versions": {"torch": str(torch.__version__), "compressai": str(compressai.__version__)},
        **extra,
    }
    _check_plain(checkpoint, "checkpoint")
    path = Path(path)
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


def _tables_missing(model: nn.Module) -> bool:
    """True if some entropy model has no coder tables yet (update() never ran)."""
    return any(
        isinstance(m, EntropyModel) and m._quantized_cdf.numel() == 0 for m in model.modules()
    )


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu", calibrated: bool = True
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a checkpoint written by :func:`save_checkpoint`.

    The file is read with ``torch.load(..., weights_only=True)`` (no arbitrary code
    runs), the architecture is rebuilt from the stored config, the state dict is loaded
    strictly (CompressAI resizes the entropy-coder tables), the Gaussian coders' CDFs
    are built for :func:`nic_lib.models.tables.scale_table` unless the checkpoint holds
    exactly those (they depend on the table, not on the weights; checkpoints store them
    empty), the other tables with ``update(force=True)`` only if the checkpoint has
    none, and the model is put in eval mode. A scale calibration fitted on this very file
    (``<name>.calibration.json``, :mod:`nic_lib.models.calibration`) is applied.

    Args:
        path: checkpoint file.
        device: where to put the model.
        calibrated: apply the checkpoint's scale calibration when it has one (False: the
            weights alone, e.g. to warm-start training from them).

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
    differences = _state_dict_differences(model, checkpoint["state_dict"])
    if differences:
        raise CheckpointMismatchError(
            f"{path} does not match the {name!r} architecture built from its config "
            f"(N={config.get('N')}, M={config.get('M')}): " + "; ".join(differences)
            + ". Retrain it, or load it with the code version that wrote it "
            f"({checkpoint.get('versions')})"
        )
    model.load_state_dict(dict(checkpoint["state_dict"]))
    # Gaussian CDFs depend on the scale table alone: stored empty (save_checkpoint), or
    # built for another table (before 2026-11-30: CompressAI's 64 scales), they are
    # built here for this project's; the other tables only if the checkpoint has none.
    tables.set_scale_table(model)
    if _tables_missing(model):
        model.update(force=True)
    factors = calibration.read_calibration(path) if calibrated else None
    if factors is not None:
        try:
            calibration.apply_calibration(model, factors)
        except ValueError as exc:
            raise CheckpointMismatchError(
                f"{calibration.calibration_path(path)} does not fit {path} ({exc}); refit it "
                f"with `python scripts/calibrate_scales.py --checkpoint {path}` or delete it"
            ) from exc
    return model.to(device).eval(), checkpoint


# --------------------------------------------------------------------------------------
# get_model: one entry point for both profiles
# --------------------------------------------------------------------------------------


def default_device() -> str:
    """``"cuda"`` when PyTorch sees a GPU, else ``"cpu"``: the default of every ``--device``
    and ``DEVICE`` knob (networks run there; see :mod:`nic_lib.neural` for the coder)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"`` -> :func:`default_device`; anything else as given.

    Raises:
        ValueError: a CUDA device was asked for on a machine without one.
    """
    if device is None or str(device) == "auto":
        return torch.device(default_device())
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was asked for, but PyTorch sees no GPU here; "
                         "use device='cpu' (or 'auto', which picks a GPU only when there is one)")
    return device


def get_model(
    name: str,
    quality: int,
    profile: str = "cpu",
    pretrained: bool = True,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """The model of a paper key at a quality, in a profile.

    Args:
        name: model key (see :func:`available_models`).
        quality: 1..8.
        profile: ``"full"``: CompressAI's zoo widths and published MSE weights
            (``compressai.zoo.<fn>(quality, metric="mse", pretrained=True)``).
            ``"cpu"``: this project's checkpoint ``checkpoints/<name>/q<quality>.pt``,
            else the variable-rate ``checkpoints/<name>/vr.pt`` at that quality's level
            (folder overridable with ``$NIC_CHECKPOINT_DIR``).
        pretrained: False builds an untrained model with the profile's widths (train
            mode, no coder tables: call ``update(force=True)`` before compressing).
        device: where to put the model.

    Returns:
        The model; in eval mode with coder tables built when ``pretrained``.

    Raises:
        KeyError: unknown model. ValueError: bad quality or profile; ``"full"`` with
            ``pretrained=True`` for an ablation that has no published weights.
        PretrainedWeightsUnavailableError: the zoo download failed (offline machine);
            ZooHashMismatchError when the file's digest is not the one its name promises.
        CheckpointNotFoundError: the "cpu" checkpoint has not been trained yet.
        CheckpointMismatchError: the checkpoint is for another model or quality, or its
            weights do not fit the architecture.
    """
    _model_class(name)
    quality = _check_quality(quality)
    profile = _check_profile(profile)
    if not pretrained:
        n, m = widths(name, quality, profile)
        return build_model(name, N=n, M=m).to(device)
    if profile == "full":
        if name not in ZOO_FUNCTIONS:
            raise ValueError(
                f"{name!r} is an ablation without published weights (CompressAI's zoo has "
                f"{', '.join(ZOO_FUNCTIONS)}); use profile='cpu' with a checkpoint from "
                f"`python -m nic_lib.train --model {name} --quality {quality} --profile cpu`, "
                "or pretrained=False for an untrained full-width model"
            )
        # download once into torch.hub's cache, hash checked (nic_lib.models.zoo)
        return zoo.load_zoo_model(name, quality, device=device)

    path, vr_path = checkpoint_path(name, quality), variable_rate_checkpoint_path(name)
    if not path.is_file() and vr_path.is_file():
        model, checkpoint = load_checkpoint(vr_path, device=device)
        qualities = list(checkpoint["config"].get("qualities") or [])
        if checkpoint["model"] != name or quality not in qualities:
            raise CheckpointNotFoundError(
                f"{vr_path} holds {checkpoint['model']!r} at qualities {qualities}, not "
                f"{name!r} quality {quality}; use one of those qualities, or train q{quality} "
                f"with `python -m nic_lib.train --model {name} --quality {quality} --profile cpu`"
            )
        return variable_rate.set_rate_level(model, qualities.index(quality))
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"no cpu-profile checkpoint for {name} q{quality} at {path} (nor a variable-rate "
            f"{vr_path}); train it with "
            f"`python -m nic_lib.train --model {name} --quality {quality} --profile cpu` "
            f"(or point ${CHECKPOINT_DIR_ENV} at a folder holding {name}/q{quality}.pt), "
            "or use profile='full' for CompressAI's published weights"
        )
    model, checkpoint = load_checkpoint(path, device=device)
    if checkpoint["model"] != name or checkpoint.get("quality") not in (None, quality):
        raise CheckpointMismatchError(
            f"{path} holds {checkpoint['model']!r} quality {checkpoint.get('quality')}, "
            f"not {name!r} quality {quality}; retrain with "
            f"`python -m nic_lib.train --model {name} --quality {quality} --profile cpu`"
        )
    return model
