"""Tests for nic_lib.train: a seeded tiny run that learns, reproducibility, resume, DDP.

Runs use a tiny mbt2018 (N = M = 8) on 64x64 crops of synthetic images written to a
temporary folder, so they need no shared data and take about a second each. The DDP test
starts two processes with torchrun on the gloo backend (CPU) and is marked slow.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nic_lib.training import precision as precision_mod
from PIL import Image

import nic_lib
from nic_lib import train as T
from nic_lib.models import load_checkpoint, quality_models

REPO_ROOT = Path(nic_lib.__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared" / "data"
needs_kodak = pytest.mark.skipif(
    not (SHARED / "kodak").is_dir(),
    reason=f"shared data folder {SHARED} is absent (it exists only on the project's machines)",
)
#: Columns of log.csv whose values do not depend on timing.
DETERMINISTIC_COLUMNS = ("step", "lr", "loss", "mse", "psnr", "bpp", "aux_loss")
STEPS = 30


def _synthetic_images(folder: Path, count: int = 8, size: int = 96) -> Path:
    """Smooth random colour fields with a little noise: learnable in a few steps."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        coarse = rng.uniform(0, 255, (4, 4, 3)).astype(np.uint8)
        img = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))
        img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img{i}.png")
    return folder


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Synthetic training folder and a private pool cache, shared by this module's tests."""
    root = tmp_path_factory.mktemp("train")
    images = _synthetic_images(root / "images")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NIC_CACHE_DIR", str(root / "cache"))
        yield root, images


def _config(images: Path, out: Path, **changes) -> T.TrainConfig:
    base = T.TrainConfig(
        N=8, M=8, lmbda=0.01, data=(str(images),), crop=64, batch_size=4, lr=3e-3,
        warmup_steps=3, lr_decay_steps=STEPS, max_steps=STEPS, log_every=5, ckpt_every=10,
        eval_every=0, ema=0.9, out_dir=str(out), progress=False, threads=1)
    return dataclasses.replace(base, **changes)


def _log(run: Path, columns=DETERMINISTIC_COLUMNS) -> list[tuple[str, ...]]:
    with open(run / "log.csv", newline="") as f:
        return [tuple(r[c] for c in columns) for r in csv.DictReader(f)]


def _params(file: Path, key: str = "model") -> dict[str, torch.Tensor]:
    return torch.load(file, map_location="cpu", weights_only=False)[key]


@pytest.fixture(scope="module")
def reference_run(workdir):
    """The uninterrupted 30-step run every other run is compared with."""
    root, images = workdir
    return T.train(_config(images, root / "reference"))


def test_tiny_run_loss_decreases(reference_run):
    losses = [float(r[2]) for r in _log(reference_run)]
    assert len(losses) == STEPS // 5
    assert losses[-1] < 0.5 * losses[0]


