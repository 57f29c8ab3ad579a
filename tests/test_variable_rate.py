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
    LAMBDA_MSE,
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
#: context models' forward cannot know the serially predicted means: see coding.code_image).
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
    assert checkpoint["config"]["lmbdas"] == [LAMBDA_MSE[1], LAMBDA_MSE[4]]
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
        T.check_config(T.TrainConfig(qualities=(1, 1)), 1)
    with pytest.raises(ValueError, match="drop one"):
        T.check_config(T.TrainConfig(qualities=(1, 2), lmbda=0.01), 1)
    with pytest.raises(ValueError, match="no such file"):
        T.check_config(T.TrainConfig(init_from=str(tmp_path / "none.pt")), 1)
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


# --- per-level hyperprior densities and the tail gradient (issue 3's real-vs-estimate gap) ---


def hyper_vr_model(name: str = "bmshj2018-hyperprior", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = {**default_config(name, 1), **TINY, "lmbdas": LMBDAS,
              "per_level_hyper_density": True}
    return _trained_magnitudes(build_model(name, **config))


@pytest.mark.parametrize("name", ["bmshj2018-hyperprior", "mbt2018-mean", "mbt2018"])
def test_per_level_hyper_density_codes_z_with_the_density_of_the_level(name):
    model = hyper_vr_model(name).eval()
    bottlenecks = model.entropy_bottleneck.bottlenecks
    assert len(bottlenecks) == len(LMBDAS)
    assert all(b.channels == TINY["N"] for b in bottlenecks)  # z has N channels, not M
    # make the levels' densities differ, then each level's z likelihood follows its own
    with torch.no_grad():
        for level, b in enumerate(bottlenecks):
            b.biases[0].add_(level)
    x = smooth_image(1)
    model.update(force=True)
    with torch.no_grad():
        for level in range(len(LMBDAS)):
            set_rate_level(model, level)
            y = model.analysis(x)  # g_a(x) ⊙ γ_level
            z = model.h_a(y.abs() if name == "bmshj2018-hyperprior" else y)
            _, expected = bottlenecks[level](z, training=False)
            assert torch.allclose(model(x)["likelihoods"]["z"], expected)
            # and the bitstream decodes with that level's density
            out = model.compress(x)
            y_hat = model.decompress(out["strings"], out["shape"])["x_hat"]
            assert y_hat.shape == x.shape


def test_per_level_hyper_density_survives_a_checkpoint_round_trip(tmp_path):
    model = hyper_vr_model()
    config = {**default_config("bmshj2018-hyperprior", 1), **TINY, "quality": None,
              "qualities": [1, 3, 6]}
    path = save_checkpoint(model, tmp_path / "vr.pt", config)
    loaded, checkpoint = load_checkpoint(path)
    assert checkpoint["config"]["per_level_hyper_density"] is True
    assert isinstance(loaded.entropy_bottleneck, LeveledEntropyBottleneck)
    for a, b in zip(loaded.entropy_bottleneck.bottlenecks, model.entropy_bottleneck.bottlenecks):
        assert torch.equal(a.matrices[0], b.matrices[0])


def test_per_level_hyper_density_is_refused_where_there_is_no_hyperprior():
    torch.manual_seed(0)
    config = {**default_config("bmshj2018-factorized", 1), **TINY}
    with pytest.raises(ValueError, match="no hyperprior density"):
        make_variable_rate(build_model("bmshj2018-factorized", **config), LMBDAS,
                           per_level_hyper_density=True)
    with pytest.raises(ValueError, match="needs a variable-rate run"):
        T.check_config(T.TrainConfig(model="bmshj2018-hyperprior", per_level_hyper_density=True), 1)


def test_warm_start_copies_a_shared_hyperprior_density_into_every_level(tmp_path):
    torch.manual_seed(3)
    shared = vr_model("bmshj2018-hyperprior", seed=3)
    with torch.no_grad():
        shared.entropy_bottleneck.biases[1].add_(0.25)  # not the fresh init
    path = save_checkpoint(shared, tmp_path / "shared.pt",
                           {**default_config("bmshj2018-hyperprior", 1), **TINY,
                            "quality": None, "qualities": [1, 3, 6]})
    model = hyper_vr_model(seed=5)
    report = T.warm_start(model, path)
    assert report["skipped"] == 0
    for b in model.entropy_bottleneck.bottlenecks:
        assert torch.equal(b.biases[1], shared.entropy_bottleneck.biases[1])
        assert torch.equal(b.quantiles, shared.entropy_bottleneck.quantiles)


def test_density_prefit_fits_each_levels_hyper_latent_density():
    model = hyper_vr_model()
    x = torch.cat([smooth_image(s) for s in range(4)])
    g_a = model.g_a[0].weight.clone()
    report = T.prefit_densities(model, x, steps=60)
    assert [r["level"] for r in report] == [0, 1, 2]
    assert all(r["bits_per_latent_end"] < r["bits_per_latent_start"] for r in report)
    assert torch.equal(model.g_a[0].weight, g_a)
    assert model.gain.level == len(LMBDAS) - 1 and model.training  # left as found


def _gaussian_bits(module, y_hat, sigma):
    _, likelihood = module(y_hat, sigma, training=False)
    return -torch.log2(likelihood)


def test_tail_gradient_keeps_the_values_and_adds_the_missing_gradient():
    from nic_lib.models.entropy_models import GaussianConditional

    plain, patched = GaussianConditional(None), GaussianConditional(None)
    model = torch.nn.Module()
    model.gaussian_conditional = patched
    assert T.tail_gradient(model) == 1
    # near the mean, 3σ out, and 13σ out (beyond the 1e-9 floor)
    y_hat = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float32)
    sigma = torch.tensor([1.0, 0.3, 0.15, 0.2], requires_grad=True)
    bits_plain = _gaussian_bits(plain, y_hat, sigma)
    bits_patched = _gaussian_bits(patched, y_hat, sigma)
    assert torch.allclose(bits_plain, bits_patched, rtol=1e-4)  # the estimate is unchanged
    (g_plain,) = torch.autograd.grad(bits_plain.sum(), sigma)
    (g_patched,) = torch.autograd.grad(bits_patched.sum(), sigma)
    assert torch.allclose(g_plain[:2], g_patched[:2], rtol=1e-3)
    # CompressAI: beyond the floor the gradient all but vanishes (Φ's tail underflows)
    assert torch.all(g_plain[2:].abs() < 1e-6 * g_patched[2:].abs())
    # the patched gradient is that of the exact −log2 p, computed in float64
    s64 = sigma.detach().double().requires_grad_(True)
    v = y_hat.double()
    p = torch.special.ndtr((0.5 - v) / s64) - torch.special.ndtr((-0.5 - v) / s64)
    log_p = torch.where(p > 0, torch.log(p.clamp_min(1e-300)),
                        torch.special.log_ndtr((0.5 - v) / s64))
    (g_exact,) = torch.autograd.grad((-log_p / math.log(2)).sum(), s64)
    assert torch.allclose(g_patched[2:].double(), g_exact[2:], rtol=0.1)
    assert torch.all(g_patched[2:] < 0)  # a wider σ costs fewer bits: training widens it


