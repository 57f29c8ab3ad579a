"""Properties of the variable-rate (gain unit) models and their training.

Tiny widths and small smooth images, as tests/test_models.py; the training tests reuse
synthetic images written to a temporary folder.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from nic_lib import train as T
from nic_lib.models import (
    CheckpointNotFoundError,
    build_model,
    default_config,
    get_model,
    load_checkpoint,
    save_checkpoint,
    variable_rate_checkpoint_path,
)
from nic_lib.models.variable_rate import (
    GainUnit,
    LeveledEntropyBottleneck,
    is_variable_rate,
    level_for_step,
    make_variable_rate,
    rate_levels,
    set_rate_level,
)

TINY = {"N": 8, "M": 12}
LMBDAS = [0.0018, 0.0067, 0.0483]
ALL_MODELS = ["bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean", "mbt2018",
              "mbt2018-context", "mbt2018-gmm", "mbt2018-checkerboard"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def smooth_image(seed: int = 0, side: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, side // 8, side // 8, generator=g)
    return F.interpolate(coarse, size=(side, side), mode="bicubic",
                         align_corners=False).clamp(0, 1)


def _trained_magnitudes(model: torch.nn.Module) -> torch.nn.Module:
    """Scale g_a's last convolution so latents have the spread of a trained model's.

    A fresh model's latents are tiny: at every gain they round to zero and every level
    codes the same bits, which would make the rate properties below vacuous.
    """
    last = [m for m in model.g_a.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.mul_(LATENT_SCALE)
        last.bias.mul_(LATENT_SCALE)
    return model


#: Factor on g_a's output in the tests: latents of a few units, as after training.
LATENT_SCALE = 30.0


def vr_model(name: str, seed: int = 0, reference: float | None = None) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = {**default_config(name, 1), **TINY, "lmbdas": LMBDAS}
    if reference is not None:
        config["reference_lmbda"] = reference
    return _trained_magnitudes(build_model(name, **config))


def test_initial_gains_follow_the_square_root_of_lambda():
    unit = GainUnit(5, LMBDAS, reference_lmbda=0.0067)
    inverse = GainUnit(5, LMBDAS, reference_lmbda=0.0067, inverse=True)
    for level, lmbda in enumerate(LMBDAS):
        unit.level = inverse.level = level
        # γ_l = (λ_l / λ_ref)^½ and γ'_l = 1 / γ_l
        expected = math.sqrt(lmbda / 0.0067)
        assert torch.allclose(unit.gain(), torch.full((1, 5, 1, 1), expected))
        assert torch.allclose(unit.gain() * inverse.gain(), torch.ones(1, 5, 1, 1))


def test_bad_lambdas_are_refused():
    with pytest.raises(ValueError, match="positive"):
        GainUnit(4, [0.01, 0.0], reference_lmbda=0.01)
    model = vr_model("mbt2018-mean")
    with pytest.raises(ValueError, match="already variable-rate"):
        make_variable_rate(model, LMBDAS)


@pytest.mark.parametrize("name", [m for m in ALL_MODELS if m != "bmshj2018-factorized"])
def test_every_model_becomes_variable_rate_and_rate_grows_with_level(name):
    # (not the factorized prior: its untrained per-level densities are flat, so every
    # symbol costs about the same; its levels are checked after training below)
    model = vr_model(name).eval()
    assert is_variable_rate(model) and rate_levels(model) == LMBDAS
    x = smooth_image(1)
    bits = []
    with torch.no_grad():
        for level in range(len(LMBDAS)):
            out = set_rate_level(model, level)(x)
            assert out["x_hat"].shape == x.shape
            bits.append(sum(-torch.log2(v).sum().item() for v in out["likelihoods"].values()))
    # a larger gain is a finer quantizer of the same latent: more bits (untrained latents
    # are small, so the two lowest levels may both round everything to zero)
    assert bits[0] <= bits[1] <= bits[2] and bits[0] < bits[2], bits


#: Models whose eval-mode forward rounds the latents exactly as their coder does (the
#: context models' forward cannot know the serially predicted means: see neural.code_image).
CODER_EXACT_FORWARD = ["bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean"]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_decoder_reproduces_the_encoder_at_every_level(name):
    model = vr_model(name).eval()
    model.update(force=True)
    x = smooth_image(2)
    sizes = []
    for level in range(len(LMBDAS)):
        set_rate_level(model, level)
        coded = model.compress(x)
        sizes.append(sum(len(s) for streams in coded["strings"] for s in streams))
        x_hat = model.decompress(coded["strings"], coded["shape"])["x_hat"]
        again = model.decompress(coded["strings"], coded["shape"])["x_hat"]
        assert torch.equal(x_hat, again)
        if name in CODER_EXACT_FORWARD:
            with torch.no_grad():
                reference = model(x)["x_hat"].clamp(0, 1)  # decompress clamps
            # the gain is applied identically on both sides: same reconstruction
            assert torch.allclose(x_hat, reference, atol=1e-4), (name, level)
    assert sizes[0] < sizes[-1], sizes


def test_factorized_prior_gets_one_density_per_level():
    model = vr_model("bmshj2018-factorized")
    assert isinstance(model.entropy_bottleneck, LeveledEntropyBottleneck)
    assert len(model.entropy_bottleneck.bottlenecks) == len(LMBDAS)
    # CompressAI's aux loss walks named_modules: every level's quantiles are trained
    assert model.aux_loss().requires_grad


def test_fixed_rate_model_rejects_level_selection():
    torch.manual_seed(0)
    model = build_model("mbt2018-mean", **{**default_config("mbt2018-mean", 1), **TINY})
    with pytest.raises(ValueError, match="fixed-rate"):
        set_rate_level(model, 0)
    with pytest.raises(ValueError, match="out of range"):
        set_rate_level(vr_model("mbt2018-mean"), 3)


def test_level_schedule_is_cyclic():
    assert [level_for_step(s, 3) for s in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_warm_start_at_the_reference_level_reproduces_the_fixed_rate_model(tmp_path):
    torch.manual_seed(3)
    fixed = _trained_magnitudes(build_model("mbt2018", **{**default_config("mbt2018", 3), **TINY}))
    path = save_checkpoint(fixed, tmp_path / "fixed.pt", {"quality": 3})
    model = vr_model("mbt2018", seed=9, reference=LMBDAS[1])
    report = T.warm_start(model, path)
    # everything but the two new gain tensors comes from the fixed-rate model
    assert report["new"] == 2 and report["skipped"] == 0
    x = smooth_image(4)
    fixed.eval(), model.eval()
    with torch.no_grad():
        expected = fixed(x)["x_hat"]
        assert torch.allclose(set_rate_level(model, 1)(x)["x_hat"], expected, atol=1e-5)
        assert not torch.allclose(set_rate_level(model, 0)(x)["x_hat"], expected, atol=1e-3)


def test_warm_start_maps_the_checkerboard_latent_codec_and_keeps_its_mask(tmp_path):
    torch.manual_seed(3)
    joint = build_model("mbt2018", **{**default_config("mbt2018", 3), **TINY})
    path = save_checkpoint(joint, tmp_path / "joint.pt", {"quality": 3})
    board = build_model("mbt2018-checkerboard",
                        **{**default_config("mbt2018-checkerboard", 3), **TINY})
    mask = board.latent_codec["y"].context_prediction.mask.clone()
    T.warm_start(board, path)
    assert torch.equal(board.latent_codec["hyper"].h_a[0].weight, joint.h_a[0].weight)
    assert torch.equal(board.latent_codec["y"].context_prediction.mask, mask)


def test_variable_rate_checkpoint_serves_every_quality(tmp_path, monkeypatch):
    monkeypatch.setenv("NIC_CHECKPOINT_DIR", str(tmp_path))
    model = vr_model("mbt2018-mean").eval()
    model.update(force=True)
    config = {**default_config("mbt2018-mean", 1), **TINY, "quality": None,
              "qualities": [1, 3, 6]}
    save_checkpoint(model, variable_rate_checkpoint_path("mbt2018-mean"), config,
                    dtype=torch.float16)
    loaded, checkpoint = load_checkpoint(variable_rate_checkpoint_path("mbt2018-mean"))
    assert checkpoint["config"]["lmbdas"] == LMBDAS
    x = smooth_image(5)
    sizes = []
    for level, quality in enumerate([1, 3, 6]):
        served = get_model("mbt2018-mean", quality)
        assert served.gain.level == level
        sizes.append(sum(len(s[0]) for s in served.compress(x)["strings"]))
    assert sizes[0] <= sizes[1] <= sizes[2] and sizes[0] < sizes[2]
    with pytest.raises(CheckpointNotFoundError, match=r"qualities \[1, 3, 6\]"):
        get_model("mbt2018-mean", 2)


def _images(folder, count=6, size=96):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        coarse = rng.uniform(0, 255, (4, 4, 3)).astype(np.uint8)
        img = np.asarray(Image.fromarray(coarse).resize((size, size),
                                                        Image.Resampling.BICUBIC))
        Image.fromarray(img).save(folder / f"img{i}.png")
    return folder


def test_variable_rate_training_run_learns_every_level(tmp_path, monkeypatch):
    monkeypatch.setenv("NIC_CACHE_DIR", str(tmp_path / "cache"))
    images = _images(tmp_path / "images")
    cfg = T.TrainConfig(model="mbt2018-mean", N=8, M=8, qualities=(1, 4), data=(str(images),),
                        crop=64, batch_size=4, lr=3e-3, warmup_steps=2, max_steps=24,
                        log_every=4, ckpt_every=0, eval_every=0, out_dir=str(tmp_path / "run"),
                        progress=False, threads=1)
    run = T.train(cfg)
    model, checkpoint = load_checkpoint(run / "final.pt")
    assert checkpoint["config"]["qualities"] == [1, 4]
    assert checkpoint["config"]["lmbdas"] == [T.registry.LAMBDA_MSE[1], T.registry.LAMBDA_MSE[4]]
    with open(run / "log.csv", newline="") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert losses[-1] < losses[0]
    # the two levels moved apart: the high-λ level codes more bits
    x = smooth_image(6)
    with torch.no_grad():
        bpp = [sum(-torch.log2(v).sum().item() for v in
                   set_rate_level(model, level)(x)["likelihoods"].values()) for level in (0, 1)]
    assert bpp[0] < bpp[1]


def test_variable_rate_flags_are_checked(tmp_path):
    with pytest.raises(ValueError, match="distinct qualities"):
        T._check(T.TrainConfig(qualities=(1, 1)), 1)
    with pytest.raises(ValueError, match="drop one"):
        T._check(T.TrainConfig(qualities=(1, 2), lmbda=0.01), 1)
    with pytest.raises(ValueError, match="no such file"):
        T._check(T.TrainConfig(init_from=str(tmp_path / "none.pt")), 1)
    with pytest.raises(ValueError, match="no context model"):
        T.model_config(T.TrainConfig(model="mbt2018-mean", context_size=3))
    assert T.model_config(T.TrainConfig(model="mbt2018", context_size=7))["context_size"] == 7


def test_time_clock_finishes_the_decay_when_time_runs_out():
    cfg = T.TrainConfig(lr=1e-3, warmup_steps=0, max_steps=1000, lr_decay_steps=1000,
                        min_lr_ratio=0.1, max_minutes=10, schedule_clock="time")
    assert T.learning_rate(10, cfg, elapsed_s=0) == pytest.approx(1e-3, rel=1e-3)
    # half the minutes gone after 1% of the steps: the schedule is half-way
    assert T.learning_rate(10, cfg, elapsed_s=300) == pytest.approx(0.55e-3, rel=1e-6)
    assert T.learning_rate(10, cfg, elapsed_s=600) == pytest.approx(1e-4)
    steps = T.TrainConfig(**{**cfg.__dict__, "schedule_clock": "steps"})
    assert T.learning_rate(10, steps, elapsed_s=600) > 9e-4


def test_context_only_model_trains_without_an_aux_optimizer(tmp_path, monkeypatch):
    # mbt2018-context has no factorized density, so no quantiles for the aux optimizer
    monkeypatch.setenv("NIC_CACHE_DIR", str(tmp_path / "cache"))
    images = _images(tmp_path / "images", count=2)
    cfg = T.TrainConfig(model="mbt2018-context", N=8, M=8, qualities=(1, 4),
                        data=(str(images),), crop=64, batch_size=2, max_steps=4,
                        log_every=2, ckpt_every=2, eval_every=0, out_dir=str(tmp_path / "run"),
                        progress=False, threads=1)
    run = T.train(cfg)
    assert (run / "final.pt").is_file()
    resumed = T.train(T.TrainConfig(), resume=run, overrides={"max_steps": 6})
    assert torch.load(resumed / "ckpt.pt", weights_only=False)["step"] == 6


def test_warm_start_pads_the_context_kernel_to_a_larger_context_exactly(tmp_path):
    torch.manual_seed(3)
    five = build_model("mbt2018", **{**default_config("mbt2018", 3), **TINY})
    path = save_checkpoint(five, tmp_path / "k5.pt", {"quality": 3})
    seven = build_model("mbt2018", **{**default_config("mbt2018", 3), **TINY, "context_size": 7})
    three = build_model("mbt2018", **{**default_config("mbt2018", 3), **TINY, "context_size": 3})
    assert T.warm_start(seven, path)["resized"] == 1
    assert T.warm_start(three, path)["resized"] == 1
    assert torch.equal(three.context_prediction.weight, five.context_prediction.weight[..., 1:4, 1:4])
    x = smooth_image(4)
    five.eval(), seven.eval()
    with torch.no_grad():  # zero-padded taps: the k=7 model computes the k=5 model's function
        a, b = five(x), seven(x)
    assert torch.allclose(a["x_hat"], b["x_hat"], atol=1e-6)
    assert torch.allclose(a["likelihoods"]["y"], b["likelihoods"]["y"], atol=1e-6)


def test_density_prefit_lowers_every_levels_rate_and_places_its_quantiles():
    model = vr_model("bmshj2018-factorized")
    x = torch.cat([smooth_image(s) for s in range(4)])
    before = [b.loss().item() for b in model.entropy_bottleneck.bottlenecks]
    report = T.prefit_densities(model, x, steps=60)
    assert [r["level"] for r in report] == [0, 1, 2]
    for r, aux_before in zip(report, before):
        assert r["bits_per_latent_end"] < r["bits_per_latent_start"]
        assert r["aux_loss_end"] < aux_before
    # the transforms are untouched: only the densities moved
    fresh = vr_model("bmshj2018-factorized")
    assert torch.equal(model.g_a[0].weight, fresh.g_a[0].weight)


def test_density_prefit_refuses_models_without_per_level_densities():
    with pytest.raises(ValueError, match="bmshj2018-factorized"):
        T.prefit_densities(vr_model("mbt2018-mean"), smooth_image(), steps=1)
