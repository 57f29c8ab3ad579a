r"""PQ-MIM checkpoints: where they live, which are rate points (in rate order:
:func:`rate_points`) and which perceptual variants.

The files are the project's one checkpoint format
(:func:`nic_lib.models.checkpoints.save_checkpoint` / ``load_checkpoint``, model key
``"pqmim"``): config = :meth:`~.model.PQMIM.architecture` (with the tuned
``attention_radius``) and ``mask_law``, the masking law stage B was trained with; the
shipped files store the weight matrices in float16
(:meth:`~.model.PQMIM.half_precision_keys`). :func:`load_pqmim` is ``load_checkpoint``
that refuses other models.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from nic_lib.models import hub
from nic_lib.models.checkpoints import CheckpointMismatchError, load_checkpoint

from .model import PQMIM


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


def rate_points(folder: str | os.PathLike | None = None) -> dict[int, Path]:
    """PQ-MIM's rate points as a quality axis over files: quality q is the q-th base
    checkpoint (:func:`find_checkpoints`), lowest rate first.

    The order is that of the fixed-length rate M·log2 K bits per token (the codes a file
    sends; the MIM rate follows it), from each file's config; ties by file name. So the
    shipped ``M2-K256``, ``M4-K256``, ``M8-K256`` are qualities 1, 2, 3, and a file added
    later renumbers the qualities above it: results keyed by quality must also key the
    models (:func:`nic_lib.models.identity.model_id`, as the sweeps and the OOD grid do).

    Args:
        folder: default :func:`checkpoint_dir`.

    Returns:
        ``{quality: path}``, qualities 1..n (empty when the folder holds none).
    """
    def rate(path: Path) -> tuple[float, str]:
        config = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["config"]
        # fixed-length bits per token = M · log2 K
        return int(config["M"]) * math.log2(int(config["K"])), path.name

    paths = sorted(find_checkpoints(folder), key=rate)
    return {q: path for q, path in enumerate(paths, start=1)}


def load_pqmim(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[PQMIM, dict]:
    """:func:`~nic_lib.models.checkpoints.load_checkpoint`, refusing any model but PQ-MIM.

    The file is the project's one checkpoint format; its config holds the architecture, the
    tuned ``attention_radius`` and the ``mask_law`` stage B was trained with.

    Args:
        path: checkpoint file.
        device: where to put the model.

    Returns:
        ``(model, checkpoint)``, the model in eval mode.

    Raises:
        FileNotFoundError: no file (train one: ``python -m nic_lib.train_pqmim --export
            <path>``).
        CheckpointError: not a nic-repro checkpoint; CheckpointMismatchError: one of
            another model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no PQ-MIM checkpoint at {path}; train one with "
                                f"`python -m nic_lib.train_pqmim --export {path}`")
    model, ckpt = load_checkpoint(path, device)
    if not isinstance(model, PQMIM):
        raise CheckpointMismatchError(f"{path} holds a {ckpt['model']!r} model, not PQ-MIM; "
                                      "load it with nic_lib.models.load_checkpoint")
    return model, ckpt