def test_log_has_expected_columns(reference_run):
    with open(reference_run / "log.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == T.LOG_COLUMNS
    assert [int(r["step"]) for r in rows] == list(range(5, STEPS + 1, 5))
    assert all(float(r["images_per_s"]) > 0 and float(r["bpp"]) > 0 for r in rows)


def test_same_seed_gives_identical_logs(workdir, reference_run):
    root, images = workdir
    again = T.train(_config(images, root / "again"))
    assert _log(again) == _log(reference_run)
    other_seed = T.train(_config(images, root / "seed1", seed=1, max_steps=5))
    assert _log(other_seed)[0] != _log(reference_run)[0]


def test_resume_reproduces_uninterrupted_run(workdir, reference_run):
    root, images = workdir
    cut = T.train(_config(images, root / "cut", max_steps=STEPS // 2))
    assert torch.load(cut / "ckpt.pt", weights_only=False)["step"] == STEPS // 2
    resumed = T.train(T.TrainConfig(), resume=cut, overrides={"max_steps": STEPS})
    assert resumed == cut
    assert _log(resumed) == _log(reference_run)
    want, got = _params(reference_run / "ckpt.pt"), _params(resumed / "ckpt.pt")
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name


def test_resume_refuses_changes_to_the_maths(workdir, reference_run):
    with pytest.raises(ValueError, match="lr"):
        T.train(T.TrainConfig(), resume=reference_run, overrides={"lr": 1.0})


def test_final_checkpoint_holds_the_ema_weights(reference_run):
    model, final = load_checkpoint(reference_run / "final.pt")  # self-describing
    assert final["model"] == "mbt2018" and (final["config"]["N"], final["config"]["M"]) == (8, 8)
    assert final["config"]["train_config"]["ema"] == 0.9 and final["step"] == STEPS
    ema = _params(reference_run / "ckpt.pt", "ema")
    trained = _params(reference_run / "ckpt.pt")
    name = "g_a.0.weight"
    assert torch.equal(model.state_dict()[name], ema[f"module.{name}"])
    assert not torch.equal(model.state_dict()[name], trained[name])


@pytest.mark.parametrize("name", quality_models())
def test_sample_keyed_noise_does_not_depend_on_batch_split(name):
    torch.manual_seed(0)
    M = 136 if name == "elic2022" else 8  # ELIC's channel groups need M > 128
    model = T.build_model(T.TrainConfig(model=name, N=8, M=M)).train()
    noise = T.SampleKeyedNoise(model, seed=3)
    x = torch.rand(4, 3, 64, 64)
    noise.begin_step(7, range(4))
    whole = model(x)
    halves = []
    for rows in (range(0, 2), range(2, 4)):
        noise.begin_step(7, rows)
        halves.append(model(x[rows.start:rows.stop]))
    for key, value in whole["likelihoods"].items():
        split = torch.cat([h["likelihoods"][key] for h in halves])
        torch.testing.assert_close(split, value)
    noise.begin_step(8, range(4))  # another step draws other noise
    again = model(x)["likelihoods"]
    assert not all(torch.allclose(again[k], v) for k, v in whole["likelihoods"].items())


def test_crops_depend_only_on_seed_and_step(workdir):
    _, images = workdir
    pool = T.load_pool(T.training_files([str(images)]))
    sampler = T.CropSampler(pool, crop=64, global_batch=4, seed=0)
    whole = sampler.batch(5)
    split = np.concatenate([sampler.batch(5, rank=r, world=2) for r in (0, 1)])
    assert np.array_equal(whole, split)
    assert not np.array_equal(whole, sampler.batch(6))
    fresh = T.CropSampler(pool, crop=64, global_batch=4, seed=0)
    assert np.array_equal(fresh.batch(5), whole)  # no hidden state carried between steps


def test_jpeg_sources_are_downscaled_before_cropping(tmp_path, monkeypatch):
    monkeypatch.setenv("NIC_CACHE_DIR", str(tmp_path / "cache"))
    # a horizontal ramp, value = x: downscaling by s makes it rise by 1/s per pixel
    ramp = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, :, None], (256, 256, 3))
    (tmp_path / "jpg").mkdir()
    Image.fromarray(np.ascontiguousarray(ramp)).save(tmp_path / "jpg" / "ramp.jpg", quality=95)
    Image.fromarray(np.ascontiguousarray(ramp)).save(tmp_path / "jpg" / "ramp.png")
    pool = T.load_pool(T.training_files([str(tmp_path / "jpg")]))
    assert pool.downscale.tolist() == [True, False]  # ramp.jpg, ramp.png (sorted)
    sampler = T.CropSampler(pool, crop=96, global_batch=32, seed=0)
    crops = sampler.batch(0).astype(float)
    slopes = np.diff(crops[:, 8:-8, 8:-8, 0], axis=2).mean(axis=(1, 2))
    from_jpeg = np.array([sampler._image_index(k) == 0 for k in range(32)])
    assert from_jpeg.any() and (~from_jpeg).any()
    # s in [0.5, 0.75] -> slope 1/s in [1.33, 2]; the PNG is cropped as it is (slope 1)
    assert np.all((slopes[from_jpeg] > 1.3) & (slopes[from_jpeg] < 2.05))
    np.testing.assert_allclose(slopes[~from_jpeg], 1.0, atol=0.02)


@pytest.mark.parametrize("spec", ["blur:1", "noise:8"])
def test_filtered_crops_depend_only_on_seed_and_step(workdir, spec):
    _, images = workdir
    pool = T.load_pool(T.training_files([str(images)]))
    sampler = T.CropSampler(pool, crop=64, global_batch=4, seed=0, data_filter=spec)
    whole = sampler.batch(5)
    assert not np.array_equal(whole, T.CropSampler(pool, crop=64, global_batch=4, seed=0).batch(5))
    split = np.concatenate([sampler.batch(5, rank=r, world=2) for r in (0, 1)])
    assert np.array_equal(whole, split)  # the noise of a row does not depend on the ranks
    fresh = T.CropSampler(pool, crop=64, global_batch=4, seed=0, data_filter=spec)
    assert np.array_equal(fresh.batch(5), whole)  # as a resumed run sees it
    assert whole.dtype == np.uint8 and not np.array_equal(whole, sampler.batch(6))


def _band_energies(crops: np.ndarray) -> dict[str, float]:
    from nic_lib import spectral

    return spectral.band_energies(spectral.mean_power_spectrum(crops - crops.mean(axis=(1, 2), keepdims=True)))


def test_blur_lowers_and_noise_raises_the_high_band_and_both_keep_the_mean():
    # white random texture around mid-grey: power in every band, no clipping
    texture = np.clip(np.rint(128 + 30 * np.random.default_rng(0).standard_normal((4, 64, 64, 3))), 0, 255)
    texture = texture.astype(np.uint8)
    before = _band_energies(texture)
    for spec, lower, upper in (("blur:1", 0, 0.1), ("noise:20", 1.3, np.inf)):
        after = T.filter_crops(texture, T.parse_data_filter(spec), seed=0, step=0, rows=range(4))
        assert after.dtype == np.uint8 and after.shape == texture.shape
        ratio = _band_energies(after)["high"] / before["high"]
        assert lower < ratio < upper, (spec, ratio)
        assert abs(after.astype(float).mean() - texture.astype(float).mean()) < 0.5, spec


@pytest.mark.parametrize("spec", ["blur", "gauss:1", "blur:abc", "noise:nan", "blur:-1", "blur:0",
                                  "noise:0", "noise:500", ":3"])
def test_a_bad_data_filter_is_refused_naming_the_accepted_forms(spec):
    with pytest.raises(ValueError, match=r"blur:SIGMA .* or noise:SIGMA"):
        T.parse_data_filter(spec)
    with pytest.raises(ValueError, match="--data-filter"):
        T.check_config(T.TrainConfig(data_filter=spec), world=1)


def test_a_zero_strength_filter_is_refused_not_read_as_no_filter():
    with pytest.raises(ValueError, match="leave --data-filter out"):
        T.parse_data_filter("noise:0")
    T.check_config(T.TrainConfig(data_filter=None), world=1)  # no flag: the crops as they are


def test_a_filtered_run_records_its_filter_and_resumes_on_the_same_data(workdir, reference_run):
    root, images = workdir
    steps = 10
    whole = T.train(_config(images, root / "noisy", data_filter="noise:8", max_steps=steps,
                            lr_decay_steps=steps))
    assert json.loads((whole / "config.json").read_text())["config"]["data_filter"] == "noise:8"
    _, final = load_checkpoint(whole / "final.pt")
    assert final["config"]["train_config"]["data_filter"] == "noise:8"
    assert _log(whole)[0] != _log(reference_run)[0]  # other data, other losses
    cut = T.train(_config(images, root / "noisy-cut", data_filter="noise:8", max_steps=steps // 2,
                          lr_decay_steps=steps))
    resumed = T.train(T.TrainConfig(), resume=cut, overrides={"max_steps": steps})
    assert _log(resumed) == _log(whole)
    with pytest.raises(ValueError, match="data_filter"):
        T.train(T.TrainConfig(), resume=cut, overrides={"data_filter": None})


def test_learning_rate_warms_up_then_decays_to_the_floor():
    cfg = T.TrainConfig(lr=1e-3, warmup_steps=10, lr_decay_steps=100, min_lr_ratio=0.1)
    lrs = [T.learning_rate(s, cfg) for s in range(120)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[100] == pytest.approx(1e-4) and lrs[119] == pytest.approx(1e-4)
    step = dataclasses.replace(cfg, lr_schedule="step", lr_milestones=(0.5,), lr_gamma=0.1)
    assert T.learning_rate(49, step) == pytest.approx(1e-3)
    assert T.learning_rate(50, step) == pytest.approx(1e-4)


def test_a_continued_schedule_warms_up_to_the_rate_it_has_at_its_start_step():
    cfg = T.TrainConfig(lr=1e-3, warmup_steps=10, lr_decay_steps=100, max_steps=100,
                        min_lr_ratio=0.1)
    cont = dataclasses.replace(cfg, start_step=40)
    # before the start step nothing changes, and the warm-up of a fresh run is the old one
    assert [T.learning_rate(s, cont) for s in range(10)] == [T.learning_rate(s, cfg)
                                                             for s in range(10)]
    # a linear ramp, over the warm-up, towards the schedule's (decaying) rate
    ramp = [T.learning_rate(s, cont) for s in range(40, 50)]
    assert ramp == pytest.approx([T.learning_rate(40 + k, cfg) * (k + 1) / 10 for k in range(10)])
    assert all(a < b for a, b in zip(ramp, ramp[1:], strict=False))
    # after the ramp, the continued schedule is the uninterrupted one
    assert [T.learning_rate(s, cont) for s in range(50, 120)] == [
        T.learning_rate(s, cfg) for s in range(50, 120)]


def test_start_step_continues_a_warm_started_run_from_that_step(workdir, reference_run):
    root, images = workdir
    run = T.train(_config(images, root / "continued", init_from=str(reference_run / "final.pt"),
                          start_step=20))
    steps = [int(r[0]) for r in _log(run)]
    assert steps == [25, 30]  # the counter, --max-steps and the schedule go on from step 20
    assert torch.load(run / "final.pt", weights_only=False)["step"] == STEPS
    with pytest.raises(ValueError, match="--init-from"):
        T.train(_config(images, root / "bad-start", start_step=20))
    with pytest.raises(ValueError, match="--start-step"):
        T.train(_config(images, root / "bad-start2", init_from=str(reference_run / "final.pt"),
                        start_step=STEPS))
    with pytest.raises(ValueError, match="time-clock"):  # its clock would restart at 0 s
        T.train(_config(images, root / "bad-start3", init_from=str(reference_run / "final.pt"),
                        start_step=20, schedule_clock="time", max_minutes=5))


def test_training_refuses_evaluation_sets(tmp_path):
    with pytest.raises(ValueError, match="evaluation set"):
        T.training_files(["kodak"])
    folder = tmp_path / "kodak"
    _synthetic_images(folder, count=1)
    with pytest.raises(ValueError, match="evaluation set"):
        T.training_files([str(folder)])


@needs_kodak
def test_training_refuses_a_renamed_copy_of_a_kodak_image(tmp_path, monkeypatch):
    monkeypatch.setenv("NIC_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "mine").mkdir()
    shutil.copy(SHARED / "kodak" / "kodim05.png", tmp_path / "mine" / "holiday.png")
    with pytest.raises(ValueError, match="kodim05"):
        T.load_pool(T.training_files([str(tmp_path / "mine")]))


@needs_kodak
def test_periodic_evaluation_logs_psnr_and_bpp(workdir):
    root, images = workdir
    run = T.train(_config(images, root / "eval", max_steps=4, log_every=2, eval_every=2,
                          eval_images=1, eval_crop=64, ema=None))
    with open(run / "eval.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert all(0 < float(r["bpp"]) and 0 < float(r["psnr"]) < 60 for r in rows)
    assert {r["weights"] for r in rows} == {"model"}


@needs_kodak
def test_evaluation_with_ema_measures_both_weights(workdir):
    root, images = workdir
    run = T.train(_config(images, root / "eval-ema", max_steps=4, log_every=2, eval_every=2,
                          eval_images=1, eval_crop=64, ema=0.5))
    with open(run / "eval.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["step"]), r["weights"]) for r in rows] == [
        (2, "model"), (2, "ema"), (4, "model"), (4, "ema")]
    # the average is not the trained weights: the two evaluations differ
    by = {(int(r["step"]), r["weights"]): float(r["bpp"]) for r in rows}
    assert by[(4, "model")] != by[(4, "ema")]


@pytest.mark.slow
def test_ddp_two_ranks_match_one_process_with_double_batch(workdir):
    root, images = workdir
    cfg = _config(images, root / "single", max_steps=5, ema=None, ckpt_every=0)
    single = T.train(cfg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "nic_lib.train", "--N", "8", "--M", "8", "--lmbda", "0.01", "--data",
           str(images), "--crop", "64", "--batch-size", "4", "--lr", "3e-3",
           "--warmup-steps", "3", "--lr-decay-steps", str(STEPS), "--max-steps", "5",
           "--log-every", "5", "--ckpt-every", "0", "--eval-every", "0", "--no-progress",
           "--out-dir", str(root / "ddp")]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = _params(single / "ckpt.pt"), _params(root / "ddp" / "ckpt.pt")
    torch.manual_seed(cfg.seed)
    init = T.build_model(cfg).state_dict()
    floats = [k for k in one if one[k].is_floating_point() and one[k].numel()]
    moved = max((one[k] - init[k]).abs().max().item() for k in floats)
    gaps = torch.cat([(one[k] - two[k]).abs().flatten() for k in floats])
    # Measured: 5 Adam steps move weights by up to ~7e-2. Two ranks differ from one process
    # by float rounding only (mean 3e-9, max 3e-5, on GDN gammas with tiny gradients that
    # Adam rescales). The same DDP run with per-rank global noise (--noise global), i.e.
    # the same images with other noise, differs by mean 1e-3, max 2e-2; another seed by
    # mean 5e-2. The bounds sit between float rounding and any change of the samples.
    assert moved > 1e-2
    assert gaps.mean().item() < 1e-6 and gaps.max().item() < 1e-3, (
        f"DDP differs from 1 process by mean {gaps.mean().item():.2g}, max "
        f"{gaps.max().item():.2g} (weights moved {moved:.2g})")
    np.testing.assert_allclose(np.array(_log(root / "ddp"), float),
                               np.array(_log(single), float), rtol=1e-5)


def test_init_only_and_freeze_train_a_fresh_entropy_model_on_fixed_transforms(workdir, reference_run):
    """The ablation protocol: transforms copied and frozen, the entropy model fresh and trained."""
    root, images = workdir
    source = reference_run / "final.pt"
    cfg = _config(images, root / "frozen", init_from=str(source), init_only=("g_a", "g_s"),
                  freeze=("g_a", "g_s"), max_steps=10, lr_decay_steps=10)
    run = T.train(cfg)
    before, after = _params(source, "state_dict"), _params(run / "ckpt.pt")
    torch.manual_seed(cfg.seed)
    fresh = T.build_model(cfg).state_dict()
    for key, value in after.items():
        if key.startswith(("g_a.", "g_s.")):
            assert torch.equal(value, before[key].to(value.dtype)), key  # copied, never trained
    moved = [k for k in after if k.startswith("h_s.") and k.endswith("weight")]
    assert moved and all(not torch.equal(after[k], before[k].to(after[k].dtype)) for k in moved)
    # not copied: h_a starts from its own init, not from the source's trained weights
    assert all(not torch.equal(after[k], before[k].to(after[k].dtype))
               for k in after if k.startswith("h_a.") and k.endswith("weight"))
    assert fresh.keys() == after.keys()


def test_freeze_refuses_unknown_modules_and_needs_a_warm_start(workdir, reference_run):
    root, images = workdir
    with pytest.raises(ValueError, match="has no parameters under"):
        T.train(_config(images, root / "bad1", init_from=str(reference_run / "final.pt"),
                        freeze=("g_x",), max_steps=2))
    with pytest.raises(ValueError, match="give --init-from"):
        T.train(_config(images, root / "bad2", freeze=("g_a",), max_steps=2))


def test_snapshot_of_a_run_holds_its_ema_weights_and_leaves_the_run_alone(workdir, reference_run, tmp_path):
    root, images = workdir
    ckpt = (reference_run / "ckpt.pt").read_bytes()
    snap = T.snapshot_final(reference_run, tmp_path / "snap.pt")
    model, saved = load_checkpoint(snap, calibrated=False)
    final, _ = load_checkpoint(reference_run / "final.pt", calibrated=False)
    # the run finished, so its last ckpt.pt and final.pt hold the same EMA weights
    for (k, a), b in zip(model.state_dict().items(), final.state_dict().values()):
        assert torch.equal(a, b), k
    assert saved["step"] == STEPS and (reference_run / "ckpt.pt").read_bytes() == ckpt
    with pytest.raises(ValueError, match="own final.pt"):
        T.snapshot_final(reference_run, reference_run / "final.pt")


@pytest.mark.parametrize("name", ["bmshj2018-factorized", "mbt2018"])
def test_settle_quantiles_moves_only_the_coder_range(name):
    from nic_lib.models import build_model

    torch.manual_seed(0)
    model = build_model(name, N=8, M=8).eval()
    with torch.no_grad():  # a "trained" density: away from its initialisation
        for n, p in model.named_parameters():
            if "entropy_bottleneck" in n and not n.endswith("quantiles"):
                p.add_(0.3 * torch.randn_like(p))
    x = torch.rand(1, 3, 64, 64)

    def noisy_likelihoods():  # training mode: y + u, the same u each time
        model.train()
        torch.manual_seed(1)
        with torch.no_grad():
            out = model(x)["likelihoods"]
        model.eval()
        return out

    before = noisy_likelihoods()
    # after a forward pass: the masked context convolution masks its weight in place
    weights = {n: p.clone() for n, p in model.named_parameters() if not n.endswith("quantiles")}
    report = T.settle_quantiles(model)
    assert report["aux_loss_after"] < 0.05 * report["aux_loss_before"]
    after = noisy_likelihoods()  # the densities did not change
    for key in before:
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)
    for n, p in model.named_parameters():
        if not n.endswith("quantiles"):
            assert torch.equal(p, weights[n]), n
        assert p.requires_grad  # flags restored
    out = model.compress(x)  # the coder works with the rebuilt tables
    assert model.decompress(out["strings"], out["shape"])["x_hat"].shape == x.shape


def test_resume_does_not_need_the_warm_start_source(workdir, reference_run, tmp_path):
    """A long run resumes from its ckpt.pt even when the file it was warm-started from moved."""
    root, images = workdir
    source = tmp_path / "source.pt"
    source.write_bytes((reference_run / "final.pt").read_bytes())
    cfg = _config(images, root / "warm-resume", init_from=str(source), max_steps=10, ckpt_every=5)
    run = T.train(cfg)
    source.unlink()
    resumed = T.train(T.TrainConfig(), resume=run, overrides={"max_steps": 15})
    assert int(_log(resumed)[-1][0]) == 15


def test_bf16_computes_in_fp32_where_the_machine_has_no_native_bfloat16(monkeypatch, capsys):
    monkeypatch.setattr(precision_mod, "native_bf16", lambda device_type="cpu": False)
    precision_mod._say_fallback.cache_clear()
    assert precision_mod.for_this_machine("bf16") == "fp32"
    assert precision_mod.for_this_machine("bf16") == "fp32"
    assert capsys.readouterr().err.count("no native bfloat16") == 1  # said once
    assert precision_mod.for_this_machine("fp32") == "fp32"
    monkeypatch.setattr(precision_mod, "native_bf16", lambda device_type="cpu": True)
    assert precision_mod.for_this_machine("bf16") == "bf16"
    with pytest.raises(ValueError, match="fp32, bf16"):
        precision_mod.for_this_machine("fp8")


def test_reduced_precision_runs_the_networks_in_bf16_and_the_densities_in_fp32():
    """--precision bf16: convolutions under bfloat16 autocast, every output cast back to
    float32, the likelihoods computed as in fp32; the hooks go away after the block."""
    torch.manual_seed(0)
    model = T.build_model(T.TrainConfig(model="mbt2018", N=16, M=24, lmbda=0.01)).train()
    x = torch.rand(2, 3, 64, 64)
    seen = {}
    probe = model.g_a[0].register_forward_hook(lambda m, a, out: seen.__setitem__("g_a0", out.dtype))
    with T.reduced_precision(model, "bf16"):
        out = model(x)
    probe.remove()
    assert seen["g_a0"] == torch.bfloat16  # inside: the convolutions ran in bfloat16
    assert out["x_hat"].dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in out["likelihoods"].values())
    # the same network in fp32 computes nearly the same latent (bfloat16: ~3 digits)
    with torch.no_grad():
        model.eval()
        with T.reduced_precision(model, "bf16"):
            y16 = model.g_a(x)
        y32 = model.g_a(x)
    assert y16.dtype == torch.float32
    torch.testing.assert_close(y16, y32, rtol=0.05, atol=0.05 * y32.abs().max().item())
    assert not (y16 == y32).all()  # it did compute in reduced precision
    for name in T.REDUCED_PRECISION_MODULES:
        net = getattr(model, name)
        assert not net._forward_hooks and not net._forward_pre_hooks, name


def test_reduced_precision_leaves_no_autocast_behind_when_a_forward_fails():
    torch.manual_seed(0)
    model = T.build_model(T.TrainConfig(model="mbt2018", N=16, M=24, lmbda=0.01))
    with pytest.raises(RuntimeError):
        with T.reduced_precision(model, "bf16"):
            model(torch.rand(1, 5, 64, 64))  # wrong channel count: g_a raises
    assert not torch.is_autocast_enabled("cpu")
    assert not model.g_a._forward_pre_hooks and not model.g_a._forward_hooks
    with pytest.raises(ValueError, match="fp32, bf16"):
        with T.reduced_precision(model, "fp16"):
            pass


def test_bf16_training_run_learns_like_fp32(workdir, monkeypatch):
    """A short run in bf16 ends near the fp32 run's loss (same seed, same crops)."""
    monkeypatch.setattr(precision_mod, "native_bf16", lambda device_type="cpu": True)
    root, images = workdir
    fp32 = T.train(_config(images, root / "p32", max_steps=20, lr_decay_steps=20, ema=None))
    bf16 = T.train(_config(images, root / "p16", max_steps=20, lr_decay_steps=20, ema=None,
                           precision="bf16"))
    a = [float(r[2]) for r in _log(fp32)]
    b = [float(r[2]) for r in _log(bf16)]
    assert b[-1] < b[0]  # it learns
    assert abs(b[-1] - a[-1]) < 0.15 * a[-1]
    with pytest.raises(ValueError, match="--precision"):
        T.train(_config(images, root / "p8", max_steps=2, precision="fp8"))
