"""Properties of the perceptual metrics and discriminator (nic_lib.perceptual) and of stage C
of PQ-MIM's training (nic_lib.training.pqmim.stage_c, through nic_lib.train_pqmim)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import scipy.ndimage
import torch

from nic_lib import perceptual, train_pqmim
from nic_lib.models import pqmim, save_checkpoint

TINY = {"N": 16, "latent_dim": 8, "M": 2, "K": 16, "width": 32, "layers": 1, "heads": 2}


def _textures(n: int, seed: int, size=(64, 80)) -> list[np.ndarray]:
    """Smooth random colour textures (blurred noise): a distribution of images."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        noise = rng.normal(0, 1, (*size, 3))
        smooth = scipy.ndimage.gaussian_filter(noise, (2, 2, 0))
        out.append(np.clip(128 + 400 * smooth, 0, 255).astype(np.uint8))
    return out


def _cartoons(n: int, seed: int, size=(64, 80), shapes: int = 40) -> list[np.ndarray]:
    """Piecewise-constant images (random coloured rectangles): sparse, heavy-tailed
    Laplacian bands like natural images' edges, unlike Gaussian textures."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = np.full((*size, 3), 128, np.uint8)
        for _ in range(shapes):
            y, x = rng.integers(0, size[0]), rng.integers(0, size[1])
            h, w = rng.integers(4, size[0] // 2), rng.integers(4, size[1] // 2)
            img[y:y + h, x:x + w] = rng.integers(0, 256, 3)
        out.append(img)
    return out


# ---------------------------------------------------------------------------------------
# Sliced Wasserstein distance


def test_swd_of_a_set_against_itself_is_zero():
    images = _textures(3, seed=0)
    swd = perceptual.sliced_wasserstein_distance(images, images)
    assert swd["mean"] == 0.0 and len(swd["levels"]) == len(swd["resolutions"]) == 3


def test_swd_grows_with_the_strength_of_a_shift():
    images = _cartoons(4, seed=1)
    rng = np.random.default_rng(0)
    values = []
    for sigma in (0, 4, 16, 48):
        noisy = [np.clip(im + rng.normal(0, sigma, im.shape), 0, 255).astype(np.uint8)
                 for im in images]
        values.append(perceptual.sliced_wasserstein_distance(images, noisy)["mean"])
    assert values[0] == 0.0 and all(a < b for a, b in itertools.pairwise(values))


def test_swd_of_two_samples_of_one_distribution_is_below_a_shifted_one():
    a, b = _cartoons(4, seed=2), _cartoons(4, seed=3)
    rng = np.random.default_rng(1)
    noisy = [np.clip(im + rng.normal(0, 16, im.shape), 0, 255).astype(np.uint8) for im in b]
    same = perceptual.sliced_wasserstein_distance(a, b, patches_per_image=512)["levels"][0]
    shifted = perceptual.sliced_wasserstein_distance(a, noisy, patches_per_image=512)["levels"][0]
    # at the finest level (many independent patches; the coarse levels of 4 small images
    # are dominated by which images were drawn). Each set is normalised by its own
    # statistics: SWD sees the shape of the patch distribution, here sparse edges vs noise
    assert 0 < same < shifted / 2


def test_swd_is_seeded_and_takes_images_of_different_sizes_and_counts():
    a = _textures(2, seed=4, size=(48, 64)) + _textures(1, seed=5, size=(80, 40))
    b = _textures(2, seed=6, size=(64, 64))
    first = perceptual.sliced_wasserstein_distance(a, b, seed=3)
    assert first == perceptual.sliced_wasserstein_distance(a, b, seed=3)
    assert first != perceptual.sliced_wasserstein_distance(a, b, seed=4)
    assert first["resolutions"] == [40, 20]  # smallest side 40: levels down to >= 16


def test_swd_refuses_images_below_its_coarsest_level():
    with pytest.raises(ValueError, match="below SWD's coarsest level"):
        perceptual.sliced_wasserstein_distance(_textures(1, 0, (8, 8)), _textures(1, 1, (8, 8)))


def test_laplacian_pyramid_sums_back_to_the_image():
    img = _textures(1, seed=7, size=(40, 56))[0]
    bands = perceptual.laplacian_pyramid(img, 3)
    # G_l = L_l + pyrUp(G_{l+1}) rebuilds the image from the coarsest level up
    g = torch.from_numpy(bands[-1])[None]
    for band in reversed(bands[:-1]):
        up = torch.zeros(1, 3, 2 * g.shape[2], 2 * g.shape[3])
        up[..., ::2, ::2] = g
        g = perceptual._blur(up, 4.0)[..., :band.shape[1], :band.shape[2]] + torch.from_numpy(band)
    assert np.allclose(g[0].permute(1, 2, 0).numpy(), img, atol=1e-3)


# ---------------------------------------------------------------------------------------
# Fréchet distance and KID


def test_frechet_distance_of_identical_sets_is_zero():
    features = np.random.default_rng(0).normal(size=(50, 6))
    stats = perceptual.gaussian_statistics(features)
    assert perceptual.frechet_distance(*stats, *stats) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_matches_the_closed_form_for_commuting_covariances():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))  # shared eigenvectors: Σ1 Σ2 = Σ2 Σ1
    l1, l2 = rng.uniform(0.5, 3, 5), rng.uniform(0.1, 2, 5)
    s1, s2 = q @ np.diag(l1) @ q.T, q @ np.diag(l2) @ q.T
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    # d² = ‖μ1 − μ2‖² + Σ_i (√λ1_i − √λ2_i)²
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(l1) - np.sqrt(l2)) ** 2)
    assert perceptual.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_gaussian_samples_approaches_the_exact_value():
    rng = np.random.default_rng(2)
    a = rng.multivariate_normal([0, 0, 0], np.diag([1.0, 2.0, 0.5]), 20_000)
    b = rng.multivariate_normal([1, 0, -1], np.diag([4.0, 2.0, 0.5]), 20_000)
    # ‖μ1 − μ2‖² = 2, Σ (√λ1 − √λ2)² = (1 − 2)² = 1
    fd = perceptual.frechet_distance(*perceptual.gaussian_statistics(a),
                                     *perceptual.gaussian_statistics(b))
    assert fd == pytest.approx(3.0, abs=0.1)


def test_kid_is_zero_in_expectation_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    same = perceptual.kernel_inception_distance(a, b, subsets=20, subset_size=100)
    shifted = perceptual.kernel_inception_distance(a, b + 0.5, subsets=20, subset_size=100)
    assert abs(same["mean"]) < 3 * same["std"] / np.sqrt(20) + 1e-3
    assert shifted["mean"] > 10 * abs(same["mean"]) and shifted["mean"] > 0


def test_distribution_metrics_with_a_stand_in_extractor():
    extractor = perceptual.random_conv_extractor(width=8)
    a, b = _textures(6, seed=8), _textures(6, seed=9)
    same = perceptual.distribution_metrics(a, a, extractor, patch=32, kid_subsets=5)
    assert same["fd"] == pytest.approx(0.0, abs=1e-9) and same["samples"] == 6 * 6  # 2x2 grid + 1x2 shifted grid
    noisy = [np.clip(im + np.random.default_rng(0).normal(0, 40, im.shape), 0, 255).astype(np.uint8)
             for im in b]
    assert perceptual.distribution_metrics(a, noisy, extractor, patch=32)["fd"] > \
        perceptual.distribution_metrics(a, b, extractor, patch=32)["fd"]


def test_feature_patches_cover_both_grids():
    img = np.zeros((512, 768, 3), np.uint8)  # a Kodak-sized image: 3x2 + 2x1 patches
    assert len(perceptual.feature_patches([img], 256)) == 8


def test_inception_extractor_explains_what_is_missing(tmp_path):
    with pytest.raises(perceptual.ExtractorUnavailableError, match="torch-fidelity|Inception weights"):
        perceptual.inception_extractor(weights=tmp_path / "missing.pth")


# ---------------------------------------------------------------------------------------
# Discriminator and GAN losses


@pytest.mark.parametrize("layers,side,out", [(3, 64, 6), (2, 64, 14), (3, 256, 30)])
def test_patch_discriminator_gives_one_logit_per_patch(layers, side, out):
    disc = perceptual.PatchDiscriminator(width=8, layers=layers)
    assert disc(torch.rand(2, 3, side, side)).shape == (2, 1, out, out)


@pytest.mark.parametrize("kind", perceptual.GAN_LOSSES)
def test_gan_losses_reward_the_right_side(kind):
    good, bad = torch.full((4,), 3.0), torch.full((4,), -3.0)
    # the discriminator's loss is low when real scores high and fake low
    assert perceptual.discriminator_loss(good, bad, kind) < perceptual.discriminator_loss(bad, good, kind)
    # the generator's loss is low when its images score as real
    assert perceptual.generator_loss(good, kind) < perceptual.generator_loss(bad, kind)


def test_unknown_gan_loss_is_refused():
    with pytest.raises(ValueError, match="choose one of"):
        perceptual.generator_loss(torch.zeros(2), "wasserstein")


# ---------------------------------------------------------------------------------------
# Stage C


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory, one_thread):
    """A tiny untrained PQ-MIM with initialised codebooks, saved as a base checkpoint."""
    torch.manual_seed(0)
    model = pqmim.PQMIM(**TINY)
    model.train()(torch.rand(2, 3, 64, 64), generator=torch.Generator().manual_seed(0))
    path = tmp_path_factory.mktemp("base") / "M2-K16.pt"
    return save_checkpoint(model.eval(), path, {"mask_law": "schedule"})


def _config(source, out_dir, **kw) -> train_pqmim.PerceptualTrainConfig:
    return train_pqmim.PerceptualTrainConfig(
        source=str(source), data=("sample",), crop=64, batch_size=2, steps_c=6, warmup_steps=2,
        log_every=2, ckpt_every=0, disc_width=8, lr_c=1e-3, lr_d=1e-3, adv_weight=0.05,
        out_dir=str(out_dir), **kw)


@pytest.fixture(scope="module")
def stage_c_run(base_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("c")
    return train_pqmim.train_perceptual(_config(base_checkpoint, out, export=str(
        base_checkpoint.parent / "M2-K16-perceptual.pt")))


def test_stage_c_changes_only_the_decoder(base_checkpoint, stage_c_run):
    before, _ = pqmim.load_pqmim(base_checkpoint)
    after, ckpt = pqmim.load_pqmim(stage_c_run / "final_c.pt")
    a, b = before.state_dict(), after.state_dict()
    frozen = [k for k in a if not k.startswith("g_s.")]
    assert frozen and all(torch.equal(a[k], b[k]) for k in frozen)
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("g_s."))
    assert ckpt["perceptual"]["frozen_digest"] == perceptual.state_digest(a)
    assert ckpt["config"]["mask_law"] == "schedule"  # its base's stage B, stated
    log = pd.read_csv(stage_c_run / "log_c.csv")
    assert list(log["step"]) == [2, 4, 6] and np.isfinite(log.drop(columns="step").to_numpy()).all()


def test_stage_c_leaves_the_bitstream_unchanged(base_checkpoint, stage_c_run):
    before, _ = pqmim.load_pqmim(base_checkpoint)
    after, _ = pqmim.load_pqmim(stage_c_run / "final_c.pt")
    img = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    x, y = pqmim.code_image(before, img, steps=3), pqmim.code_image(after, img, steps=3)
    assert x["bytes"] == y["bytes"] and x["bpp"] == y["bpp"]
    x_stream = before.compress(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255, 3)
    y_stream = after.compress(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255, 3)
    assert x_stream["strings"] == y_stream["strings"]
    assert not np.array_equal(x["x_hat"], y["x_hat"])  # a different decoder of the same codes


def test_find_checkpoints_tells_perceptual_variants_from_rate_points(base_checkpoint, stage_c_run):
    folder = base_checkpoint.parent
    assert pqmim.find_checkpoints(folder) == [folder / "M2-K16.pt"]
    assert pqmim.find_checkpoints(folder, perceptual=True) == [folder / "M2-K16-perceptual.pt"]
    # paired by the digest of the frozen weights, not by file name
    assert train_pqmim.perceptual_pairs(folder) == [(folder / "M2-K16.pt",
                                                     folder / "M2-K16-perceptual.pt")]


def test_stage_c_resumes_identically(base_checkpoint, stage_c_run, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = perceptual.generator_loss

    def interrupt_on_step_five(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # after a log row (step 4): the rows match too
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(perceptual, "generator_loss", interrupt_on_step_five)
    with pytest.raises(KeyboardInterrupt):
        train_pqmim.train_perceptual(_config(base_checkpoint, tmp_path))
    monkeypatch.setattr(perceptual, "generator_loss", original)
    state = torch.load(tmp_path / "ckpt_c.pt", weights_only=True)
    assert state["step"] == 4
    train_pqmim.train_perceptual(train_pqmim.PerceptualTrainConfig(), resume=tmp_path / "ckpt_c.pt")
    resumed, _ = pqmim.load_pqmim(tmp_path / "final_c.pt")
    straight, _ = pqmim.load_pqmim(stage_c_run / "final_c.pt")
    assert all(torch.equal(v, straight.state_dict()[k]) for k, v in resumed.state_dict().items())
    cols = ["step", "loss_g", "mse", "adv", "loss_d"]
    assert pd.read_csv(tmp_path / "log_c.csv")[cols].equals(pd.read_csv(stage_c_run / "log_c.csv")[cols])


def test_stage_c_refuses_to_overwrite_a_run(base_checkpoint, stage_c_run):
    with pytest.raises(ValueError, match="already holds a stage-C run"):
        train_pqmim.train_perceptual(_config(base_checkpoint, stage_c_run))


def test_stage_c_command_line_rejects_stage_a_flags(base_checkpoint):
    with pytest.raises(SystemExit, match="do not apply to stage C"):
        train_pqmim.main(["--perceptual-from", str(base_checkpoint), "--M", "4"])
