r"""PQ-MIM checkpoints: where they live, and their plain-dict file format.

Checkpoints are not in :mod:`nic_lib.models.registry`: its ``default_config`` fills in
``N``/``M`` from the mbt2018 width tables (``M`` = latent channels there, the number of
sub-quantizers here), so PQ-MIM keeps its own plain-dict format
(:func:`save_pqmim` / :func:`load_pqmim`, read with ``weights_only=True``): ``{"format",
"config" (:meth:`~.model.PQMIM.architecture`), "state_dict", **extra}``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from nic_lib import fileio
from nic_lib.models import hub

from .model import PQMIM
from .radius import read_radius

#: Plain-dict checkpoint format of :func:`save_pqmim`.
CHECKPOINT_FORMAT = "nic-repro/pqmim/2"


def checkpoint_dir() -> Path:
    """``<hub.checkpoint_dir()>/pqmim`` (``$NIC_CHECKPOINT_DIR`` moves the root)."""
    return hub.checkpoint_dir() / "pqmim"


def default_checkpoint_path(M: int, K: int) -> Path:
    """Where the trained model of an (M, K) rate point lives: ``pqmim/M{M}-K{K}.pt``."""
    return checkpoint_dir() / f"M{int(M)}-K{int(K)}.pt"


def is_perceptual_checkpoint(path: str | os.PathLike) -> bool:
    """True for a perceptual variant (stage C of :mod:`nic_lib.train_pqmim`): its checkpoint
    carries a ``"perceptual"`` entry. Same codes and bitstreams as its base model, so it is
    not another rate point."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return isinstance(ckpt, dict) and "perceptual" in ckpt


def find_checkpoints(folder: str | os.PathLike | None = None,
                     perceptual: bool = False) -> list[Path]:
    """Sorted ``*.pt`` files of the PQ-MIM checkpoint folder (empty if none).

    Args:
        folder: default :func:`checkpoint_dir`.
        perceptual: False (default): the base models, one per rate point; True: only the
            perceptual variants (:func:`is_perceptual_checkpoint`).
    """
    folder = Path(folder) if folder is not None else checkpoint_dir()
    paths = sorted(folder.glob("*.pt")) if folder.is_dir() else []
    return [p for p in paths if is_perceptual_checkpoint(p) == perceptual]


#: Tensors kept in float32 by ``save_pqmim(..., half=True)``: the codebooks and their EMA
#: statistics (the codes are nearest-neighbour decisions against them) and the prior counts.
FULL_PRECISION_PREFIXES = ("quantizer.", "prior_counts")


def save_pqmim(model: PQMIM, path: str | os.PathLike, extra: dict[str, Any] | None = None,
               half: bool = False) -> Path:
    """Write ``{"format", "config", "state_dict", **extra}`` atomically.

    Args:
        model: the model.
        path: destination (parents created).
        extra: plain values (str, numbers, lists, dicts, tensors) such as the training
            configuration and step.
        half: store the weight matrices and kernels of g_a, g_s and the MIM transformer
            (floating tensors of 2+ dimensions outside :data:`FULL_PRECISION_PREFIXES`) in
            float16: half the size, as the shipped mbt2018 checkpoints.
            :func:`load_pqmim` casts them back to float32, so the encoder and the decoder
            compute with the same (rounded) weights and their probabilities still agree.

    Returns:
        The path.

    Raises:
        ValueError: ``extra`` overrides a reserved key.
    """
    extra = dict(extra or {})
    clash = sorted(set(extra) & {"format", "config", "state_dict"})
    if clash:
        raise ValueError(f"extra uses reserved keys {clash}; rename them")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if (v.is_floating_point() and v.dim() >= 2
                                 and not k.startswith(FULL_PRECISION_PREFIXES)) else v
                 for k, v in state.items()}
    ckpt = {"format": CHECKPOINT_FORMAT, "config": model.architecture(), "state_dict": state,
            **extra}
    path = Path(path)
    with fileio.atomic_open(path, "wb", suffix=".tmp") as f:
        torch.save(ckpt, f)
    return path


def load_pqmim(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[PQMIM, dict]:
    """Rebuild a model saved by :func:`save_pqmim` (``weights_only=True``, eval mode).

    The entropy model's ``attention_radius`` is the tuned one of :func:`read_radius`.

    Args:
        path: checkpoint file.
        device: where to put the model.

    Returns:
        ``(model, checkpoint)``.

    Raises:
        FileNotFoundError: no file (train one: ``python -m nic_lib.train_pqmim --export
            <path>``).
        ValueError: not a PQ-MIM checkpoint, or a malformed ``.radius.json`` beside it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no PQ-MIM checkpoint at {path}; train one with "
                                f"`python -m nic_lib.train_pqmim --export {path}`")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(ckpt, dict) and ckpt.get("format") == "nic-repro/pqmim/1":
        raise ValueError(f"{path} was written before the MIM model coded one code (not one "
                         "position) per unit (format nic-repro/pqmim/1); its entropy model "
                         "does not fit. Retrain stage B on its autoencoder: python -m "
                         "nic_lib.train_pqmim --resume RUN_FOLDER --restart-b")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a PQ-MIM checkpoint (format {CHECKPOINT_FORMAT!r}); "
                         "write one with nic_lib.models.pqmim.save_pqmim or "
                         "python -m nic_lib.train_pqmim")
    model = PQMIM(**ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    model.entropy_model.attention_radius = read_radius(path)
    return model.to(device).eval(), ckpt
