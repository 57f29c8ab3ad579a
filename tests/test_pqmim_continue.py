"""Stage A of PQ-MIM continued across machines: a run stopped at step k, exported as a
snapshot (nic_lib.training.pqmim.snapshot), continued with --init-from/--start-step on a
machine without its run folder, and the retrain script's side of it
(scripts/train_pqmim_cpu.py: --ship-only, continuing from a shipped snapshot)."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from nic_lib import train_pqmim
from nic_lib.models import pqmim, save_checkpoint
from nic_lib.models.checkpoints import _RESERVED_KEYS as RESERVED_KEYS
from nic_lib.testing.sessions import end_pqmim_session_during_step
from nic_lib.training.schedule import warmup_cosine

TINY = {"N": 16, "latent_dim": 8, "M": 2, "K": 16, "width": 32, "layers": 1, "heads": 2}
#: The tiny run's flags; stage A: 10 steps, warm-up 3, a row per step, ckpt.pt every 4.
FLAGS = {**TINY, "data": ("sample",), "crop": 32, "batch_size": 2, "steps_a": 10,
         "steps_b": 2, "crop_b": 32, "warmup_steps": 3, "log_every": 1, "ckpt_every": 4,
         "lr_a": 2e-3, "lr_b": 2e-3}
#: The session ends during step 6 (index 6): ckpt.pt holds step 4, log_a.csv rows 1..6.
KILLED_AT, SAVED_AT = 6, 4


def _argv(**flags) -> list[str]:
    """Command-line flags of ``python -m nic_lib.train_pqmim`` for ``flags``."""
    out = []
    for key, value in flags.items():
        out += [f"--{key.replace('_', '-')}", *map(str, value if isinstance(value, tuple) else [value])]
    return out


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A tiny stage A killed during step KILLED_AT; its last ckpt.pt is at step SAVED_AT."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    return end_pqmim_session_during_step(train_pqmim.PQMIMTrainConfig(**FLAGS, out_dir=str(out)), KILLED_AT)


@pytest.fixture(scope="module")
def snapshot(stopped_run, tmp_path_factory):
    """The stopped run exported in float32 (exact) to another folder."""
    return train_pqmim.export_snapshot(stopped_run, tmp_path_factory.mktemp("shipped") / "M2-K16.pt")


@pytest.fixture(scope="module")
def continued(snapshot, tmp_path_factory):
    """The snapshot continued on a 'fresh machine' (a new folder) by the command line."""
    out = tmp_path_factory.mktemp("fresh") / "run"
    return train_pqmim.main([*_argv(**FLAGS), "--init-from", str(snapshot),
                             "--start-step", str(SAVED_AT), "--out-dir", str(out)])


def _schedule(t: int, peak: float, warmup: int, total: int) -> float:
    """Stage A's rate at step index t (written out: warm-up, then cosine to peak / 10)."""
    if t < warmup:
        return peak * (t + 1) / warmup
    return peak / 10 + 0.5 * (peak - peak / 10) * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))


def test_snapshot_is_the_stopped_state_as_a_checkpoint_of_the_same_model(stopped_run, snapshot):
    state = torch.load(stopped_run / "ckpt.pt", weights_only=True)
    assert (state["stage"], state["step"]) == ("a", SAVED_AT)
    model, ckpt = pqmim.load_pqmim(snapshot)
    assert type(model) is pqmim.PQMIM
    assert model.architecture() == {**TINY, "attention_radius": 0}
    assert ckpt["snapshot"]["stage"] == "a" and ckpt["snapshot"]["step"] == SAVED_AT
    assert ckpt["snapshot"]["of"] == str(stopped_run)
    assert ckpt["train_config"]["steps_a"] == FLAGS["steps_a"]
    assert all(torch.equal(v, state["model"][k]) for k, v in model.state_dict().items())
    assert bool(model.quantizer.initialized)
    # the log rows logged after the checkpoint (steps 5, 6) are not the snapshot's
    assert pd.read_csv(stopped_run / "log_a.csv")["step"].tolist() == list(range(1, KILLED_AT + 1))
    shipped_log = pd.read_csv(train_pqmim.snapshot_records(snapshot, "log_a.csv"))
    assert shipped_log["step"].tolist() == list(range(1, SAVED_AT + 1))
    config = json.loads(train_pqmim.snapshot_records(snapshot, "config.json").read_text())
    assert config["config"]["K"] == TINY["K"]


