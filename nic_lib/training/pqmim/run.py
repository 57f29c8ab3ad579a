"""A PQ-MIM run: stage A then stage B in one folder, ``ckpt.pt``, resume, ``--restart-b``, export.

:func:`train` builds the model and both optimizers, restores a saved state, runs
:func:`~nic_lib.training.pqmim.stage_a.run_stage_a` and then
:func:`~nic_lib.training.pqmim.stage_b.run_stage_b`, and writes ``final.pt``
(:func:`nic_lib.models.save_checkpoint`, the project's one format; config: the
architecture and ``mask_law``). The run folder receives ``config.json``,
``log_a.csv``, ``log_b.csv``, ``ckpt.pt`` (format :data:`TRAIN_STATE_FORMAT`: model,
optimizers, stage, step; plain values, readable with ``weights_only=True``) and
``final.pt``; every file is written atomically (:mod:`nic_lib.fileio`) or row by row.

``ckpt.pt`` holds no RNG state: crops, restarts and masks are functions of (seed, step),
and the weights are initialised from ``torch.manual_seed(seed)`` before anything else
draws, so a resumed run is identical to an uninterrupted one.

A new run with ``init_from``/``start_step`` continues stage A from a snapshot
(:mod:`.snapshot`: the run folder is gone, the optimizer state with it) at its step.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from nic_lib import fileio
from nic_lib.models import pqmim, save_checkpoint
from nic_lib.models.checkpoints import CHECKPOINT_FORMAT

from ..data import CropSampler, load_pool, training_files
from ..precision import for_this_machine
from ..runs import default_runs_dir
from .config import (RUNTIME_KEYS, STAGE_B_KEYS, TRAIN_STATE_FORMAT, PQMIMTrainConfig,
                     check_config, exported_config, resumed_config)
from .snapshot import SNAPSHOT_KEY, load_snapshot, start_log_a
from .stage_a import run_stage_a
from .stage_b import CodeMapSampler, run_stage_b


def train(cfg: PQMIMTrainConfig, resume: str | Path | None = None,
          overrides: dict | None = None, restart_b: bool = False) -> Path:
    """Train (or resume) a PQ-MIM run; returns its run folder.

    Args:
        cfg: the configuration (ignored when resuming, except ``overrides``).
        resume: run folder or ckpt.pt to continue.
        overrides: with ``resume``, new values for :data:`RUNTIME_KEYS` (and, with
            ``restart_b``, :data:`STAGE_B_KEYS`).
        restart_b: with ``resume`` of a run past stage A: keep its autoencoder and
            codebooks, and train stage B again from step 0 with a fresh MIM model, optimizer
            and prior counts (the old ``log_b.csv`` is kept as ``log_b.before-restart.csv``).
            ``resume`` may also be an exported checkpoint (``final.pt``, an ``--export``
            copy); then ``overrides["out_dir"]`` names the new run folder.

    Returns:
        The run folder (``final.pt`` inside).

    Raises:
        ValueError: bad settings (crop not a multiple of 16, latent_dim not divisible by M,
            an override that would change the maths of a resumed run, a ``cfg.init_from``
            that does not continue at ``cfg.start_step``: :func:`.snapshot.load_snapshot`).
    """
    threads = torch.get_num_threads()
    if restart_b and resume is None:
        raise ValueError("restart_b (--restart-b) restarts stage B of an existing run: "
                         "pass its folder with --resume")
    try:
        return _train(cfg, resume, overrides, restart_b)
    finally:
        torch.set_num_threads(threads)


def load_state(path: str | Path, restart_b: bool = False) -> tuple[dict, Path | None]:
    """Read the training state that ``--resume`` names.

    Args:
        path: a run folder holding ``ckpt.pt``, or that file; with ``restart_b`` also an
            exported checkpoint (``final.pt`` or an ``--export`` copy).
        restart_b: whether stage B restarts (an exported checkpoint is then accepted).

    Returns:
        ``(state, run folder)``; the folder is ``None`` for an exported checkpoint (the new
        stage B needs ``--out-dir``).

    Raises:
        FileNotFoundError: no checkpoint there. ValueError: not a PQ-MIM training checkpoint.
    """
    path = Path(path).expanduser()
    file = path / "ckpt.pt" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"--resume {path}: no checkpoint at {file}; pass a run folder "
                                "holding ckpt.pt (runs/pqmim-.../) or the file itself")
    state = torch.load(file, map_location="cpu", weights_only=True)
    if restart_b and isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
        return _state_from_export(file), None
    if not isinstance(state, dict) or state.get("format") != TRAIN_STATE_FORMAT:
        raise ValueError(f"{file} is not a PQ-MIM training checkpoint (format "
                         f"{TRAIN_STATE_FORMAT!r}); final.pt cannot be resumed, ckpt.pt can "
                         "(final.pt can start a new stage B: add --restart-b --out-dir NEW_FOLDER)")
    return state, file.parent


def _state_from_export(file: Path) -> dict:
    """A finished run's state rebuilt from its exported checkpoint, for ``--restart-b``.

    The weights are those the exported model computes with
    (:func:`~nic_lib.models.pqmim.load_pqmim`: float16 matrices of the shipped files in
    float32), so the new stage B learns the codes that the exported model computes. Stage
    A's optimizer state is not exported; a restarted stage B never uses it. The masking law
    is the file's (its config states it).

    Raises:
        ValueError: a perceptual variant (its stage B is its base's), a checkpoint
            without the ``train_config`` that ``python -m nic_lib.train_pqmim`` exports,
            or a snapshot of a run still in stage A.
    """
    model, ckpt = pqmim.load_pqmim(file)
    snapshot = ckpt.get(SNAPSHOT_KEY)
    if snapshot is not None and snapshot["stage"] == "a":
        raise ValueError(f"{file} is a snapshot of stage A at step {snapshot['step']}: its "
                         "autoencoder is not finished; continue stage A with the run's "
                         f"flags and --init-from {file} --start-step {snapshot['step']}")
    if "perceptual" in ckpt:
        raise ValueError(f"{file} is a perceptual variant; restart stage B of its base "
                         "checkpoint (the variant shares it), then rerun stage C")
    if "train_config" not in ckpt:
        raise ValueError(f"{file} has no train_config (not exported by python -m "
                         "nic_lib.train_pqmim); its stage B cannot be restarted")
    elapsed = dict(ckpt.get("elapsed_s") or {"a": 0.0, "b": 0.0})
    config = {**ckpt["train_config"], "mask_law": ckpt["config"]["mask_law"]}
    return {"format": TRAIN_STATE_FORMAT, "config": config,
            "stage": "done", "step": int(config["steps_b"]),
            "elapsed_s": elapsed, "model": model.state_dict(), "opt_a": None, "opt_b": None,
            "source": str(file)}


def _resolve(cfg: PQMIMTrainConfig, resume, overrides: dict | None, restart_b: bool
             ) -> tuple[PQMIMTrainConfig, dict | None, Path | None]:
    """``(configuration, saved state, run folder)``; state and folder are ``None`` for a new run.

    Raises:
        ValueError: an override that is not allowed, a ``--restart-b`` of an exported
            checkpoint without a new, empty ``--out-dir`` (or exporting onto its source),
            or a ``--restart-b`` of a run still in stage A.
    """
    if resume is None:
        return cfg, None, None
    state, run_dir = load_state(resume, restart_b)
    keys = RUNTIME_KEYS + STAGE_B_KEYS if restart_b else RUNTIME_KEYS
    if run_dir is None:  # stage B of an exported checkpoint: into a new run folder
        out = (overrides or {}).get("out_dir")
        if not out:
            raise ValueError(f"--restart-b from the exported checkpoint {resume} writes a "
                             "new run: pass --out-dir NEW_FOLDER")
        if (Path(out) / "ckpt.pt").exists():
            raise ValueError(f"{out} already holds a run (ckpt.pt); resume it with "
                             f"--resume {out}, or pass another --out-dir")
        # the export path of the run that wrote the file is not inherited: it is often
        # the file itself (python scripts/train_pqmim_cpu.py exports into checkpoints/)
        overrides = {**(overrides or {}), "export": (overrides or {}).get("export")}
        export = overrides["export"]
        if export and Path(export).resolve() == Path(resume).resolve():
            raise ValueError(f"--export {export} would overwrite the checkpoint the run "
                             "starts from; export elsewhere, then replace it yourself")
        keys = keys + ("out_dir",)
        run_dir = Path(out)
    cfg = resumed_config(PQMIMTrainConfig, state["config"], keys, overrides)
    if restart_b and state["stage"] == "a":
        raise ValueError(f"{run_dir} is still in stage A; resume it without --restart-b")
    return cfg, state, run_dir


def _restore(state: dict, model: pqmim.PQMIM, opt_a, opt_b, run_dir: Path,
             restart_b: bool) -> tuple[str, int, dict]:
    """Load a saved state into the model and optimizers; returns ``(stage, step, elapsed)``."""
    if not restart_b:
        model.load_state_dict(state["model"])
        opt_a.load_state_dict(state["opt_a"])
        opt_b.load_state_dict(state["opt_b"])
        return state["stage"], state["step"], dict(state["elapsed_s"])
    # keep g_a, g_s and the codebooks; the MIM model and its statistics start afresh
    kept = {k: v for k, v in state["model"].items()
            if not k.startswith(("entropy_model.", "prior_counts"))}
    missing, unexpected = model.load_state_dict(kept, strict=False)
    assert not unexpected and all(k.startswith(("entropy_model.", "prior_counts"))
                                  for k in missing), (missing, unexpected)
    if state["opt_a"] is not None:
        opt_a.load_state_dict(state["opt_a"])
    old_log = run_dir / "log_b.csv"
    if old_log.exists():
        old_log.replace(run_dir / "log_b.before-restart.csv")
    return "b", 0, {"a": state["elapsed_s"]["a"], "b": 0.0}


def _precision_computed(cfg: PQMIMTrainConfig, stage: str, run_dir: Path) -> str | None:
    """What stage A's training forward computes in: ``cfg.precision`` on this machine
    (:func:`~nic_lib.training.precision.for_this_machine`: bf16 only where native) when
    stage A trains in this process; else what the run's ``config.json`` recorded when it
    did (``None`` if it did not record it)."""
    if stage == "a":
        return for_this_machine(cfg.precision)
    try:
        return json.loads((run_dir / "config.json").read_text())["resolved"]["precision_computed"]
    except (OSError, ValueError, KeyError):
        return None


def _train(cfg: PQMIMTrainConfig, resume, overrides, restart_b: bool = False) -> Path:
    cfg, state, run_dir = _resolve(cfg, resume, overrides, restart_b)
    check_config(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    torch.manual_seed(cfg.seed)  # weight initialisation
    model = pqmim.PQMIM(cfg.N, cfg.latent_dim, cfg.M, cfg.K, cfg.width, cfg.layers, cfg.heads)
    ae_params = [p for n, p in model.named_parameters() if not n.startswith("entropy_model.")]
    opt_a = torch.optim.Adam(ae_params, lr=cfg.lr_a)
    opt_b = torch.optim.AdamW(model.entropy_model.parameters(), lr=cfg.lr_b,
                              weight_decay=cfg.weight_decay_b)
    stage, step, elapsed = "a", 0, {"a": 0.0, "b": 0.0}
    if state is not None:
        stage, step, elapsed = _restore(state, model, opt_a, opt_b, run_dir, restart_b)
    continued = None  # a new run continuing stage A from a snapshot: before the data loads
    if state is None and cfg.init_from is not None:
        continued = load_snapshot(cfg, model)
        step = cfg.start_step

    pool = load_pool(training_files(cfg.data))
    sampler = CropSampler(pool, cfg.crop, cfg.batch_size, cfg.seed)

    if run_dir is None:
        run_dir = Path(cfg.out_dir) if cfg.out_dir else (
            default_runs_dir() / f"pqmim-M{cfg.M}-K{cfg.K}-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.mkdir(parents=True, exist_ok=True)
    if continued is not None:
        if (run_dir / "ckpt.pt").exists():
            raise ValueError(f"{run_dir} already holds a run (ckpt.pt): resume it with "
                             f"--resume {run_dir}, or pass another --out-dir")
        continued["log_a_rows_kept"] = start_log_a(cfg.init_from, run_dir, step)
    info = {"train_images": len(pool.names), "parameters_autoencoder": sum(
        p.numel() for p in ae_params), "parameters_mim": sum(
        p.numel() for p in model.entropy_model.parameters()), "torch": str(torch.__version__),
        "precision_computed": _precision_computed(cfg, stage, run_dir)}
    if state is not None and "source" in state:
        info["stage_b_restarted_from"] = state["source"]
    if continued is not None:
        info["continued_from"] = continued

    def write_config() -> None:  # again when stage B adds what it resolved
        fileio.atomic_write_text(run_dir / "config.json", json.dumps(
            {"config": dataclasses.asdict(cfg), "resolved": info}, indent=1))

    def save_state(stage_now: str, step_now: int) -> None:
        snapshot = {"format": TRAIN_STATE_FORMAT, "config": dataclasses.asdict(cfg),
                    "stage": stage_now, "step": step_now, "elapsed_s": dict(elapsed),
                    "model": model.state_dict(), "opt_a": opt_a.state_dict(),
                    "opt_b": opt_b.state_dict()}
        with fileio.atomic_path(run_dir / "ckpt.pt") as tmp:
            torch.save(snapshot, tmp)

    write_config()
    progress = {"stage": stage, "step": step}  # where a Ctrl-C would save
    try:
        if stage == "a":
            step = run_stage_a(model, opt_a, ae_params, sampler, cfg, run_dir, step, elapsed,
                               save_state, progress,
                               resumed=state is not None or continued is not None,
                               precision=info["precision_computed"])
            stage, step = "b", 0
            save_state(stage, step)
        if stage in ("b", "done"):  # "done": a resume with more --steps-b continues stage B
            resumed_b = state is not None and state["stage"] != "a" and not restart_b
            sampler_b = None
            if step < cfg.steps_b:
                sampler_b = CodeMapSampler(model.eval(), pool, cfg.crop_b or cfg.crop,
                                           cfg.batch_size_b or cfg.batch_size, cfg.seed)
                info["stage_b_images"] = len(sampler_b.maps)
                write_config()
            step = run_stage_b(model, opt_b, sampler_b, cfg, run_dir, step, elapsed, save_state,
                               progress, resumed=resumed_b)
            stage = "done"
            save_state(stage, step)
    except KeyboardInterrupt:
        save_state(progress["stage"], progress["step"])
        print(f"\ninterrupted in stage {progress['stage']} at step {progress['step']}; "
              f"resume with: python -m nic_lib.train_pqmim --resume {run_dir}")
        raise

    final = run_dir / "final.pt"
    save_checkpoint(model.eval(), final, {"mask_law": cfg.mask_law},
                    extra={"train_config": exported_config(cfg), "train_info": info,
                           "elapsed_s": dict(elapsed)})
    if cfg.export:
        export_copy(final, cfg.export)
    return run_dir


def export_copy(final: Path, dest: str | Path) -> None:
    """Copy a run's final checkpoint to ``dest`` (``--export``), atomically."""
    fileio.atomic_write_bytes(dest, Path(final).read_bytes())
