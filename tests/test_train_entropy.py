"""nic_lib.train_entropy: entropy models trained on cached latents of frozen transforms."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from nic_lib import train_entropy as TE
from nic_lib.models import build_model, load_checkpoint, save_checkpoint, variable_rate

from test_train import _synthetic_images, needs_kodak  # noqa: F401  (shared helpers)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
LMBDAS = [0.0018, 0.0130, 0.0483]  # qualities 1, 4, 6


def _transforms(tmp_path):
    torch.manual_seed(0)
    config = {"N": 8, "M": 16, "lmbdas": LMBDAS, "reference_lmbda": 0.013}
    model = build_model("mbt2018", **config)
    model.update(force=True)
    path = tmp_path / "transforms.pt"
    save_checkpoint(model, path, {"model": "mbt2018", **config})
    return path


@pytest.mark.parametrize("name", ["mbt2018", "mbt2018-checkerboard", "bmshj2018-factorized"])
def test_forward_from_cached_latents_gives_the_entropy_model_the_same_latents(name):
    torch.manual_seed(0)
    model = build_model(name, N=8, M=16, lmbdas=LMBDAS, reference_lmbda=0.013).eval()
    model.update(force=True)
    variable_rate.set_rate_level(model, 1)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        real = model(x)["likelihoods"]
        y0 = model.g_a(x)  # what train_entropy caches: g_a's output, before the gain
        cached = model.forward_latents(y0, synthesize=False)
        assert cached["x_hat"] is None
        for key in real:
            torch.testing.assert_close(cached["likelihoods"][key], real[key], rtol=0, atol=0)


@needs_kodak
def test_a_tiny_run_trains_the_entropy_model_and_leaves_the_transforms(tmp_path, monkeypatch):
    monkeypatch.setenv("NIC_CACHE_DIR", str(tmp_path / "cache"))
    images = _synthetic_images(tmp_path / "images", count=4, size=96)
    source = _transforms(tmp_path)
    cfg = TE.EntropyConfig(model="mbt2018-mean", transforms=str(source), qualities=(1, 4, 6),
                           out_dir=str(tmp_path / "run"), crops=32, crop=64, steps=60,
                           warmup_steps=5, log_every=20, eval_images=1, eval_crop=64,
                           data=(str(images),))
    run = TE.train_entropy(cfg)
    with open(run / "log.csv", newline="") as f:
        bpp = [float(r["bpp"]) for r in csv.DictReader(f)]
    assert len(bpp) == 3 and bpp[-1] < bpp[0]
    with open(run / "eval.csv", newline="") as f:
        assert [int(r["quality"]) for r in csv.DictReader(f)] == [1, 4, 6]
    trained, ckpt = load_checkpoint(run / "final.pt", calibrated=False)
    before, _ = load_checkpoint(source, calibrated=False)
    ref = before.state_dict()
    for key, value in trained.state_dict().items():
        if key.startswith(TE.TRANSFORMS):
            assert torch.equal(value, ref[key]), key
    assert ckpt["config"]["model"] == "mbt2018-mean"
    with pytest.raises(FileExistsError, match="finished"):
        TE.train_entropy(cfg)


def test_bf16_runs_the_entropy_networks_in_bfloat16_and_still_learns(tmp_path, monkeypatch):
    monkeypatch.setenv("NIC_CACHE_DIR", str(tmp_path / "cache"))
    images = _synthetic_images(tmp_path / "images", count=4, size=96)
    source = _transforms(tmp_path)
    seen = []
    real_forward = torch.nn.Conv2d.forward

    def spy(self, x):
        out = real_forward(self, x)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.Conv2d, "forward", spy)
    # the bf16 path itself, also on a machine that would compute such a run in fp32
    monkeypatch.setattr(TE.T.precision, "native_bf16", lambda device_type="cpu": True)
    cfg = TE.EntropyConfig(model="mbt2018-mean", transforms=str(source), qualities=(1, 6),
                           out_dir=str(tmp_path / "run"), crops=32, crop=64, steps=60,
                           warmup_steps=5, log_every=20, eval_images=1, eval_crop=64,
                           data=(str(images),), precision="bf16")
    run = TE.train_entropy(cfg)
    assert torch.bfloat16 in seen  # the networks ran under autocast while training
    with open(run / "log.csv", newline="") as f:
        bpp = [float(r["bpp"]) for r in csv.DictReader(f)]
    assert bpp[-1] < bpp[0]
    trained, _ = load_checkpoint(run / "final.pt", calibrated=False)
    assert all(p.dtype == torch.float32 for p in trained.parameters())


def _tiny(tmp_path, out, **kw):
    images = _synthetic_images(tmp_path / "images", count=4, size=96)
    return TE.EntropyConfig(model="mbt2018-mean", transforms=str(_transforms(tmp_path)),
                            qualities=(1, 6), out_dir=str(tmp_path / out), crops=32, crop=64,
                            steps=40, warmup_steps=5, log_every=10, eval_images=1,
                            eval_crop=64, data=(str(images),), ckpt_every=10, **kw)


def _final_state(run):
    model, _ = load_checkpoint(run / "final.pt", calibrated=False)
    return model.state_dict()


@needs_kodak
def test_a_run_stopped_and_resumed_logs_and_ends_exactly_like_one_that_never_stopped(
        tmp_path, monkeypatch):
    monkeypatch.setenv("NIC_CACHE_DIR", str(tmp_path / "cache"))
    straight = TE.train_entropy(_tiny(tmp_path, "straight"))
    assert not (straight / "ckpt.pt").exists()  # a finished run keeps final.pt only

    real_lr = TE.T.learning_rate

    def stop_at_25(step, tcfg):
        if step == 25:
            raise KeyboardInterrupt  # what the end of a session does to a run
        return real_lr(step, tcfg)

    monkeypatch.setattr(TE.T, "learning_rate", stop_at_25)
    with pytest.raises(KeyboardInterrupt):
        TE.train_entropy(_tiny(tmp_path, "stopped"))
    monkeypatch.setattr(TE.T, "learning_rate", real_lr)
    stopped = tmp_path / "stopped"
    assert torch.load(stopped / "ckpt.pt", weights_only=False)["step"] == 20
    snap = TE.snapshot_final(stopped, tmp_path / "snapshot.pt")  # what a session end ships
    snap_model, snap_ckpt = load_checkpoint(snap, calibrated=False)
    assert snap_ckpt["step"] == 20 and snap_ckpt["snapshot_of"] == str(stopped)
    with pytest.raises(FileExistsError, match="--resume"):
        TE.train_entropy(_tiny(tmp_path, "stopped"))  # never starts over an unfinished run
    TE.main(["--resume", str(stopped)])
    rows = [open(run / "log.csv").read().splitlines() for run in (straight, stopped)]
    strip = [[",".join(c for i, c in enumerate(r.split(",")) if i != 1) for r in rs]
             for rs in rows]  # column 1 is wall_s
    assert strip[0] == strip[1]
    a, b = _final_state(straight), _final_state(stopped)
    assert all(torch.equal(a[k], b[k]) for k in a)


@needs_kodak
def test_a_snapshot_continues_the_schedule_with_its_entropy_model(tmp_path, monkeypatch):
    monkeypatch.setenv("NIC_CACHE_DIR", str(tmp_path / "cache"))
    first = TE.train_entropy(_tiny(tmp_path, "first"))
    cfg = _tiny(tmp_path, "continued", init_from=str(first / "final.pt"), start_step=30)
    run = TE.train_entropy(cfg)
    with open(run / "log.csv", newline="") as f:
        log = list(csv.DictReader(f))
    assert [int(r["step"]) for r in log] == [40]  # steps 30-39: the schedule's last ten
    resolved = json.loads((run / "config.json").read_text())["resolved"]["warm_start"]
    assert resolved["entropy_model"]["loaded"] > 0  # the snapshot's entropy model, not a fresh one
    with pytest.raises(ValueError, match="--init-from"):
        TE.train_entropy(_tiny(tmp_path, "bad", start_step=30))
    with pytest.raises(FileNotFoundError, match="ckpt.pt"):
        TE.resume_config(tmp_path / "nowhere")


@needs_kodak
def test_a_run_keeps_its_entropy_model_every_keep_every_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("NIC_CACHE_DIR", str(tmp_path / "cache"))
    run = TE.train_entropy(_tiny(tmp_path, "kept", keep_every=20))
    assert TE.kept_snapshots(run) == [20]  # not at the last step: final.pt is that one
    model, ckpt = load_checkpoint(TE.kept_snapshot(run, 20, tmp_path / "at20.pt"), calibrated=False)
    assert ckpt["step"] == 20 and ckpt["snapshot_of"] == str(run)
    kept = torch.load(run / "snapshots" / "step-000020.pt", weights_only=True)["model"]
    weights = dict(model.named_parameters())  # (the coder tables are rebuilt on loading)
    assert weights and all(torch.equal(w, kept[k]) for k, w in weights.items())
    final = _final_state(run)
    assert any(not torch.equal(final[k], kept[k]) for k in weights)  # it trained on after step 20
    with pytest.raises(FileNotFoundError, match=r"kept no model at step 30; it kept \[20\]"):
        TE.kept_snapshot(run, 30, tmp_path / "at30.pt")
    assert TE.kept_snapshots(TE.train_entropy(_tiny(tmp_path, "none", keep_every=0))) == []