def test_half_precision_snapshot_keeps_the_codebooks_exact_and_is_smaller(stopped_run, snapshot, tmp_path):
    half = train_pqmim.export_snapshot(stopped_run, tmp_path / "half.pt", dtype=torch.float16)
    assert half.stat().st_size < 0.7 * snapshot.stat().st_size
    exact, _ = pqmim.load_pqmim(snapshot)
    rounded, _ = pqmim.load_pqmim(half)
    for name, tensor in exact.state_dict().items():
        if name.startswith("quantizer."):
            assert torch.equal(tensor, rounded.state_dict()[name]), name
        elif tensor.is_floating_point():
            assert torch.allclose(tensor, rounded.state_dict()[name], rtol=1e-3, atol=1e-4), name


def test_continued_stage_a_continues_step_counter_rate_and_log(stopped_run, snapshot, continued):
    before = pd.read_csv(stopped_run / "log_a.csv")
    log = pd.read_csv(continued / "log_a.csv")
    # one row per step of the whole stage: the snapshot's rows, then the continued run's
    assert log["step"].tolist() == list(range(1, FLAGS["steps_a"] + 1))
    pd.testing.assert_frame_equal(log.iloc[:SAVED_AT], before.iloc[:SAVED_AT])
    # the row of step t + 1 holds the rate of step index t; fresh Adam: a ramp over the
    # warm-up to the schedule's rate at the start step, then the schedule itself
    peak, warmup, total = FLAGS["lr_a"], FLAGS["warmup_steps"], FLAGS["steps_a"]
    for t in range(SAVED_AT, total):
        ramp = (t - SAVED_AT + 1) / warmup if t - SAVED_AT < warmup else 1.0
        expected = _schedule(max(t, warmup) if ramp < 1 else t, peak, warmup, total) * ramp
        assert log["lr"][t] == pytest.approx(expected, rel=1e-6), t
        assert warmup_cosine(t, peak, warmup, total, start=SAVED_AT) == pytest.approx(expected, rel=1e-12)
    assert log["lr"][SAVED_AT] == pytest.approx(before["lr"][SAVED_AT] / warmup, rel=1e-6)
    # step index 4 sees the same weights, codebooks, crops and quantizer draws as the
    # stopped run did before it was killed: the same loss (the update after it differs)
    for column in ("loss", "mse", "commitment", "perplexity"):
        assert log[column][SAVED_AT] == before[column][SAVED_AT], column
    assert log["loss"][SAVED_AT] < log["loss"][0]  # it did not start from scratch


def test_continued_run_finishes_both_stages_and_records_where_it_came_from(snapshot, continued):
    model, ckpt = pqmim.load_pqmim(continued / "final.pt")
    assert type(model) is pqmim.PQMIM and model.architecture() == {**TINY, "attention_radius": 0}
    assert ckpt["train_config"]["init_from"] == str(snapshot)
    assert ckpt["train_config"]["start_step"] == SAVED_AT
    assert len(pd.read_csv(continued / "log_b.csv")) == FLAGS["steps_b"]
    resolved = json.loads((continued / "config.json").read_text())["resolved"]
    assert resolved["continued_from"]["start_step"] == SAVED_AT
    assert resolved["continued_from"]["log_a_rows_kept"] == SAVED_AT


