"""Snapshots: an unfinished PQ-MIM run exported as a checkpoint that a fresh machine continues.

A run folder (``ckpt.pt``, with its optimizer state) lives outside the repository and is
gone on a fresh machine; a snapshot is what can be committed instead. It is a checkpoint
in the project's one format (:func:`nic_lib.models.save_checkpoint`, readable with
:func:`nic_lib.models.pqmim.load_pqmim`) with three more entries::

    train_config  the run's PQMIMTrainConfig (plain values)
    elapsed_s     training seconds per stage so far
    snapshot      {"stage": "a" | "b", "step": k, "of": run folder}   (SNAPSHOT_KEY)

and its records beside it (:func:`snapshot_records`): ``<stem>.log_a.csv`` (the rows up
to step k of stage A), ``<stem>.log_b.csv`` (stage B's, when the run is there) and
``<stem>.config.json``.

How a snapshot continues (:func:`load_snapshot` checks it and loads it):

- stage ``"a"`` at step k: ``python -m nic_lib.train_pqmim <the run's flags> --init-from
  SNAPSHOT --start-step k``. The autoencoder and the quantizer's codebooks and EMA
  statistics are the snapshot's; the MIM model, not trained yet, is the seeded
  initialisation every run of that seed starts stage B with; crops and the quantizer's
  random draws are functions of (seed, step) and continue from k; the optimizer state is
  not in the snapshot, so Adam starts afresh and the rate ramps up again::

      lr_t = lr_A(max(t, T_w)) · (t − k + 1) / T_w      for k ≤ t < k + T_w

  (:func:`~nic_lib.training.schedule.warmup_cosine`), then the schedule's own rate. Its
  training seconds (``--max-minutes-a``) count from 0 again; ``config.json`` records the
  snapshot's (``resolved.continued_from``).
- stage ``"b"`` (stage A finished): ``--resume SNAPSHOT --restart-b --out-dir NEW_FOLDER``
  trains stage B from step 0 on the snapshot's autoencoder (stage B's optimizer state and
  its step are not kept).

The continued run's ``log_a.csv`` starts with the snapshot's rows up to k, so its records
cover the whole stage.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import torch

from nic_lib import fileio
from nic_lib.models import pqmim, save_checkpoint

from .config import (ADDED_SETTINGS, RUNTIME_KEYS, STAGE_B_KEYS, TRAIN_STATE_FORMAT,
                     PQMIMTrainConfig, exported_config)

#: The checkpoint entry that makes a checkpoint a snapshot of an unfinished run.
SNAPSHOT_KEY = "snapshot"
#: The run's files a snapshot carries beside it, as ``<stem>.<name>``.
SNAPSHOT_RECORDS = ("config.json", "log_a.csv", "log_b.csv")
#: Settings a continued run may set apart from the snapshot's: those ``--resume`` may
#: change, stage B's (it has not started), and the continuation's own. Any other
#: difference (architecture, data, crops, seed, stage A's rate, its precision) would not
#: continue the snapshot's run and is refused.
CONTINUED_KEYS = RUNTIME_KEYS + STAGE_B_KEYS + ("out_dir", "init_from", "start_step")
#: Tensors a stage-A snapshot does not hand on: the MIM model and its prior counts are not
#: trained before stage B; the seeded initialisation stands for them.
NOT_CONTINUED_PREFIXES = ("entropy_model.", "prior_counts")


def snapshot_records(snapshot: str | os.PathLike, name: str) -> Path:
    """Where a snapshot's record ``name`` (``log_a.csv``, ...) lies: ``<stem>.<name>`` beside it."""
    snapshot = Path(snapshot)
    return snapshot.with_name(f"{snapshot.stem}.{name}")


def export_snapshot(run: str | os.PathLike, dest: str | os.PathLike,
                    dtype: torch.dtype = torch.float32) -> Path:
    """Export an unfinished run's latest ``ckpt.pt`` as a snapshot, with its records.

    The weights are those the run's final export would start from: PQ-MIM keeps no
    averaged copy of its weights (its codebooks are EMA statistics, part of the state).
    Written atomically; the log rows after the checkpoint's step (logged before the run
    stopped, to be logged again) are left out.

    Args:
        run: the run folder, or its ``ckpt.pt``.
        dest: the snapshot file (``checkpoints/pqmim/snapshots/M4-K256.pt``); its records
            go beside it (:func:`snapshot_records`).
        dtype: storage of the weight matrices (:func:`nic_lib.models.save_checkpoint`):
            float32 continues exactly; float16 halves the file (the codebooks and their
            EMA statistics stay float32).

    Returns:
        ``dest``.

    Raises:
        FileNotFoundError: no ``ckpt.pt``. ValueError: not a PQ-MIM run, or a finished one
            (its ``final.pt`` is the model to ship).
    """
    run = Path(run).expanduser()
    file = run / "ckpt.pt" if run.is_dir() else run
    if not file.is_file():
        raise FileNotFoundError(f"no ckpt.pt at {file}: pass the folder of a PQ-MIM run "
                                "(python -m nic_lib.train_pqmim writes ckpt.pt every "
                                "--ckpt-every steps)")
    state = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != TRAIN_STATE_FORMAT:
        raise ValueError(f"{file} is not a PQ-MIM training state ({TRAIN_STATE_FORMAT!r})")
    if state["stage"] == "done":
        raise ValueError(f"the run {file.parent} is finished: ship its final.pt "
                         "(--export), not a snapshot")
    config = state["config"]
    model = pqmim.PQMIM(*(config[k] for k in ("N", "latent_dim", "M", "K", "width",
                                              "layers", "heads")))
    model.load_state_dict(state["model"])
    meta = {"stage": state["stage"], "step": int(state["step"]), "of": str(file.parent)}
    dest = save_checkpoint(model.eval(), dest, {"mask_law": config["mask_law"]},
                           extra={"train_config": exported_config(PQMIMTrainConfig(**config)),
                                  "elapsed_s": dict(state["elapsed_s"]), SNAPSHOT_KEY: meta},
                           dtype=dtype)
    for name in SNAPSHOT_RECORDS:
        source = file.parent / name
        if not source.is_file():
            continue
        text = source.read_text()
        if name == f"log_{meta['stage']}.csv":  # the stage in progress: rows up to its step
            text = _rows_until(text, meta["step"])
        fileio.atomic_write_text(snapshot_records(dest, name), text)
    return dest


