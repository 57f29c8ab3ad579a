"""PQ-MIM stage A in bfloat16 (``--precision bf16``, nic_lib.training.pqmim.stage_a.train_step):
the arithmetic it changes and the one it must not (the product quantizer's), and how the
setting is saved, refused, kept on resume and continued from a snapshot."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from nic_lib import train_pqmim
from nic_lib.models import pqmim, save_checkpoint
from nic_lib.models.checkpoints import _RESERVED_KEYS as RESERVED_KEYS
from nic_lib.training import CropSampler, load_pool, training_files
from nic_lib.testing.sessions import end_pqmim_session_during_step
from nic_lib.training.pqmim import stage_a
from nic_lib.training.pqmim.config import exported_config, step_generator, to_input
from nic_lib.training.precision import for_this_machine

TINY = {"N": 16, "latent_dim": 8, "M": 2, "K": 16, "width": 32, "layers": 1, "heads": 2}
#: A tiny bf16 run: stage A 6 steps (ckpt.pt every 2), stage B 2.
FLAGS = {**TINY, "data": ("sample",), "crop": 32, "batch_size": 2, "steps_a": 6, "steps_b": 2,
         "crop_b": 32, "warmup_steps": 2, "log_every": 1, "ckpt_every": 2, "lr_a": 2e-3,
         "lr_b": 2e-3, "precision": "bf16"}
#: The session ends during stage A's step index KILLED_AT; ckpt.pt then holds SAVED_AT.
KILLED_AT, SAVED_AT = 3, 2


def _crops(steps: int, crop: int = 64, batch: int = 4) -> list[torch.Tensor]:
    """Training crops of scikit-image's sample photos (no data files), one batch a step."""
    sampler = CropSampler(load_pool(training_files(("sample",))), crop, batch, seed=0)
    return [to_input(sampler.batch(k)) for k in range(steps)]


def _steps(model: pqmim.PQMIM, crops: list[torch.Tensor], precision: str) -> list[float]:
    """Stage A's losses over ``crops`` from ``model``'s state (trained in place)."""
    params = [p for n, p in model.named_parameters() if not n.startswith("entropy_model.")]
    opt = torch.optim.Adam(params, lr=1e-3)
    return [stage_a.train_step(model, opt, params, x, step_generator(0, stage_a.QUANTIZER_STREAM, k),
                               1.0, precision)["loss"].item() for k, x in enumerate(crops)]


def test_bf16_stage_a_steps_give_finite_losses_close_to_fp32s_from_the_same_start(one_thread):
    torch.manual_seed(0)
    start = pqmim.PQMIM(**TINY).train()
    crops = _crops(4)
    fp32 = _steps(copy.deepcopy(start), crops, "fp32")
    bf16 = _steps(copy.deepcopy(start), crops, "bf16")
    assert all(map(math.isfinite, bf16))
    # bfloat16 keeps 8 bits of mantissa (~0.4% per rounding); over a few steps the losses
    # differ by ~0.05% (measured over 8 steps: at most 0.06%), checked loosely here
    assert bf16 == pytest.approx(fp32, rel=0.01)
    assert bf16 != fp32  # and the bf16 pass did compute in bfloat16


def test_quantizer_sees_float32_latents_and_g_a_computes_in_bf16(one_thread):
    torch.manual_seed(0)
    model = pqmim.PQMIM(**TINY).train()
    seen = {}
    # observers only: record the dtypes entering the quantizer and leaving g_a's first conv
    hooks = [model.quantizer.register_forward_pre_hook(
                 lambda m, args: seen.__setitem__("quantizer_input", args[0].dtype)),
             model.g_a[0].register_forward_hook(
                 lambda m, args, out: seen.__setitem__("g_a_conv_output", out.dtype))]
    params = list(model.parameters())
    try:
        out = stage_a.train_step(model, torch.optim.Adam(params), params, _crops(1)[0],
                                 step_generator(0, stage_a.QUANTIZER_STREAM, 0), 1.0, "bf16")
    finally:
        for h in hooks:
            h.remove()
    assert seen == {"quantizer_input": torch.float32, "g_a_conv_output": torch.bfloat16}
    assert out["x_hat"].dtype == out["loss"].dtype == torch.float32
    assert model.quantizer.codebooks.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in params)  # parameters and Adam stay float32


def test_config_round_trips_the_precision_and_defaults_to_fp32():
    assert train_pqmim.PQMIMTrainConfig().precision == train_pqmim.DEFAULT_PRECISION == "fp32"
    cfg = train_pqmim.PQMIMTrainConfig(**FLAGS)
    saved = json.loads(json.dumps(exported_config(cfg)))  # as config.json and final.pt hold it
    again = train_pqmim.resumed_config(train_pqmim.PQMIMTrainConfig, saved,
                                       train_pqmim.RUNTIME_KEYS, None)
    assert again == cfg and again.precision == "bf16"
    assert train_pqmim._parser().parse_args(["--precision", "bf16"]).precision == "bf16"


