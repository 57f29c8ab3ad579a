"""Where a model's weights come from: :func:`get_model`, one entry point for both profiles.

- ``"cpu"``: this project's own small models, trained with ``python -m nic_lib.train
  --qualities ...`` (``scripts/train_cpu_profile.py`` runs the shipped recipe) and stored
  under :func:`checkpoint_dir` (``checkpoints/`` or ``$NIC_CHECKPOINT_DIR``) as one
  variable-rate file ``<model>/n96.pt`` covering qualities 1–8 (:data:`CPU_FILE`: N = 96,
  M = 192; ``mbt2018/n96.pt`` is the main line, trained end to end, the other models are
  the ablation protocol's entropy models on its frozen transforms); read by
  :func:`nic_lib.models.checkpoints.load_checkpoint`. A model's folder may also hold a
  *top* file ``<model>/n96-top.pt`` (:data:`CPU_TOP_FILE`) with a few top qualities
  trained on transforms of their own (``mbt2018``: q6–q8, stage ``n96-top`` of the
  script; issue 25 allows top levels that beat the variable-rate model there): where it
  is shipped, it serves the qualities it holds and ``n96.pt`` the others.
  :func:`cpu_checkpoint_for` is the one rule saying which file holds a (model, quality),
  :func:`cpu_checkpoint_files` lists a model's files and :func:`cpu_checkpoint_digest`
  identifies them together (a result cache keyed on it changes when either file
  changes); :func:`get_model`, :func:`nic_lib.neural.quality_models` with a model key,
  ``nic compress`` / ``nic decompress`` and the test vectors all go through them. Other
  checkpoints (a single-rate run's ``final.pt``, the protocol's ``mbt2018/n96-ablation.pt``
  and ``n96-ctx3.pt``, ``n96.pt`` itself where the main line's own 8 levels are wanted)
  are loaded by path with it.
- ``"full"``: CompressAI's published weights at its widths, downloaded once and hash
  checked by :mod:`nic_lib.models.zoo`.
- A single-rate model (:data:`~nic_lib.models.registry.SINGLE_RATE_MODELS`, PQ-MIM) has one
  checkpoint per rate point, named ``<key>-<stem>``: ``get_model("pqmim-M4-K256")`` loads
  ``checkpoints/pqmim/M4-K256.pt`` (:func:`single_rate_checkpoint_path`); its one quality is 1.
  :func:`model_from_checkpoint` loads any checkpoint file for coding and names it.

Also the device rule of every ``--device`` / ``DEVICE`` knob (:func:`resolve_device`).
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from . import variable_rate, zoo
from .checkpoints import (
    CheckpointMismatchError,
    CheckpointNotFoundError,
    checkpoint_digest,
    load_checkpoint,
    read_config,
)
from .registry import (
    SINGLE_RATE_MODELS,
    ZOO_FUNCTIONS,
    ModelSettingError,
    _check_profile,
    _check_quality,
    _model_class,
    build_model,
    model_key,
    widths,
)

__all__ = [
    "checkpoint_dir",
    "cpu_checkpoint_digest",
    "cpu_checkpoint_files",
    "cpu_checkpoint_for",
    "cpu_qualities",
    "default_device",
    "get_model",
    "model_from_checkpoint",
    "resolve_device",
    "single_rate_checkpoint_path",
    "variable_rate_checkpoint_path",
]

#: Env var overriding the folder of the "cpu" profile's checkpoints.
CHECKPOINT_DIR_ENV = "NIC_CHECKPOINT_DIR"

#: The file name of a model's "cpu" profile checkpoint in its folder (the N = 96, M = 192
#: generation; the M = 96 files ``vr.pt`` it replaced are in git history before 2026-12-07).
CPU_FILE = "n96.pt"

#: The file name of a model's "cpu" top levels, beside :data:`CPU_FILE`: where it exists it
#: serves the qualities its config's ``qualities`` lists (:func:`cpu_checkpoint_for`).
#: ``mbt2018/n96-top.pt`` is n96 at step 26,500 cut to q6–q8 and trained on with n96's
#: schedule: with transforms of its own it beats n96.pt there (at step 30,000 q6 +0.32 dB,
#: q7 +0.49 dB at equal bpp, q8 +0.70 dB for 8% more bits; README, issue 25).
CPU_TOP_FILE = "n96-top.pt"

#: The stage of ``scripts/train_cpu_profile.py`` that ships each "cpu" checkpoint: the main
#: line for ``mbt2018``, its top levels (``mbt2018-top``: ``mbt2018/n96-top.pt``), the
#: ablation protocol's stage for the others and for the protocol's own joint model and
#: context sizes (notebook 01 loads those by path: ``mbt2018/n96-ablation.pt``,
#: ``mbt2018/n96-ctx3.pt``, ``mbt2018/n96-ctx7.pt``).
CPU_STAGES = {
    "mbt2018": "n96",
    "mbt2018-top": "n96-top",
    "mbt2018-protocol": "ablate-mbt2018",
    **{name: f"ablate-{name}" for name in (
        "mbt2018-mean", "bmshj2018-hyperprior", "bmshj2018-factorized", "mbt2018-context",
        "mbt2018-gmm", "mbt2018-checkerboard", "mbt2018-ctx3", "mbt2018-ctx7")},
}

#: Repository root (this file is nic_lib/models/hub.py).
_REPO_ROOT = Path(__file__).resolve().parents[2]


def checkpoint_dir() -> Path:
    """Folder holding the "cpu" profile's checkpoints.

    Returns:
        ``$NIC_CHECKPOINT_DIR`` when set, else ``checkpoints/`` at the repository root.
    """
    env = os.environ.get(CHECKPOINT_DIR_ENV)
    return Path(env).expanduser() if env else _REPO_ROOT / "checkpoints"


def variable_rate_checkpoint_path(name: str) -> Path:
    """Where the "cpu" profile's variable-rate checkpoint of a model lives.

    One file holds every quality it was trained for (its config's ``qualities``); see
    :mod:`nic_lib.models.variable_rate`.

    Args:
        name: model key.

    Returns:
        ``checkpoint_dir() / name / CPU_FILE``.
    """
    _model_class(name)
    return checkpoint_dir() / name / CPU_FILE


@functools.lru_cache(maxsize=None)
def _file_qualities(path: Path, mtime_ns: int, size: int) -> tuple[int, ...]:
    """A checkpoint file's config ``qualities``, read once per version of the file
    (``mtime_ns``, ``size``: a file shipped again is read again)."""
    return tuple(int(q) for q in read_config(path).get("qualities") or [])


def _held_qualities(path: Path) -> tuple[int, ...]:
    """The rate levels a variable-rate checkpoint file holds (its config's ``qualities``;
    none for a fixed-rate file)."""
    stat = path.stat()
    return _file_qualities(path, stat.st_mtime_ns, stat.st_size)


def cpu_checkpoint_for(name: str, quality: int) -> Path:
    """The file that holds a model at a quality in the "cpu" profile.

    The one rule: ``<name>/n96-top.pt`` (:data:`CPU_TOP_FILE`) when it exists and its
    config's ``qualities`` include ``quality``, else ``<name>/n96.pt``
    (:func:`variable_rate_checkpoint_path`). Without a shipped top file everything comes
    from ``n96.pt``, as before it existed.

    Args:
        name: model key.
        quality: the rate level.

    Returns:
        The path (``n96.pt`` may not exist: :func:`get_model` names the command that
        trains it).

    Raises:
        UnknownModelError: not a registered key.
        CheckpointError: the top file exists but is not a nic-repro checkpoint.
    """
    main = variable_rate_checkpoint_path(name)
    top = main.with_name(CPU_TOP_FILE)
    if top.is_file() and int(quality) in _held_qualities(top):
        return top
    return main


def cpu_checkpoint_files(name: str) -> list[Path]:
    """Every "cpu" profile file of a model: ``n96.pt`` (listed whether it exists or not),
    then ``n96-top.pt`` when it exists.

    Args:
        name: model key.

    Returns:
        The paths, main file first.

    Raises:
        UnknownModelError: not a registered key.
    """
    main = variable_rate_checkpoint_path(name)
    top = main.with_name(CPU_TOP_FILE)
    return [main, top] if top.is_file() else [main]


def cpu_qualities(name: str) -> list[int]:
    """Every quality the "cpu" profile serves for a model: those of its existing files
    (:func:`cpu_checkpoint_files`), in increasing order; empty when none is shipped.

    Raises:
        UnknownModelError: not a registered key.
        CheckpointError: a file is not a nic-repro checkpoint.
    """
    return sorted({q for path in cpu_checkpoint_files(name) if path.is_file()
                   for q in _held_qualities(path)})


def cpu_checkpoint_digest(name: str) -> str:
    """What identifies a model's "cpu" weights, for result caches: with ``n96.pt`` alone its
    :func:`~nic_lib.models.checkpoints.checkpoint_digest` (as before top files existed);
    with a top file, the first 16 hex digits of SHA-256 over each file's name and digest, so
    the key changes when either file (or a sidecar) changes.

    Args:
        name: model key.

    Returns:
        16 hex digits.

    Raises:
        UnknownModelError: not a registered key.
        FileNotFoundError: ``n96.pt`` does not exist.
    """
    files = cpu_checkpoint_files(name)
    if len(files) == 1:
        return checkpoint_digest(files[0])
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{checkpoint_digest(path)}\n".encode())
    return digest.hexdigest()[:16]


def training_command(name: str) -> str:
    """The command that trains (or continues) a "cpu" checkpoint: its stage of
    ``scripts/train_cpu_profile.py`` (:data:`CPU_STAGES`; ``<model>-top`` for a model's
    top file), or for a model the shipped recipe does not train in this folder (ELIC: an
    OOD variant, ``checkpoints/ood/``) the training module itself."""
    stage = CPU_STAGES.get(name)
    if stage is None:
        return f"python -m nic_lib.train --model {name} --profile cpu"
    return f"python scripts/train_cpu_profile.py --only {stage}"


def single_rate_checkpoint_path(name: str) -> Path:
    """The checkpoint a single-rate model's name refers to.

    Args:
        name: ``<key>-<stem>`` (``"pqmim-M4-K256"``).

    Returns:
        ``checkpoint_dir() / key / "<stem>.pt"``.

    Raises:
        UnknownModelError: not a registered key. ModelSettingError: the key of a model with
            quality levels, or a single-rate key without a checkpoint name.
    """
    key = model_key(name)
    if key not in SINGLE_RATE_MODELS:
        raise ModelSettingError(f"{name!r} has quality levels; get_model({name!r}, quality) "
                                "loads it")
    if name == key:
        raise ModelSettingError(
            f"{name!r} is the model, not one of its checkpoints; name one: {key}-<stem of a "
            f"file in {checkpoint_dir() / key}>, e.g. {key}-M4-K256 (a .nic file made with "
            "`nic compress --checkpoint FILE` decodes with `nic decompress --checkpoint FILE`)")
    return checkpoint_dir() / key / f"{name[len(key) + 1:]}.pt"


def model_from_checkpoint(path: str | os.PathLike, quality: int | None = None,
                          device: str | torch.device = "cpu") -> tuple[nn.Module, str, int]:
    """A checkpoint file's model ready to code, its model name and its quality.

    Args:
        path: a checkpoint of :func:`~nic_lib.models.checkpoints.save_checkpoint`.
        quality: the rate level of a variable-rate file (required there); a single-rate
            file's is its config's ``quality`` (1 if none), and ``quality`` must agree.
        device: where to put the model.

    Returns:
        ``(model, name, quality)``: the name is ``<key>-<stem>`` for a single-rate model's
        file in :func:`checkpoint_dir` (``pqmim-M4-K256``: :func:`get_model` finds it again),
        else the registry key.

    Raises:
        CheckpointNotFoundError: the file does not hold that quality.
        CheckpointError, FileNotFoundError: as :func:`load_checkpoint`.
    """
    path = Path(path)
    model, checkpoint = load_checkpoint(path, device=device)
    name, config = checkpoint["model"], checkpoint["config"]
    qualities = list(config.get("qualities") or [])
    if qualities:
        if quality not in qualities:
            raise CheckpointNotFoundError(
                f"{path} holds {name!r} at qualities {qualities}; choose one with --quality")
        return variable_rate.set_rate_level(model, qualities.index(quality)), name, int(quality)
    own = int(config.get("quality") or 1)
    if quality is not None and int(quality) != own:
        raise CheckpointNotFoundError(f"{path} holds {name!r} at quality {own} only, not "
                                      f"{quality}")
    shipped = checkpoint_dir().resolve() / name
    if name in SINGLE_RATE_MODELS and path.resolve().parent == shipped:
        name = f"{name}-{path.stem}"
    return model, name, own


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
        name: model key (see :func:`available_models`), or a single-rate model's checkpoint
            name (``"pqmim-M4-K256"``: ``checkpoints/pqmim/M4-K256.pt``, quality 1).
        quality: 1..8.
        profile: ``"full"``: CompressAI's zoo widths and published MSE weights
            (``compressai.zoo.<fn>(quality, metric="mse", pretrained=True)``).
            ``"cpu"``: this project's variable-rate checkpoint
            ``checkpoints/<name>/n96.pt`` at that quality's level, or its top file
            ``n96-top.pt`` where that is shipped and holds the quality
            (:func:`cpu_checkpoint_for`; folder overridable with ``$NIC_CHECKPOINT_DIR``).
        pretrained: False builds an untrained model with the profile's widths (train
            mode, no coder tables: call ``update(force=True)`` before compressing).
        device: where to put the model.

    Returns:
        The model; in eval mode with coder tables built when ``pretrained``.

    Raises:
        UnknownModelError (a KeyError): unknown model. ModelSettingError (a ValueError):
            bad quality or profile; ``"full"`` with ``pretrained=True`` for an ablation
            that has no published weights.
        PretrainedWeightsUnavailableError: the zoo download failed (offline machine);
            ZooHashMismatchError when the file's digest is not the one its name promises.
        CheckpointNotFoundError: the "cpu" checkpoint has not been trained yet, or does
            not hold this quality.
        CheckpointMismatchError: the checkpoint's weights do not fit the architecture.
    """
    if model_key(name) in SINGLE_RATE_MODELS:
        path = single_rate_checkpoint_path(name)
        if int(quality) != 1 or profile != "cpu" or not pretrained:
            raise ModelSettingError(
                f"{name} is one trained rate point: quality 1, profile 'cpu', pretrained "
                f"(asked: quality {quality}, profile {profile!r}, pretrained={pretrained})")
        if not path.is_file():
            raise CheckpointNotFoundError(
                f"no checkpoint for {name} at {path}; the shipped ones are "
                f"{sorted(p.stem for p in path.parent.glob('*.pt'))} (train one: "
                f"`python -m nic_lib.train_pqmim --export {path}`)")
        model, stored, _ = model_from_checkpoint(path, 1, device)
        if model_key(stored) != model_key(name):
            raise CheckpointMismatchError(f"{path} holds a {stored!r} model, not {name!r}; "
                                          "move it out of that folder")
        return model
    _model_class(name)
    quality = _check_quality(quality)
    profile = _check_profile(profile)
    if not pretrained:
        n, m = widths(name, quality, profile)
        return build_model(name, N=n, M=m).to(device)
    if profile == "full":
        if name not in ZOO_FUNCTIONS:
            raise ModelSettingError(
                f"{name!r} is an ablation without published weights (CompressAI's zoo has "
                f"{', '.join(ZOO_FUNCTIONS)}); use profile='cpu' (this project's "
                f"{variable_rate_checkpoint_path(name)}, trained by "
                "`python scripts/train_cpu_profile.py`), or pretrained=False for an untrained "
                "full-width model"
            )
        # download once into torch.hub's cache, hash checked (nic_lib.models.zoo)
        return zoo.load_zoo_model(name, quality, device=device)

    path = cpu_checkpoint_for(name, quality)
    top = f"{name}-top"
    train = f"`{training_command(top if path.name == CPU_TOP_FILE and top in CPU_STAGES else name)}`"
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"no cpu-profile checkpoint for {name} at {path}; train it with {train} "
            "(it continues a shipped snapshot where there is one), point "
            f"${CHECKPOINT_DIR_ENV} at a folder holding {name}/{CPU_FILE}, or use "
            "profile='full' for CompressAI's published weights")
    model, checkpoint = load_checkpoint(path, device=device)
    qualities = list(checkpoint["config"].get("qualities") or [])
    if checkpoint["model"] != name or quality not in qualities:
        raise CheckpointNotFoundError(
            f"{path} holds {checkpoint['model']!r} at qualities {qualities}, not {name!r} "
            f"quality {quality}; use one of those qualities, or train it with {train}")
    return variable_rate.set_rate_level(model, qualities.index(quality))
