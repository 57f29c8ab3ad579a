"""Model registry and quality tables for the learned codecs.

One place answers "which network is quality q of model X":

- ``MODELS`` maps a paper key (``"mbt2018"``, ``"bmshj2018-hyperprior"``, ``"pqmim"``, ...)
  to its class; classes join it with ``@register_model("key")``.
- Models with quality levels (:func:`quality_models`: the mbt2018 family, ELIC) are named
  by their key and a quality; a single-rate model (:data:`SINGLE_RATE_MODELS`: PQ-MIM, one
  checkpoint per rate point (M, K)) by its key and the checkpoint's name,
  ``pqmim-M4-K256`` (:func:`model_key`).
- ``LAMBDA_MSE``, ``FULL_WIDTHS`` and ``CPU_PROFILE_WIDTHS`` are the quality tables.
- Two profiles: ``"full"`` is CompressAI's zoo (published widths and weights, needs
  internet once); ``"cpu"`` is this project's own smaller models.
- :func:`default_config` and :func:`build_model` turn a key, a quality and a profile
  into a configuration and an untrained network.

Where the weights come from is the business of the modules above this one:
:mod:`nic_lib.models.checkpoints` (save and load, one format),
:mod:`nic_lib.models.hub` (:func:`~nic_lib.models.hub.get_model`, the ``"cpu"``
checkpoints or the zoo) and :mod:`nic_lib.models.zoo` (CompressAI's published weights).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

from nic_lib.errors import NicReproError

from . import variable_rate

__all__ = [
    "CPU_MODEL_WIDTHS",
    "CPU_PROFILE_WIDTHS",
    "FULL_WIDTHS",
    "LAMBDA_MSE",
    "LOW_RATE_QUALITIES",
    "MODELS",
    "ModelSettingError",
    "UnknownModelError",
    "SINGLE_RATE_MODELS",
    "available_models",
    "build_model",
    "default_config",
    "model_key",
    "model_name",
    "quality_models",
    "register_model",
    "widths",
]

# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------

class UnknownModelError(NicReproError, KeyError):
    """A model key that no class is registered under."""


class ModelSettingError(NicReproError, ValueError):
    """A quality, profile or configuration that the registry cannot give a model."""


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


#: Registered models without quality levels: each checkpoint is one rate point, named
#: ``<key>-<checkpoint stem>`` (``pqmim-M4-K256`` is ``checkpoints/pqmim/M4-K256.pt``).
SINGLE_RATE_MODELS = ("pqmim",)


def quality_models() -> list[str]:
    """Registered keys with quality levels (the λ and width tables below), sorted: every
    model but :data:`SINGLE_RATE_MODELS`."""
    return [name for name in available_models() if name not in SINGLE_RATE_MODELS]


def model_key(name: str) -> str:
    """The registry key a model name refers to: itself, or the key of a single-rate model's
    checkpoint name (``"pqmim-M4-K256"`` -> ``"pqmim"``).

    Raises:
        UnknownModelError (a KeyError): the name refers to no registered model.
    """
    if name in MODELS:
        return name
    key = name.split("-", 1)[0]
    if key in SINGLE_RATE_MODELS and key in MODELS and name != key + "-":
        return key
    _model_class(name)  # raises, naming the available keys
    return name


def _model_class(name: str) -> type[nn.Module]:
    if name not in MODELS:
        raise UnknownModelError(
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

#: Rate levels *below* quality 1 for this project's variable-rate cpu models (issue 31: the
#: learned baselines must reach PQ-MIM's 0.04 bpp). Not CompressAI qualities: the zoo and
#: :func:`widths` accept :data:`QUALITIES` only; a variable-rate run (``--qualities``) and
#: :func:`nic_lib.models.widen.add_levels` accept these too (they are in LAMBDA_MSE). λ keeps
#: the table's spacing (×1/1.93 per level, as q1→q2→q3) down to where the measured rate-λ
#: law of the shipped main line reaches ~0.035 bpp on Kodak: on n96's last EMA evaluation
#: (checkpoints/mbt2018/n96.eval.csv, q1-q3) log bpp = 0.56 · log λ + c, and q1 codes Kodak
#: at ~0.22 bpp, so bpp(λ) ≈ 0.22 · (λ / 0.0018)^0.56: q0 0.15, q-1 0.10, q-2 0.07, q-3 0.05,
#: q-4 0.035 (an extrapolation: the trained levels will say; tests/test_models.py refits it).
LOW_RATE_QUALITIES = (-4, -3, -2, -1, 0)
LAMBDA_MSE.update({0: 0.00093, -1: 0.00048, -2: 0.00025, -3: 0.00013, -4: 0.000067})

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
    # He et al. 2022 (and CompressAI's Elic2022Official): one width at every rate
    "elic2022": {q: (192, 320) for q in QUALITIES},
}

#: (N, M) of every model at every quality in the "cpu" profile: half the paper's N = 192
#: hidden channels and its full M = 192 latent channels (issue 25: at M = 96 every curve
#: flattened near 32 dB, the bound of a 96-number code per 16x16x3 block; at N = 64 the
#: transforms bound the top rates). The shipped models (``checkpoints/<model>/n96.pt``)
#: were reached by widening smaller ones without changing what they compute
#: (scripts/train_cpu_profile.py). One training step of mbt2018 at these widths, 128x128
#: crops, batch 8, one thread: ~0.5 s with native bfloat16, ~1.1-1.45 s in float32 on an
#: AVX2-only CPU.
CPU_PROFILE_WIDTHS: tuple[int, int] = (96, 192)

#: Models whose cpu-profile widths differ from :data:`CPU_PROFILE_WIDTHS`. ELIC at
#: (N, M) = (64, 192): M = 192 is the main line's latent width (mbt2018 n96) and leaves
#: ELIC's last channel group 64 wide; N = 64 because ELIC's transforms stack nine residual
#: bottleneck blocks and three attention blocks at N. Parameters: 10.1M at N = 64 (12.4M at
#: N = 96; 5.3M of either are CompressAI's channel-context networks, whose 224/128 widths
#: are fixed, at 1/16 resolution), against 8.2M for mbt2018 n96. One training step, 128²
#: crops, batch 8, one thread, beside other jobs (load average 5-6 on 2 cores): 1.35 s at
#: N = 64, 2.1 s at N = 96, 0.53 s for mbt2018 n96 in bf16 (benchmarks/ood_step_time.py).
CPU_MODEL_WIDTHS: dict[str, tuple[int, int]] = {"elic2022": (64, 192)}

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

#: Metric the quality tables and zoo weights refer to.
METRIC = "mse"


def _check_quality(quality: int) -> int:
    if int(quality) not in QUALITIES:
        raise ModelSettingError(f"quality must be one of {QUALITIES}, got {quality!r}")
    return int(quality)


def _check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ModelSettingError(f"profile must be one of {PROFILES}, got {profile!r}")
    return profile


def widths(name: str, quality: int, profile: str = "cpu") -> tuple[int, int]:
    """Channel widths (N, M) of a model at a quality in a profile.

    Args:
        name: model key.
        quality: 1..8.
        profile: ``"cpu"`` (this project's :data:`CPU_PROFILE_WIDTHS`, or the model's
            entry of :data:`CPU_MODEL_WIDTHS`) or ``"full"``
            (CompressAI's published widths, :data:`FULL_WIDTHS`).

    Returns:
        ``(N, M)``.

    Raises:
        UnknownModelError (a KeyError): unknown model. ModelSettingError (a ValueError):
            bad quality or profile.
    """
    _model_class(name)
    if name in SINGLE_RATE_MODELS:
        raise ModelSettingError(
            f"{name!r} has no quality levels: each of its checkpoints is one rate point; name "
            f"one (get_model('{name}-M4-K256') loads checkpoints/{name}/M4-K256.pt)")
    quality = _check_quality(quality)
    if _check_profile(profile) == "cpu":
        return CPU_MODEL_WIDTHS.get(name, CPU_PROFILE_WIDTHS)
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
        UnknownModelError (a KeyError): unknown model. ModelSettingError (a ValueError):
            bad quality or profile.
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
        UnknownModelError (a KeyError): unknown model. ModelSettingError (a ValueError):
            a required width is missing.
    """
    cls = _model_class(name)
    params = _architecture_parameters(cls)
    missing = [
        k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in config
    ]
    if missing:
        raise ModelSettingError(
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
