"""A run's files: ``ckpt.pt`` (resumable state), ``final.pt`` (the model), CSV logs, export.

A run folder (default ``runs/<model>-q<quality>-<timestamp>/`` beside the repository;
``runs/`` is git-ignored, ``$NIC_RUNS_DIR`` moves it) receives, each file written
atomically (:mod:`nic_lib.fileio`) or line by line: ``config.json``, ``log.csv``
(:data:`LOG_COLUMNS`), ``eval.csv`` (:data:`EVAL_COLUMNS`), ``ckpt.pt`` (format
:data:`TRAIN_STATE_FORMAT`) and ``final.pt`` (the registry's checkpoint format,
:func:`save_final`). :func:`snapshot_final` exports a running run, :func:`ship_run` a
finished one.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import os
import random
from pathlib import Path

import numpy as np
import torch

from nic_lib import data, fileio
from nic_lib.models import checkpoints

from .config import TrainConfig, build_model, model_config
from .loss import SampleKeyedNoise

#: Version tag of ckpt.pt, checked on --resume.
TRAIN_STATE_FORMAT = "nic-repro/train-state/1"
LOG_COLUMNS = ("step", "wall_s", "lr", "loss", "mse", "psnr", "bpp", "aux_loss", "images_per_s")
EVAL_COLUMNS = ("step", "wall_s", "quality", "lmbda", "images", "loss", "mse", "psnr", "bpp",
                "weights")


class CsvLog:
    """A CSV file written row by row and flushed after each row (readable while training)."""

    def __init__(self, path: Path, columns: tuple[str, ...], keep_until_step: int | None = None):
        """Args:
            path: the CSV file.
            columns: header.
            keep_until_step: on resume, rows with a larger ``step`` are dropped first
                (they were logged after the checkpoint and will be logged again).
        """
        self.columns = columns
        if keep_until_step is not None and path.is_file():
            with open(path, newline="") as f:
                kept = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_until_step]
            # a file from an older version may lack a column: left empty
            lines = [",".join(columns)] + [",".join(r.get(c) or "" for c in columns)
                                           for r in kept]
            fileio.atomic_write_text(path, "\n".join(lines) + "\n")
        new = not path.is_file()
        self._file = open(path, "a", newline="")
        self._writer = csv.writer(self._file)
        if new:
            self._writer.writerow(columns)
            self._file.flush()

    def write(self, row: dict) -> None:
        """Append one row (floats with 7 significant digits) and flush."""
        self._writer.writerow([f"{row[c]:.7g}" if isinstance(row[c], float) else row[c]
                               for c in self.columns])
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def default_runs_dir() -> Path:
    """``$NIC_RUNS_DIR``, else ``runs/`` at the repository root (git-ignored)."""
    return Path(os.environ.get("NIC_RUNS_DIR") or data.REPO_ROOT / "runs").expanduser()


def rng_state() -> dict:
    """The random generators' states of this process (Python, NumPy, torch, CUDA)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_train_state(path: str | os.PathLike) -> tuple[dict, Path]:
    """Read a run's training checkpoint (``ckpt.pt``), checking its format.

    Args:
        path: a run folder holding ``ckpt.pt``, or the file itself.

    Returns:
        ``(state, run folder)``: the dict :func:`nic_lib.training.loop.train` saved.

    Raises:
        FileNotFoundError: no checkpoint there. ValueError: not a training checkpoint
            (a ``final.pt``, say).
    """
    path = Path(path).expanduser()
    file = path / "ckpt.pt" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"--resume {path}: no checkpoint at {file}; pass a run folder "
                                "holding ckpt.pt (runs/<name>/) or the ckpt.pt file itself")
    state = torch.load(file, map_location="cpu", weights_only=False)  # our own file
    if state.get("format") != TRAIN_STATE_FORMAT:
        raise ValueError(f"{file} is not a training checkpoint of nic_lib.train "
                         f"(format {state.get('format')!r}); final.pt cannot be resumed, "
                         "ckpt.pt can")
    return state, file.parent