def test_tail_gradient_is_refused_without_a_gaussian_model():
    torch.manual_seed(0)
    model = build_model("bmshj2018-factorized",
                        **{**default_config("bmshj2018-factorized", 1), **TINY})
    with pytest.raises(ValueError, match="no Gaussian conditional"):
        T.tail_gradient(model)


def test_a_run_with_levels_below_quality_1_warm_starts_from_a_grown_checkpoint(tmp_path, monkeypatch):
    """The n96-lowrate recipe in miniature: levels q-4 and q0 added (add_levels), then trained."""
    from nic_lib.models import LOW_RATE_QUALITIES
    from nic_lib.models.widen import add_levels

    monkeypatch.setenv("NIC_CACHE_DIR", str(tmp_path / "cache"))
    images = _images(tmp_path / "images")
    base = build_model("mbt2018", N=8, M=8, lmbdas=[LAMBDA_MSE[1], LAMBDA_MSE[4]], reference_lmbda=LAMBDA_MSE[1]).eval()
    base.update(force=True)
    config = {**default_config("mbt2018", 1), "N": 8, "M": 8, "quality": None, "qualities": [1, 4],
              "lmbdas": [LAMBDA_MSE[1], LAMBDA_MSE[4]], "reference_lmbda": LAMBDA_MSE[1]}
    qualities = [min(LOW_RATE_QUALITIES), 0, 1, 4]
    grown, grown_config = add_levels(base, config, qualities)
    save_checkpoint(grown, tmp_path / "grown.pt", grown_config)
    cfg = T.TrainConfig(model="mbt2018", N=8, M=8, qualities=tuple(qualities), data=(str(images),),
                        crop=64, batch_size=2, lr=1e-3, warmup_steps=1, max_steps=4, log_every=2,
                        ckpt_every=0, eval_every=0, out_dir=str(tmp_path / "run"), progress=False,
                        threads=1, init_from=str(tmp_path / "grown.pt"))
    model, checkpoint = load_checkpoint(T.train(cfg) / "final.pt")
    assert checkpoint["config"]["qualities"] == qualities
    assert checkpoint["config"]["lmbdas"] == [LAMBDA_MSE[q] for q in qualities]


def test_the_model_applies_its_gains_itself_without_hooks():
    """The model a reader opens is the model that runs: y = g_a(x) ⊙ γ_l in ``analysis``,
    g_s(ŷ ⊙ γ'_l) in ``synthesis``, and no hook anywhere in the module tree."""
    model = vr_model("mbt2018-mean").eval()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    x = smooth_image(2)
    with torch.no_grad():
        for level in range(len(LMBDAS)):
            set_rate_level(model, level)
            y0 = model.g_a(x)
            gain = model.gain.log_gain[level].exp().view(1, -1, 1, 1)
            assert torch.equal(model.analysis(x), y0 * gain)
            inverse = model.inverse_gain.log_gain[level].exp().view(1, -1, 1, 1)
            assert torch.equal(model.synthesis(y0), model.g_s(y0 * inverse))
            # forward from given latents is forward
            a, b = model(x), model.forward_latents(y0)
            assert torch.equal(a["x_hat"], b["x_hat"])
            for key in a["likelihoods"]:
                assert torch.equal(a["likelihoods"][key], b["likelihoods"][key])


def test_bf16_training_multiplies_the_bf16_analysis_output_by_the_gain_before_the_cast():
    """--precision bf16 keeps the arithmetic of the runs trained when the gain was a hook
    on g_a: g_a's bfloat16 output times the gain in bfloat16, then cast to float32."""
    model = vr_model("mbt2018").train()
    set_rate_level(model, 0)
    x = smooth_image(3)
    with torch.no_grad():
        with T.reduced_precision(model, "bf16"):
            y = model.analysis(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y16 = model.g_a(x)
        assert y16.dtype == torch.bfloat16
        expected = (y16 * model.gain.gain().to(torch.bfloat16)).float()
    assert y.dtype == torch.float32 and torch.equal(y, expected)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