def test_an_unknown_precision_is_refused_naming_the_accepted_ones():
    with pytest.raises(ValueError, match="'fp16'.*fp32, bf16"):
        train_pqmim.check_config(train_pqmim.PQMIMTrainConfig(precision="fp16"))
    with pytest.raises(SystemExit):
        train_pqmim._parser().parse_args(["--precision", "fp16"])
    with pytest.raises(ValueError, match="fp32, bf16"):
        train_pqmim.train(train_pqmim.PQMIMTrainConfig(precision="fp16"))


def test_a_run_saved_before_the_setting_existed_resumes_in_fp32():
    saved = {k: v for k, v in dataclasses.asdict(train_pqmim.PQMIMTrainConfig(**TINY)).items()
             if k != "precision"}
    cfg = train_pqmim.resumed_config(train_pqmim.PQMIMTrainConfig, saved,
                                     train_pqmim.RUNTIME_KEYS, None)
    assert cfg.precision == "fp32"


@pytest.fixture(scope="module")
def stopped_bf16_run(tmp_path_factory):
    """A tiny bf16 stage A killed during step KILLED_AT; its ckpt.pt is at SAVED_AT."""
    out = tmp_path_factory.mktemp("bf16") / "run"
    return end_pqmim_session_during_step(train_pqmim.PQMIMTrainConfig(**FLAGS, out_dir=str(out)), KILLED_AT)


def test_a_resumed_run_keeps_its_precision(stopped_bf16_run, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="precision cannot change"):
        train_pqmim.main(["--resume", str(stopped_bf16_run), "--precision", "fp32"])
    run = tmp_path / "run"
    shutil.copytree(stopped_bf16_run, run)
    used = []
    step = stage_a.train_step

    def recording(model, opt, params, x, generator, clip_grad_norm, precision="fp32"):
        used.append(precision)
        return step(model, opt, params, x, generator, clip_grad_norm, precision)

    monkeypatch.setattr(stage_a, "train_step", recording)
    train_pqmim.main(["--resume", str(run)])
    # the rest of stage A computed as the run asked (bf16 where this machine has it)
    assert used == [for_this_machine("bf16")] * (FLAGS["steps_a"] - SAVED_AT)
    record = json.loads((run / "config.json").read_text())
    assert record["config"]["precision"] == "bf16"
    assert record["resolved"]["precision_computed"] == for_this_machine("bf16")
    _, ckpt = pqmim.load_pqmim(run / "final.pt")
    assert ckpt["train_config"]["precision"] == "bf16"
    # a later resume in stage B (no stage A here) keeps the record of stage A's precision
    train_pqmim.main(["--resume", str(run), "--steps-b", "3"])
    record = json.loads((run / "config.json").read_text())
    assert record["resolved"]["precision_computed"] == for_this_machine("bf16")


def test_a_snapshot_continues_only_in_its_own_precision(stopped_bf16_run, tmp_path):
    snapshot = train_pqmim.export_snapshot(stopped_bf16_run, tmp_path / "bf16.pt")
    flags = {**FLAGS, "init_from": str(snapshot), "start_step": SAVED_AT,
             "out_dir": str(tmp_path / "fp32")}
    with pytest.raises(ValueError, match="precision='bf16'.*pass --precision bf16"):
        train_pqmim.train(train_pqmim.PQMIMTrainConfig(**{**flags, "precision": "fp32"}))
    # a snapshot saved before the setting existed ran in fp32
    model, ckpt = pqmim.load_pqmim(snapshot)
    old = {k: v for k, v in ckpt["train_config"].items() if k != "precision"}
    extra = {**{k: v for k, v in ckpt.items() if k not in RESERVED_KEYS}, "train_config": old}
    legacy = save_checkpoint(model, tmp_path / "legacy.pt", ckpt["config"], extra=extra)
    with pytest.raises(ValueError, match="pass --precision fp32"):
        train_pqmim.train(train_pqmim.PQMIMTrainConfig(**{**flags, "init_from": str(legacy)}))


def test_the_retrain_recipes_train_stage_a_in_bf16():
    spec = importlib.util.spec_from_file_location(
        "train_pqmim_cpu_precision", Path(__file__).resolve().parents[1] / "scripts" / "train_pqmim_cpu.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for name, flags in script.RATE_POINTS.items():
        args = train_pqmim._parser().parse_args([*script.COMMON, *flags])
        assert args.precision == "bf16", name