def save_final(model: torch.nn.Module, path: Path, cfg: TrainConfig, extra: dict) -> None:
    """Save the trained model in the registry's self-describing format, atomically.

    ``nic_lib.models.load_checkpoint(path)`` rebuilds it; ``config["train_config"]`` holds
    the whole run configuration.

    Args:
        model: the model to save (the EMA copy when EMA is on); a copy gets its entropy
            coder tables built (``update(force=True)``) before saving.
        path: destination file.
        cfg: the run configuration.
        extra: more plain values to store at the top level (step, resolved settings).
    """
    model = copy.deepcopy(model).cpu().to(memory_format=torch.contiguous_format)
    SampleKeyedNoise.remove(model)
    model.update(force=True)
    config = {**model_config(cfg), "train_config": dataclasses.asdict(cfg)}
    checkpoints.save_checkpoint(model, path, config, extra=extra)


#: A run's records that ship beside its checkpoint (as ``<stem>.<name>``).
RUN_RECORDS = ("config.json", "log.csv", "eval.csv")


def copy_run_records(run_dir: Path, dest_dir: Path, stem: str) -> None:
    """Copy a run's :data:`RUN_RECORDS` that exist to ``dest_dir/<stem>.<name>``."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    for name in RUN_RECORDS:
        if (Path(run_dir) / name).is_file():
            fileio.atomic_write_bytes(dest_dir / f"{stem}.{name}",
                                      (Path(run_dir) / name).read_bytes())


def snapshot_final(run_dir: Path, dest: Path) -> Path:
    """Write what ``final.pt`` would hold if the run stopped now, from its ``ckpt.pt``.

    A long run that spans sessions is exported at the end of each one: the EMA weights of
    the last checkpoint (the trained weights when EMA is off), coder tables built, in the
    registry format, so :func:`ship_run`'s float16 export and ``--init-from`` take it. The
    run itself is untouched and resumes as before.

    Args:
        run_dir: a run folder holding ``ckpt.pt``.
        dest: the file to write (atomically); refuses the run's own ``final.pt``.

    Returns:
        ``dest``.

    Raises:
        FileNotFoundError / ValueError: no training checkpoint in ``run_dir``.
    """
    state, run_dir = load_train_state(run_dir)
    if Path(dest).resolve() == (run_dir / "final.pt").resolve():
        raise ValueError(f"{dest} is the run's own final.pt, written when it finishes; "
                         "snapshot to another path")
    cfg = TrainConfig(**state["config"])
    model = build_model(cfg)
    weights = state["model"]
    if state.get("ema"):  # AveragedModel: 'module.'-prefixed copy + n_averaged
        weights = {k[len("module."):]: v for k, v in state["ema"].items()
                   if k.startswith("module.")}
    SampleKeyedNoise.remove(model)
    model.load_state_dict(weights)
    save_final(model.eval(), Path(dest), cfg,
               {"step": int(state["step"]), "train_info": state.get("resolved"),
                "snapshot_of": str(run_dir)})
    return Path(dest)


def ship_run(run_dir: Path, dest: Path, lineage: list[str], base: Path | None = None,
             dtype: torch.dtype = torch.float16, keep_float16: tuple[str, ...] = ()) -> Path:
    """Ship a finished run as a cpu-profile checkpoint: its ``final.pt`` at ``dest`` with
    float16 convolutions, the run's records beside it (:func:`copy_run_records`).

    Args:
        run_dir: the run folder.
        dest: the checkpoint to write (e.g. ``checkpoints/mbt2018/n96.pt``).
        lineage: the runs or checkpoints it descends from, stored as ``lineage``.
        base: a shipped checkpoint whose tensors this one shares (an ablation's frozen
            transforms): those are not stored again (``save_checkpoint(base=...)``).
        dtype: storage of the convolutions (``torch.int8`` for an ablation's entropy model).
        keep_float16: modules whose kernels stay float16 under int8 (the frozen transforms
            of the file the other ablations use as their base).

    Returns:
        ``dest``.

    Raises:
        FileNotFoundError: the run has no final.pt (it has not finished).
    """
    final = Path(run_dir) / "final.pt"
    if not final.is_file():
        raise FileNotFoundError(f"no {final}: the run has not finished; train it first")
    model, ckpt = checkpoints.load_checkpoint(final)
    extra = {k: v for k, v in ckpt.items() if k not in checkpoints._RESERVED_KEYS}
    extra["lineage"] = list(lineage)
    checkpoints.save_checkpoint(model, dest, ckpt["config"], extra=extra, dtype=dtype, base=base,
                                keep_float16=keep_float16)
    copy_run_records(run_dir, Path(dest).parent, Path(dest).stem)
    return Path(dest)

