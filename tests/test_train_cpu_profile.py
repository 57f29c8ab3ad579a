"""scripts/train_cpu_profile.py: which stages run, and how a run whose folder is gone continues
from (or is stood for by) what it shipped."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from nic_lib.models.calibration import CALIBRATED_MODELS

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_cpu_profile.py"


@pytest.fixture
def script(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("train_cpu_profile_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(module, "CHECKPOINTS", tmp_path / "checkpoints")
    return module


def _ship(script, stage: str, step: int | None, of_stage: str | None = None,
          snapshot: bool = True) -> Path:
    """A shipped file as ship() / ship_snapshot() write it (metadata only)."""
    path = script.CHECKPOINTS / script.STAGES[stage][2]
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": "nic-repro-checkpoint", "state_dict": {}, "step": step,
            "lineage": [f"runs/cpu-profile/{s}" for s in script.lineage(of_stage or stage)]}
    if snapshot:
        meta["snapshot_of"] = f"/somewhere/nic-runs/cpu-profile/{of_stage or stage}"
    torch.save(meta, path)
    return path


def test_without_anything_shipped_the_whole_lineage_runs(script):
    assert script.needed("n96") == script.lineage("n96")
    assert script.lineage("n96")[-3:] == ["m192-q8-fork", "n96-init", "n96"]


def test_a_shipped_snapshot_of_the_stage_is_continued_at_its_step(script):
    shipped = _ship(script, "n96", 15000)
    assert script.shipped_state("n96")[0] == "snapshot"
    assert script.needed("n96") == ["n96"]
    assert script.needed("n96", from_scratch=True) == script.lineage("n96")
    cmd = script.continue_command("n96", *script.shipped_snapshot("n96"))
    start = Path(cmd[cmd.index("--init-from") + 1])
    # the run starts from a copy (the shipped file is replaced when the run ships)
    assert start.parent == script.RUNS and start.read_bytes() == shipped.read_bytes()
    assert cmd.count("--init-from") == 1 and cmd[cmd.index("--start-step") + 1] == "15000"
    # the stage's own schedule is kept
    assert cmd[cmd.index("--max-steps") + 1] == cmd[cmd.index("--lr-decay-steps") + 1]


def test_the_ablations_do_not_wait_for_the_main_line_and_the_joint_model_comes_first(script):
    _ship(script, "n96", 15000)  # the main line unfinished
    assert script.needed("ablate-mbt2018-gmm") == ["ablate-mbt2018", "ablate-mbt2018-gmm"]
    assert script.needed("ablate-mbt2018") == ["ablate-mbt2018"]
    cmd = script.command("ablate-mbt2018-gmm")
    assert cmd[2] == "nic_lib.train_entropy"
    # every ablation's transforms: n96 at the step named by ABLATION_TRANSFORMS
    assert Path(cmd[cmd.index("--transforms") + 1]) == script.ablation_transforms_path()
    assert script.ablation_transforms_path().parent == script.RUNS


def test_the_joint_ablation_keeps_the_frozen_transforms_and_the_others_share_them(script):
    joint, gmm = script.storage("ablate-mbt2018"), script.storage("ablate-mbt2018-gmm")
    assert joint == {"dtype": torch.int8, "keep_float16": script.FROZEN}
    assert gmm == {"base": script.CHECKPOINTS / script.ABLATION_BASE, "dtype": torch.int8}
    assert script.STAGES["ablate-mbt2018"][2] == script.ABLATION_BASE
    assert script.storage("n96") == {}


def test_the_ablations_transforms_come_back_from_the_repository_history(script):
    from nic_lib.models import load_checkpoint

    import subprocess
    commit = script.ABLATION_TRANSFORMS[0]
    if subprocess.run(["git", "cat-file", "-e", commit], cwd=script.REPO).returncode:
        pytest.skip(f"this checkout lacks commit {commit} (a shallow clone or an archive)")

    out = script.ablation_transforms()
    assert out == script.ablation_transforms_path() and out.is_file()
    _, ckpt = load_checkpoint(out, calibrated=False)
    assert ckpt["step"] == script.ABLATION_TRANSFORMS[2]
    assert script.ablation_transforms() == out  # restored once


def test_a_finished_shipped_stage_stands_for_its_run(script):
    _ship(script, "n96", script.max_steps("n96"))
    assert script.shipped_state("n96")[0] == "final" and script.shipped_snapshot("n96") is None
    assert script.needed("n96") == ["n96"]
    _ship(script, "n96", script.max_steps("n96"), snapshot=False)  # shipped by ship()
    assert script.shipped_state("n96")[0] == "final"


@pytest.mark.parametrize("step, of_stage", [(None, "n96"), (15000, "m192-q8")])
def test_only_a_file_of_this_stage_with_a_step_counts(script, step, of_stage):
    _ship(script, "n96", step, of_stage)
    assert script.shipped_state("n96") is None
    assert script.needed("n96") == script.lineage("n96")


def test_an_existing_run_folder_is_resumed_not_continued(script):
    _ship(script, "n96", 15000)
    (script.RUNS / "n96").mkdir(parents=True)
    (script.RUNS / "n96" / "ckpt.pt").write_bytes(b"")
    assert script.shipped_snapshot("n96") is None
    assert script.needed("n96") == ["n96"]


def test_an_ablation_shipped_under_a_shorter_protocol_is_retrained(script, capsys, monkeypatch):
    assert script.max_steps("ablate-mbt2018-mean") == script.ABLATION_STEPS
    _ship(script, "ablate-mbt2018-mean", 10000, snapshot=False)  # the 10,000-step protocol
    assert script.ABLATION_STEPS > 10000
    assert script.shipped_state("ablate-mbt2018-mean")[0] == "stale"
    assert script.shipped_snapshot("ablate-mbt2018-mean") is None  # not continued either
    assert script.needed("ablate-mbt2018-mean") == ["ablate-mbt2018-mean"]
    ran = []
    monkeypatch.setattr(script.subprocess, "run", lambda cmd, **kw: ran.append(cmd))
    monkeypatch.setattr(script, "ablation_transforms", lambda: None)
    script.run("ablate-mbt2018-mean")
    assert "retraining" in capsys.readouterr().out
    assert ran == [script.command("ablate-mbt2018-mean")]  # from scratch, the protocol's steps
    _ship(script, "ablate-mbt2018-mean", script.ABLATION_STEPS, snapshot=False)
    assert script.shipped_state("ablate-mbt2018-mean")[0] == "final"


def test_ablation_stages_are_listed_with_the_protocols_steps_and_their_cpu_hours(script, capsys):
    script.main(["--list"])
    out = "\n" + capsys.readouterr().out
    for stage in script.ABLATIONS:
        steps, hours = script.ood_budget(stage)
        assert steps == script.ABLATION_STEPS and f"\n{stage} [{steps} steps, ~{hours:.1f} CPU h]" in out
    # a context model costs more per step than the scale hyperprior
    assert script.ood_budget("ablate-mbt2018-gmm")[1] > script.ood_budget("ablate-bmshj2018-hyperprior")[1]


def test_an_ablation_run_folder_made_for_another_budget_is_neither_shipped_nor_resumed(script):
    import json

    out = script.RUNS / "ablate-mbt2018-gmm"
    out.mkdir(parents=True)
    (out / "final.pt").write_bytes(b"")
    (out / "config.json").write_text(json.dumps({"config": {"steps": 10000}}))
    assert script.made_for("ablate-mbt2018-gmm") == 10000
    assert script.stale_run("ablate-mbt2018-gmm") and not script.finished("ablate-mbt2018-gmm")
    with pytest.raises(SystemExit, match="made for 10,000 steps.*Move the folder away"):
        script.run("ablate-mbt2018-gmm")
    (out / "config.json").write_text(json.dumps({"config": {"steps": script.ABLATION_STEPS}}))
    assert script.finished("ablate-mbt2018-gmm")


# ------------------------------------------------------------------- OOD variants (issue 30)


def test_ood_stages_are_listed_with_their_budgets(script, capsys):
    script.main(["--list"])
    out = capsys.readouterr().out
    for stage in script.OOD_STAGES:
        assert f"\n{stage} [" in "\n" + out and "CPU h]" in out
        steps, hours = script.ood_budget(stage)
        assert steps == script.max_steps(stage) and 0 < hours < 24


def test_ood_stages_are_valid_training_configurations(script):
    from nic_lib import train as T

    for stage, (parent, flags, target) in script.OOD_STAGES.items():
        assert target.startswith("ood/")
        args = T._parser().parse_args(flags)
        given = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items()}
        cfg = T.TrainConfig(**given)
        T.check_config(cfg, world=1, resuming=True)  # resuming: --init-from may not exist yet
        model = T.build_model(T.TrainConfig(**{**given, "N": 8, "M": 136 if
                                                cfg.model == "elic2022" else 8}))
        assert model is not None
        if cfg.model == "mbt2018":  # warm-started from what is shipped, not from a stage
            assert parent is None and cfg.init_from.endswith("mbt2018/n96.pt")
        elif stage != "ood-elic-q3":  # the other λ of ELIC: fine-tuned from its q3 run
            assert parent == "ood-elic-q3" and cfg.init_from.endswith("ood-elic-q3/final.pt")


def test_ood_stages_ship_what_nic_lib_variants_expects(script):
    from nic_lib import variants

    shipped = {target: stage for stage, (_, _, target) in script.OOD_STAGES.items()}
    for variant in variants.OOD_VARIANTS.values():
        for file, stage in zip(variant.files, variant.stages, strict=True):
            assert shipped[file] == stage
    assert sorted(shipped.values()) == sorted(s for v in variants.OOD_VARIANTS.values()
                                              for s in v.stages)
    assert [int(q) for q in script.FIXED_QUALITIES] == list(variants.FIXED_QUALITIES)


def test_data_spectrum_stages_are_the_dense_control_plus_a_data_filter(script, capsys):
    from nic_lib import train as T
    from nic_lib import variants

    dense = script.OOD_STAGES["ood-dense"]
    assert set(script.DATA_FILTER_STAGES) == {"ood-data-blur", "ood-data-noise"}
    for stage, spec in script.DATA_FILTER_STAGES.items():
        parent, flags, target = script.OOD_STAGES[stage]
        # the same budget: exactly the control's command, plus the filter
        assert parent == dense[0] and flags == [*dense[1], "--data-filter", spec]
        assert script.ood_budget(stage) == script.ood_budget("ood-dense")
        assert target == f"ood/mbt2018-{stage.removeprefix('ood-')}.pt"
        assert T.parse_data_filter(spec).kind == stage.rsplit("-", 1)[1]
        label = f"mbt2018-{stage.removeprefix('ood-')}"
        assert variants.OOD_VARIANTS[label].stages == (stage,) and label in variants.DATA_SPECTRUM_VARIANTS
    assert variants.DATA_SPECTRUM_VARIANTS[0] == "mbt2018-dense"  # the control comes first
    script.main(["--list"])
    out = "\n" + capsys.readouterr().out
    for stage, spec in script.DATA_FILTER_STAGES.items():
        line = next(l for l in out.splitlines() if l.startswith(f"{stage} ["))
        assert "CPU h]" in line and line.endswith(f"--data-filter {spec} --out-dir {script.RUNS / stage}")


def test_lowrate_stages_are_listed_with_budgets_and_are_valid_configurations(script, capsys):
    from nic_lib import train as T
    from nic_lib.models import LOW_RATE_QUALITIES

    script.main(["--list"])
    out = "\n" + capsys.readouterr().out
    for stage in script.LOWRATE_STAGES:
        assert f"\n{stage} [" in out
        steps, hours = script.ood_budget(stage)
        assert 0 < hours < 24 and steps > 0
    # the derived start is the *shipped* main line with the low levels added
    assert f"n96-lowrate-init: scripts/widen_checkpoint.py {script.N96_SHIPPED}" in out
    assert script.lineage("ablate-bmshj2018-hyperprior-lowrate") == [
        "n96-lowrate-init", "n96-lowrate", "ablate-bmshj2018-hyperprior-lowrate"]
    flags = script.STAGES["n96-lowrate"][1]
    args = T._parser().parse_args(flags)
    cfg = T.TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items()})
    T.check_config(cfg, world=1, resuming=True)
    assert set(LOW_RATE_QUALITIES) < set(cfg.qualities) and cfg.init_from.endswith("n96-lowrate-init.pt")
    assert script.command("ablate-bmshj2018-hyperprior-lowrate")[2] == "nic_lib.train_entropy"


def test_a_continued_stage_ships_its_records_from_before_and_after_the_start_step(script):
    import pandas as pd

    _ship(script, "n96", 15000)
    target = script.CHECKPOINTS / script.STAGES["n96"][2]
    log = target.with_name(f"{target.stem}.log.csv")
    pd.DataFrame({"step": [14990, 15000, 15010], "loss": [1.0, 0.9, 5.0]}).to_csv(log, index=False)
    script.continue_command("n96", *script.shipped_snapshot("n96"))  # keeps the old rows
    # the continued run ships its own log (steps after 15,000) over the shipped one
    pd.DataFrame({"step": [15010, 15020], "loss": [0.8, 0.7]}).to_csv(log, index=False)
    script.ship_records("n96")
    whole = pd.read_csv(log)
    assert whole["step"].tolist() == [14990, 15000, 15010, 15020]
    assert whole["loss"].tolist() == [1.0, 0.9, 0.8, 0.7]


def test_the_top_levels_lever_runs_n96s_schedule_from_the_ablations_step_on_q6_to_q8(script):
    assert script.needed("n96-top") == ["n96-top-init", "n96-top"]
    assert script.DERIVED_FROM_FILE["n96-top-init"].name == script.ablation_transforms_path().name
    cmd, n96 = script.command("n96-top"), script.command("n96")
    value = lambda c, flag: c[c.index(flag) + 1]  # noqa: E731
    assert value(cmd, "--start-step") == str(script.ABLATION_TRANSFORMS[2])
    assert cmd[cmd.index("--qualities") + 1:cmd.index("--qualities") + 4] == ["6", "7", "8"]
    for flag in ("--lr", "--lr-decay-steps", "--min-lr-ratio", "--eval-crop", "--ema", "--max-steps"):
        assert value(cmd, flag) == value(n96, flag), flag  # the same schedule, evaluation, last step
    assert script.max_steps("n96-top") == 43500
    # shipped beside the main line, as the file the hub serves the top levels from
    from nic_lib.models import hub
    assert script.STAGES["n96-top"][2] == f"mbt2018/{hub.CPU_TOP_FILE}"
    assert script.storage("n96-top") == {}  # float16 convolutions, like n96.pt


def test_a_shipped_top_snapshot_continues_with_one_start_step(script):
    _ship(script, "n96-top", 30000)
    assert script.shipped_state("n96-top")[0] == "snapshot"
    assert script.needed("n96-top") == ["n96-top"]
    cmd = script.continue_command("n96-top", *script.shipped_snapshot("n96-top"))
    assert cmd.count("--start-step") == 1 and cmd[cmd.index("--start-step") + 1] == "30000"
    assert cmd.count("--init-from") == 1


def _run_folder(script, stage: str, max_steps: int, final: bool) -> Path:
    """A run folder as nic_lib.train leaves it (files empty but config.json)."""
    import json

    folder = script.RUNS / stage
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"config": {"max_steps": max_steps}}))
    (folder / "ckpt.pt").write_bytes(b"")
    if final:
        (folder / "final.pt").write_bytes(b"")
    return folder


@pytest.mark.parametrize("final", [False, True])
def test_a_run_made_for_fewer_steps_is_resumed_to_the_stages_last_step(script, monkeypatch, final):
    _run_folder(script, "n96-top", 32500, final)  # the stage's old end
    assert script.extended("n96-top") and not script.finished("n96-top")
    assert script.needed("n96-top") == ["n96-top"]
    ran = []
    monkeypatch.setattr(script.subprocess, "run", lambda cmd, **kw: ran.append(cmd))
    script.run("n96-top")
    assert ran[0][2:5] == ["nic_lib.train", "--resume", str(script.RUNS / "n96-top")]
    assert ran[0][ran[0].index("--max-steps") + 1] == "43500"
    shipped = []
    monkeypatch.setattr(script, "ship", lambda stage: shipped.append(("final", stage)))
    monkeypatch.setattr(script, "ship_snapshot", lambda stage: shipped.append(("snapshot", stage)))
    script.main(["--only", "n96-top", "--ship-only"])
    assert shipped == [("snapshot", "n96-top")]  # not the stale final.pt as a finished run


def test_a_run_made_for_the_stages_steps_is_resumed_as_it_is(script, monkeypatch):
    _run_folder(script, "n96-top", 43500, final=False)
    assert not script.extended("n96-top")
    ran = []
    monkeypatch.setattr(script.subprocess, "run", lambda cmd, **kw: ran.append(cmd))
    script.run("n96-top")
    assert "--max-steps" not in ran[0]
    (script.RUNS / "n96-top" / "final.pt").write_bytes(b"")
    assert script.finished("n96-top")


def test_the_training_command_of_every_cpu_model_names_the_stage_that_ships_its_file(script):
    from nic_lib.models import hub, registry

    shipped_by = {target: stage for stage, (_, _, target) in script.STAGES.items() if target}
    for name in registry.available_models():
        target = f"{name}/{hub.CPU_FILE}"
        if target in shipped_by:  # every file the recipe ships where get_model reads it
            assert hub.training_command(name).split("--only ")[1] == shipped_by[target], name
        elif name not in registry.SINGLE_RATE_MODELS:  # ELIC: an OOD variant, elsewhere
            assert hub.training_command(name) == f"python -m nic_lib.train --model {name} --profile cpu"
    assert set(hub.CPU_STAGES.values()) <= set(script.STAGES)
    # the main line's top levels: the file get_model takes q6-q8 from, where shipped
    assert shipped_by[f"mbt2018/{hub.CPU_TOP_FILE}"] == hub.training_command("mbt2018-top").split("--only ")[1]
    # the protocol's joint model and its context sizes, which notebook 01 loads by path
    for label, target in (("mbt2018-protocol", "mbt2018/n96-ablation.pt"),
                          ("mbt2018-ctx3", "mbt2018/n96-ctx3.pt"), ("mbt2018-ctx7", "mbt2018/n96-ctx7.pt")):
        assert shipped_by[target] == hub.training_command(label).split("--only ")[1], label


def test_the_hyperprior_models_get_their_scale_calibration_refitted_when_shipped(script):
    # the stages that ship bmshj2018-hyperprior / mbt2018-mean files, by their target's folder
    assert script.calibrated("ablate-bmshj2018-hyperprior")
    assert script.calibrated("ablate-mbt2018-mean")
    assert script.calibrated("ablate-bmshj2018-hyperprior-lowrate")
    for stage in ("n96", "n96-top", "ablate-mbt2018", "ablate-mbt2018-context", "ablate-bmshj2018-factorized",
                  "ablate-mbt2018-gmm", "n96-top-init"):
        assert not script.calibrated(stage), stage
    assert {script.STAGES[s][2].split("/")[0] for s in script.STAGES if script.calibrated(s)} == set(CALIBRATED_MODELS)