def test_a_continued_run_resumes_without_its_snapshot(snapshot, continued, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(continued, run)
    moved = shutil.copy(snapshot, tmp_path / "elsewhere.pt")
    snapshot.rename(snapshot.with_suffix(".away"))
    try:
        train_pqmim.main(["--resume", str(run), "--steps-b", "3"])
    finally:
        snapshot.with_suffix(".away").rename(snapshot)
    assert Path(moved).is_file()
    assert len(pd.read_csv(run / "log_b.csv")) == 3
    assert pd.read_csv(run / "log_a.csv")["step"].tolist() == list(range(1, FLAGS["steps_a"] + 1))


def _new_run(tmp_path, **changes):
    flags = {**FLAGS, "out_dir": str(tmp_path / "new"), **changes}
    return train_pqmim.train(train_pqmim.PQMIMTrainConfig(**flags))


def test_continuations_that_would_not_continue_the_snapshot_are_refused(stopped_run, snapshot, tmp_path):
    with pytest.raises(ValueError, match=f"pass --start-step {SAVED_AT}"):
        _new_run(tmp_path, init_from=str(snapshot), start_step=SAVED_AT + 1)
    with pytest.raises(ValueError, match="add --start-step"):
        _new_run(tmp_path, init_from=str(snapshot))
    with pytest.raises(ValueError, match="give --init-from"):
        _new_run(tmp_path, start_step=SAVED_AT)
    with pytest.raises(ValueError, match="not a step of stage A"):
        _new_run(tmp_path, init_from=str(snapshot), start_step=SAVED_AT, steps_a=SAVED_AT)
    with pytest.raises(ValueError, match="no such file"):
        _new_run(tmp_path, init_from=str(tmp_path / "gone.pt"), start_step=SAVED_AT)
    # another codebook size, another width, another stage-A rate: named, with the flag to pass
    with pytest.raises(ValueError, match="K=16, this run K=8.*pass --K 16"):
        _new_run(tmp_path, init_from=str(snapshot), start_step=SAVED_AT, K=8)
    with pytest.raises(ValueError, match="pass --N 16"):
        _new_run(tmp_path, init_from=str(snapshot), start_step=SAVED_AT, N=24)
    with pytest.raises(ValueError, match="lr_a"):
        _new_run(tmp_path, init_from=str(snapshot), start_step=SAVED_AT, lr_a=1e-3)
    # a finished model is no snapshot: its stage B restarts instead
    model, ckpt = pqmim.load_pqmim(snapshot)
    extra = {k: v for k, v in ckpt.items() if k not in RESERVED_KEYS and k != "snapshot"}
    final = save_checkpoint(model, tmp_path / "final.pt", ckpt["config"], extra=extra)
    with pytest.raises(ValueError, match="not a snapshot.*--restart-b"):
        _new_run(tmp_path, init_from=str(final), start_step=SAVED_AT)
    with pytest.raises(SystemExit, match="one of the two"):
        train_pqmim.main(["--resume", str(stopped_run), "--init-from", str(snapshot)])
    # a folder holding a run is not overwritten by a continuation
    with pytest.raises(ValueError, match="already holds a run"):
        _new_run(tmp_path, init_from=str(snapshot), start_step=SAVED_AT, out_dir=str(stopped_run))
    assert not (tmp_path / "new").exists()


def _stage_b_snapshot(stopped_run, tmp_path) -> Path:
    """The stopped run as if stage A had finished (stage "b", step 0), exported."""
    run = tmp_path / "in-b"
    shutil.copytree(stopped_run, run)
    state = torch.load(run / "ckpt.pt", weights_only=True)
    torch.save({**state, "stage": "b", "step": 0}, run / "ckpt.pt")
    return train_pqmim.export_snapshot(run, tmp_path / "in-b.pt")


def test_stage_b_starts_from_a_snapshot_whose_stage_a_is_finished(stopped_run, snapshot, tmp_path):
    with pytest.raises(ValueError, match=f"--init-from {snapshot} --start-step {SAVED_AT}"):
        train_pqmim.train(train_pqmim.PQMIMTrainConfig(), resume=snapshot, restart_b=True,
                          overrides={"out_dir": str(tmp_path / "b")})
    in_b = _stage_b_snapshot(stopped_run, tmp_path)
    with pytest.raises(ValueError, match="snapshot of stage B.*--restart-b"):
        _new_run(tmp_path, init_from=str(in_b), start_step=SAVED_AT)
    run = train_pqmim.train(train_pqmim.PQMIMTrainConfig(), resume=in_b, restart_b=True,
                            overrides={"out_dir": str(tmp_path / "b"), "steps_b": 2})
    source, _ = pqmim.load_pqmim(in_b)
    after, _ = pqmim.load_pqmim(run / "final.pt")
    for name, tensor in source.state_dict().items():
        if not name.startswith(("entropy_model.", "prior_counts")):
            assert torch.equal(tensor, after.state_dict()[name]), name
    assert len(pd.read_csv(run / "log_b.csv")) == 2


def test_a_run_saved_before_continuations_existed_still_resumes(tmp_path):
    saved = {k: v for k, v in
             __import__("dataclasses").asdict(train_pqmim.PQMIMTrainConfig(**FLAGS)).items()
             if k not in train_pqmim.ADDED_SETTINGS}
    cfg = train_pqmim.resumed_config(train_pqmim.PQMIMTrainConfig, saved,
                                     train_pqmim.RUNTIME_KEYS, None)
    assert cfg.init_from is None and cfg.start_step == 0 and cfg.K == TINY["K"]


@pytest.fixture()
def script(tmp_path, monkeypatch):
    """scripts/train_pqmim_cpu.py with its runs and checkpoint folders in tmp_path."""
    spec = importlib.util.spec_from_file_location(
        "train_pqmim_cpu_continue", Path(__file__).resolve().parents[1] / "scripts" / "train_pqmim_cpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(module, "OUT", tmp_path / "checkpoints")
    monkeypatch.setattr(module, "SNAPSHOTS", tmp_path / "checkpoints" / "snapshots")
    return module


def test_script_ships_an_unfinished_run_and_continues_it_where_its_folder_is_gone(
        script, stopped_run, tmp_path):
    name = "M2-K16"
    shutil.copytree(stopped_run, script.RUNS / name)
    script.main(["--only", name, "--ship-only"])
    shipped = script.SNAPSHOTS / f"{name}.pt"
    ckpt = torch.load(shipped, weights_only=True)
    assert ckpt["dtype"] == "float16" and ckpt["snapshot"]["step"] == SAVED_AT
    assert pd.read_csv(script.SNAPSHOTS / f"{name}.log_a.csv")["step"].max() == SAVED_AT
    assert (script.SNAPSHOTS / f"{name}.config.json").is_file()
    assert not (script.OUT / f"{name}.pt").exists()  # not a rate point
    assert pqmim.find_checkpoints(script.OUT) == []

    # where the run folder is, it resumes
    assert "--resume" in script._commands(name, None)[0]
    # a fresh machine: no run folder; stage A continues from a copy of the snapshot
    shutil.rmtree(script.RUNS)
    cmd, run, _ = script._commands(name, 1)
    start = script.RUNS / f"{name}-from-step{SAVED_AT}.pt"
    i = cmd.index("--init-from")
    assert cmd[i:i + 4] == ["--init-from", str(start), "--start-step", str(SAVED_AT)]
    assert cmd[cmd.index("--out-dir") + 1] == str(run) == str(script.RUNS / name)
    assert cmd[cmd.index("--export") + 1] == str(script.OUT / f"{name}.pt")
    args = train_pqmim._parser().parse_args(cmd[3:])  # the flags parse as the recipe's
    assert args.M == 2 and args.K == 16 and args.steps_a == script.STEPS_A
    script.prepare_continuation(name, script.shipped_snapshot(name))
    assert start.read_bytes() == shipped.read_bytes()
    assert pd.read_csv(script.RUNS / f"{name}-from-step{SAVED_AT}.log_a.csv")["step"].max() == SAVED_AT

    # a snapshot whose stage A finished: stage B starts again on its autoencoder
    in_b = _stage_b_snapshot(stopped_run, tmp_path)
    shutil.copy(in_b, shipped)
    cmd, run, _ = script._commands(name, None)
    assert cmd[3:6] == ["--resume", str(script.RUNS / f"{name}-from-step0.pt"), "--restart-b"]
