"""Learned codecs in tidy tables (nic_lib.neural), on tiny untrained models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nic_lib import coding, neural
from nic_lib.models import build_model, checkpoints, default_config, hub, pqmim, save_checkpoint, tables
from nic_lib.models.variable_rate import rate_levels

TINY = {"N": 8, "M": 12}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _model(name, **extra):
    torch.manual_seed(0)
    model = build_model(name, **{**default_config(name, 1), **TINY, **extra}).eval()
    model.update(force=True)
    return model


def _image(h=40, w=70, seed=0):
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (4, 4, 3))
    ys, xs = np.linspace(0, 3, h), np.linspace(0, 3, w)
    img = np.stack([np.interp(xs, range(4), coarse[int(y), :, c]) for y in ys for c in range(3)])
    return np.clip(img.reshape(h, 3, w).transpose(0, 2, 1), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", ["mbt2018-mean", "mbt2018"])
def test_real_bitstream_is_at_least_the_estimate_and_decodes_like_forward(name):
    model = _model(name)
    img = _image()
    r = coding.code_image(model, img, decode=True)
    assert r["x_hat"].shape == img.shape
    assert r["bytes"] == sum(len(s) for streams in r["strings"] for s in streams)
    # the coder cannot beat the model's own probabilities (a few bytes of slack for
    # rounding in the 16-bit CDF tables)
    assert r["bpp"] >= r["bpp_est"] - 8 * 4 / (40 * 70)
    forward = coding.code_image(model, img, decode=False)
    assert forward["bytes"] == r["bytes"] and math.isnan(forward["decode_s"])
    # without the decoder, the reconstruction is still the decoder's: from the encoder's
    # own latents (mbt2018) or an exact forward pass (mbt2018-mean), up to float rounding
    assert np.abs(forward["x_hat"].astype(int) - r["x_hat"].astype(int)).max() <= 1


def test_checkerboard_is_decoded_even_when_decoding_is_skipped():
    r = coding.code_image(_model("mbt2018-checkerboard"), _image(), decode=False)
    assert not math.isnan(r["decode_s"])


def test_rate_sweep_rows_and_partial_decoding():
    model = _model("mbt2018-mean")
    images = [("a", _image(seed=1)), ("b", _image(seed=2)), ("c", _image(seed=3))]
    table = neural.rate_sweep(images, {"tiny": {1: model, 2: model}}, decode=1, progress=False)
    assert list(table.columns) == list(neural.SWEEP_COLUMNS)
    assert len(table) == 6 and set(table["setting"]) == {1, 2}
    decoded = table.dropna(subset=["decode_s"])
    assert list(decoded["image"]) == ["a", "a"]
    assert (table["bpp"] > 0).all() and (table["psnr_rgb"] > 0).all()


def test_quality_models_serve_each_level(tmp_path):
    torch.manual_seed(0)
    model = build_model("mbt2018-mean", **{**default_config("mbt2018-mean", 1), **TINY,
                                           "lmbdas": [0.0018, 0.0067, 0.0483]}).eval()
    model.update(force=True)
    path = save_checkpoint(model, tmp_path / "vr.pt", {**default_config("mbt2018-mean", 1),
                                                       **TINY, "qualities": [1, 3, 6]})
    served = neural.quality_models(path, [3, 6])
    assert sorted(served) == [3, 6]
    assert served[3].gain.level == 1 and served[6].gain.level == 2
    assert rate_levels(served[3]) == [0.0018, 0.0067, 0.0483]
    with pytest.raises(ValueError, match="not among them"):
        neural.quality_models(path, [2])


def test_latent_statistics_shapes_and_bits_match_the_likelihoods():
    model = _model("mbt2018")
    img = _image(64, 64)
    stats = neural.latent_statistics(model, img)
    assert stats["bits"].shape == stats["scales"].shape == stats["means"].shape == (12, 4, 4)
    with torch.no_grad():
        out = model(coding.to_tensor(img))
    expected = float(-torch.log2(out["likelihoods"]["y"]).sum())
    assert neural.bits_by_latent(stats).sum() == pytest.approx(expected, rel=1e-5)


def test_decoded_image_equals_the_encoders_reconstruction_across_thread_counts():
    model = _model("mbt2018")
    x = coding.pad_to(coding.to_tensor(_image(64, 128)), 64)
    torch.set_num_threads(2)
    try:
        coded = model.compress(x, return_y_hat=True)
        encoder_view = model.synthesize(coded["y_hat"])
    finally:
        torch.set_num_threads(1)
    decoded = model.decompress(coded["strings"], coded["shape"])["x_hat"]
    assert decoded.dtype == torch.float32
    assert torch.equal(decoded, encoder_view)


class _FixedLikelihoods(torch.nn.Module):
    """A stand-in model whose forward returns chosen likelihoods."""

    downsampling_factor = 16

    def __init__(self, likelihoods):
        super().__init__()
        self.likelihoods = likelihoods

    def forward(self, x):
        return {"x_hat": x, "likelihoods": self.likelihoods}


def test_tail_bits_counts_latents_above_the_threshold_and_at_the_floor():
    lik = {"y": torch.tensor([0.5, 0.25, 2.0 ** -20, 1e-9]), "z": torch.tensor([0.5])}
    img = np.zeros((16, 8, 3), np.uint8)
    t = neural.tail_bits(_FixedLikelihoods(lik), img)
    bits = [1.0, 2.0, 20.0, -math.log2(1e-9), 1.0]
    assert t["bpp_est"] == pytest.approx(sum(bits) / (16 * 8), rel=1e-6)
    assert t["tail_fraction"] == pytest.approx(2 / 5)
    assert t["tail_share"] == pytest.approx((bits[2] + bits[3]) / sum(bits), rel=1e-6)
    assert t["at_floor"] == 1
    # a higher threshold leaves only the floored latent
    assert neural.tail_bits(_FixedLikelihoods(lik), img, threshold=25.0)["tail_fraction"] == pytest.approx(1 / 5)


def test_overconfident_scales_put_bits_in_the_tail_and_the_stream_below_the_estimate():
    from compressai.models import ScaleHyperprior

    img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    results = {}
    for gain in (1.0, 30.0):
        torch.manual_seed(0)
        model = ScaleHyperprior(8, 8).eval()
        with torch.no_grad():  # latents 30x larger than the untrained hyperprior expects
            model.g_a[-1].weight.mul_(gain)
        model.update(force=True)
        results[gain] = (neural.tail_bits(model, img), coding.code_image(model, img, decode=False))
    calm, wild = results[1.0], results[30.0]
    assert calm[0]["tail_share"] == 0.0 and calm[1]["bpp"] >= calm[1]["bpp_est"]
    assert wild[0]["tail_share"] > 0.5
    # the escape codes cost less than −log2 p of the far-out latents
    assert wild[1]["bpp"] < wild[1]["bpp_est"]
    assert wild[0]["bpp_est"] == pytest.approx(wild[1]["bpp_est"], rel=1e-5)


@pytest.mark.parametrize("name", ["mbt2018-context", "mbt2018"])
def test_coded_likelihoods_are_those_of_the_coders_symbols(name):
    model = _model(name)
    with torch.no_grad():  # latents spread over several integers (untrained: all ~0)
        model.g_a[-1].weight.mul_(20)
    x = coding.pad_to(coding.to_tensor(_image()), 64)
    forward = model(x)["likelihoods"]
    before = forward["y"]
    coded = model.compress(x, return_y_hat=True)
    y_hat = coded["y_hat"]
    lik = model.coded_likelihoods(x, y_hat)
    assert set(lik) == set(forward)
    # independently: the entropy parameters from the coder's latents, and the Gaussian
    # probability of each coded symbol y_hat - mu over its unit bin
    with torch.no_grad():
        ctx = model.context_prediction(y_hat)
        if hasattr(model, "h_s"):
            z_hat = model.entropy_bottleneck.decompress(coded["strings"][1], coded["shape"])
            ctx = torch.cat((model.h_s(z_hat), ctx), dim=1)
        scales, means = model.entropy_parameters(ctx).chunk(2, 1)
        expected = model.gaussian_conditional._likelihood(y_hat, scales, means)
        expected = model.gaussian_conditional.likelihood_lower_bound(expected)
    assert torch.allclose(lik["y"], expected, rtol=1e-4, atol=1e-7)
    # forward reads round(y) instead: other symbols, other bits; and it is untouched
    assert not torch.allclose(lik["y"], before)
    assert torch.equal(model(x)["likelihoods"]["y"], before)
    model.train()
    with pytest.raises(RuntimeError, match="eval mode"):
        model.coded_likelihoods(x, y_hat)


def test_code_image_estimates_the_context_models_rate_from_the_coded_latents():
    model = _model("mbt2018-context")
    img = _image()
    r = coding.code_image(model, img, decode=False)
    x = coding.pad_to(coding.to_tensor(img), model.downsampling_factor)
    y_hat = model.compress(x, return_y_hat=True)["y_hat"]
    bits = float(-torch.log2(model.coded_likelihoods(x, y_hat)["y"]).sum())
    assert r["bpp_est"] == pytest.approx(bits / (40 * 70), rel=1e-6)
    assert r["bpp"] >= r["bpp_est"] - 8 * 4 / (40 * 70)


def test_tail_bits_of_a_context_model_count_the_estimate_code_image_reports():
    model = _model("mbt2018-context")
    img = _image()
    assert neural.tail_bits(model, img)["bpp_est"] == pytest.approx(
        coding.code_image(model, img, decode=False)["bpp_est"], rel=1e-6)


@pytest.mark.parametrize("name", ["mbt2018", "bmshj2018-hyperprior", "bmshj2018-factorized"])
def test_bits_by_part_add_up_to_the_estimate_and_split_off_the_side_information(name):
    model = _model(name)
    img = _image(64, 64)
    parts = neural.estimated_bits_by_part(model, img)
    coded = coding.code_image(model, img, decode=False)
    assert sum(parts.values()) / (64 * 64) == pytest.approx(coded["bpp_est"], rel=1e-6)
    assert set(parts) == ({"y"} if name == "bmshj2018-factorized" else {"y", "z"})
    assert all(bits > 0 for bits in parts.values())


def test_cached_rate_sweep_recomputes_when_a_model_changes_under_the_same_digest(tmp_path):
    """The cache key holds the models as they run (their coder tables included), not only
    the digest the caller names: the same digest with other CDFs recomputes."""
    images = [("a", _image(seed=1))]
    model = _model("mbt2018-mean")
    key_file = tmp_path / "learned_m.csv.key.json"

    def sweep():
        return neural.cached_rate_sweep(tmp_path, "m", {1: model}, "digest", images, {},
                                        decode=False)

    first = sweep()
    key = key_file.read_text()
    sweep()
    assert key_file.read_text() == key  # nothing changed: a hit
    tables.set_scale_table(model, tables.scale_table(128))  # other coder tables
    again = sweep()
    assert key_file.read_text() != key
    assert list(again.columns) == list(first.columns) and len(again) == len(first)


# --------------------------------------------------------------------------- PQ-MIM's rate points

PQMIM_TINY = {"N": 16, "latent_dim": 8, "K": 16, "width": 32, "layers": 1, "heads": 2}


def _pqmim_rate_points(folder, Ms=(4, 1, 2)):
    """Tiny untrained PQ-MIM checkpoints ``M{M}-K16.pt`` in ``folder/pqmim`` (written out of
    rate order), and a perceptual variant of the first, which is no rate point."""
    paths = {}
    for M in Ms:
        torch.manual_seed(M)
        model = pqmim.PQMIM(**PQMIM_TINY, M=M).eval()
        paths[M] = save_checkpoint(model, folder / "pqmim" / f"M{M}-K16.pt", {})
    save_checkpoint(model, folder / "pqmim" / f"M{Ms[-1]}-K16-perceptual.pt", {}, extra={"perceptual": {}})
    return paths


def test_pqmim_rate_points_are_one_family_lowest_rate_first(tmp_path, monkeypatch):
    monkeypatch.setenv(hub.CHECKPOINT_DIR_ENV, str(tmp_path))
    with pytest.raises(checkpoints.CheckpointNotFoundError, match="train_pqmim"):
        neural.quality_models("pqmim")
    _pqmim_rate_points(tmp_path)
    assert [p.name for p in pqmim.rate_points().values()] == ["M1-K16.pt", "M2-K16.pt", "M4-K16.pt"]
    family = neural.quality_models("pqmim")
    assert {q: m.M for q, m in family.items()} == {1: 1, 2: 2, 3: 4}
    assert all(not m.training for m in family.values())
    assert list(neural.quality_models("pqmim", [3])) == [3]
    with pytest.raises(ValueError, match=r"qualities \[1, 2, 3\].*\[4\] are not among them"):
        neural.quality_models("pqmim", [4])


def test_pqmim_sweep_rows_have_the_learned_codecs_columns_real_bits_and_checked_decoding(tmp_path, monkeypatch):
    monkeypatch.setenv(hub.CHECKPOINT_DIR_ENV, str(tmp_path))
    _pqmim_rate_points(tmp_path, Ms=(1, 4))
    family = neural.quality_models("pqmim")
    img = _image(176, 176)  # MS-SSIM needs 161 px a side
    table = neural.rate_sweep([("a", img), ("b", _image(40, 56, seed=2))], {"pqmim": family}, decode=1,
                              progress=False)
    assert list(table.columns) == list(neural.SWEEP_COLUMNS) and len(table) == 4
    for q, model in family.items():
        stream = model.compress(coding.model_input(model, img))["strings"][0][0]
        row = table[(table["image"] == "a") & (table["setting"] == q)].iloc[0]
        # bpp = 8 · bytes of the real stream (its 7-byte header included) / H·W
        assert row["bytes"] == len(stream) and row["bpp"] == pytest.approx(8 * len(stream) / 176**2)
        assert np.isfinite(row["ms_ssim"]) and np.isfinite(row["decode_s"])  # decoded: the first image
    assert table[table["image"] == "b"]["decode_s"].isna().all()  # reconstructed from its codes
    # g_s of the encoder's codes is what the decoder gives
    model = family[2]
    assert np.array_equal(coding.code_image(model, img, decode=False)["x_hat"],
                          coding.code_image(model, img, decode=True)["x_hat"])


def test_a_pqmim_decoder_reading_other_codes_is_refused(monkeypatch):
    torch.manual_seed(0)
    model = pqmim.PQMIM(**PQMIM_TINY, M=2).eval()
    real = model.decompress

    def one_code_off(strings, shape=None, **options):
        out = real(strings, shape, **options)
        out["codes"] = out["codes"].clone()
        out["codes"][0, 0, 0] = (out["codes"][0, 0, 0] + 1) % model.K
        return out

    monkeypatch.setattr(model, "decompress", one_code_off)
    with pytest.raises(coding.DecodeMismatchError, match="1 of .* codes"):
        neural.rate_sweep([("a", _image(32, 48))], {"pqmim": {1: model}}, progress=False)