def _rows_until(text: str, step: int) -> str:
    """A CSV log's text with only the rows whose ``step`` is at most ``step``."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return text
    at = rows[0].index("step")
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(
        [rows[0], *(r for r in rows[1:] if r and int(r[at]) <= step)])
    return out.getvalue()


def load_snapshot(cfg: PQMIMTrainConfig, model: pqmim.PQMIM) -> dict:
    """Check that ``cfg.init_from`` continues at ``cfg.start_step`` and load it into ``model``.

    Loads the autoencoder, the quantizer's codebooks and their EMA statistics; the MIM model
    and the prior counts keep ``model``'s seeded initialisation
    (:data:`NOT_CONTINUED_PREFIXES`).

    Args:
        cfg: the new run's configuration (``init_from``, ``start_step`` set).
        model: the new run's model, built from ``cfg`` with the run's seed.

    Returns:
        What to record in ``config.json``: the snapshot's file, step, run and training
        seconds.

    Raises:
        ValueError: no such file; not a snapshot of an unfinished stage A (a finished model
            or a stage-B snapshot: restart stage B instead); another step than the
            snapshot's; another architecture or another setting of stage A than the
            snapshot's. CheckpointMismatchError: a checkpoint of another model.
    """
    path = Path(cfg.init_from).expanduser()
    if not path.is_file():
        raise ValueError(f"--init-from {path}: no such file; pass a snapshot written by "
                         "export_snapshot (python scripts/train_pqmim_cpu.py --ship-only "
                         "writes checkpoints/pqmim/snapshots/<name>.pt)")
    source, ckpt = pqmim.load_pqmim(path)
    meta = ckpt.get(SNAPSHOT_KEY)
    restart_b = (f"start stage B from it with: python -m nic_lib.train_pqmim --resume {path} "
                 "--restart-b --out-dir NEW_FOLDER")
    if meta is None or "train_config" not in ckpt:
        raise ValueError(f"{path} is not a snapshot of an unfinished run (no "
                         f"{SNAPSHOT_KEY!r} entry; export_snapshot writes one); if it is a "
                         f"finished model, {restart_b}")
    if meta["stage"] != "a":
        raise ValueError(f"{path} is a snapshot of stage B (stage A finished); {restart_b}")
    if cfg.start_step != meta["step"]:
        raise ValueError(f"--start-step {cfg.start_step}: {path} is the state at step "
                         f"{meta['step']} of stage A; pass --start-step {meta['step']}")
    # a snapshot saved before a setting existed ran with the setting's ADDED_SETTINGS value
    saved = {**ADDED_SETTINGS, **ckpt["train_config"]}
    mine = exported_config(cfg)
    differ = [k for k in mine if k in saved and k not in CONTINUED_KEYS and mine[k] != saved[k]]
    if differ:
        flags = " ".join(f"--{k.replace('_', '-')} {_flag_value(saved[k])}" for k in differ)
        raise ValueError(f"--init-from {path}: the snapshot's run had "
                         f"{', '.join(f'{k}={saved[k]!r}' for k in differ)}, this run "
                         f"{', '.join(f'{k}={mine[k]!r}' for k in differ)}; the schedule it "
                         f"continues is the snapshot's: pass {flags}")
    kept = {k: v for k, v in source.state_dict().items()
            if not k.startswith(NOT_CONTINUED_PREFIXES)}
    missing, unexpected = model.load_state_dict(kept, strict=False)
    assert not unexpected and all(k.startswith(NOT_CONTINUED_PREFIXES) for k in missing), (
        missing, unexpected)
    return {"init_from": str(path), "start_step": meta["step"], "snapshot_of": meta["of"],
            "snapshot_elapsed_s": dict(ckpt.get("elapsed_s") or {})}


def _flag_value(value) -> str:
    """A setting as its command-line flag takes it (``--data a b``)."""
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def start_log_a(init_from: str | os.PathLike, run_dir: Path, step: int) -> int:
    """Begin a continued run's ``log_a.csv`` with its snapshot's rows up to ``step``.

    Args:
        init_from: the snapshot (its rows: :func:`snapshot_records` ``log_a.csv``).
        run_dir: the new run folder.
        step: the snapshot's step.

    Returns:
        The number of rows taken (0 when the snapshot has no log beside it).
    """
    source = snapshot_records(init_from, "log_a.csv")
    if not source.is_file():
        return 0
    text = _rows_until(source.read_text(), step)
    fileio.atomic_write_text(run_dir / "log_a.csv", text)
    return max(0, len(text.strip().splitlines()) - 1)
