"""Properties of PQ-MIM (nic_lib.models.pqmim) and its training (nic_lib.training.pqmim, through
its command-line module nic_lib.train_pqmim)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch

from nic_lib import data, perceptual, train_pqmim
from nic_lib.models import build_model, checkpoints, pqmim, save_checkpoint
from nic_lib.training import TrainConfig, learning_rate
from nic_lib.training.schedule import warmup_cosine

TINY = {"N": 16, "latent_dim": 8, "M": 2, "K": 16, "width": 32, "layers": 1, "heads": 2}


def _peaked_mim(M: int, K: int, seed: int = 0, sharpness: float = 30.0) -> pqmim.MaskedTokenModel:
    """An untrained MIM model whose predictions are far from uniform (some codes get tiny
    probabilities), so the coder is exercised on improbable symbols too."""
    torch.manual_seed(seed)
    model = pqmim.MaskedTokenModel(M, K, width=32, layers=1, heads=2).eval()
    with torch.no_grad():
        model.head.weight.mul_(sharpness)
    return model


def test_product_quantizer_with_one_codebook_is_plain_vq():
    torch.manual_seed(0)
    pq = pqmim.ProductQuantizer(latent_dim=6, M=1, K=20).eval()
    z = torch.randn(2, 6, 5, 4)
    out = pq(z)
    vectors = z.permute(0, 2, 3, 1).reshape(-1, 6)
    # plain VQ: index of the nearest codeword under the Euclidean distance
    expected = torch.cdist(vectors, pq.codebooks[0]).argmin(-1)
    assert torch.equal(out["codes"].reshape(-1), expected)
    e = pq.codebooks[0][expected].reshape(2, 5, 4, 6).permute(0, 3, 1, 2)
    assert torch.allclose(out["z_q"], e, atol=1e-6)
    assert torch.allclose(pq.dequantize(out["codes"]), e)


def test_product_quantizer_quantizes_each_slice_with_its_own_codebook():
    torch.manual_seed(1)
    pq = pqmim.ProductQuantizer(latent_dim=8, M=4, K=10).eval()
    z = torch.randn(3, 8, 2, 2)
    codes = pq.quantize(z)
    vectors = z.permute(0, 2, 3, 1).reshape(-1, 4, 2)
    for m in range(4):
        expected = torch.cdist(vectors[:, m], pq.codebooks[m]).argmin(-1)
        assert torch.equal(codes[..., m].reshape(-1), expected)


def test_ema_update_moves_codewords_toward_their_assigned_vectors():
    torch.manual_seed(2)
    pq = pqmim.ProductQuantizer(latent_dim=4, M=2, K=4, dead_threshold=0.0).train()
    z = torch.randn(4, 4, 8, 8) + 3.0
    pq(z, generator=torch.Generator().manual_seed(0))  # initialises from the batch
    before = (pq.dequantize(pq.quantize(z)) - z).pow(2).mean()
    for _ in range(20):
        pq(z)
    after = (pq.dequantize(pq.quantize(z)) - z).pow(2).mean()
    assert after < before


@pytest.mark.parametrize("steps", [1, 3, 8, 12])
def test_codes_round_trip_through_the_entropy_coder(steps):
    model = _peaked_mim(M=2, K=32)
    codes = torch.randint(0, 32, (7, 5, 2), generator=torch.Generator().manual_seed(steps))
    out = pqmim.encode_codes(model, codes, steps)
    assert torch.equal(pqmim.decode_codes(model, out["bytes"]), codes)
    assert math.isclose(sum(out["bits_per_step"]), out["bits_est"], rel_tol=1e-9)


def test_stream_bits_agree_with_information_content():
    model = _peaked_mim(M=4, K=256, seed=3, sharpness=2.0)
    codes = torch.randint(0, 256, (20, 20, 4), generator=torch.Generator().manual_seed(0))
    out = pqmim.encode_codes(model, codes, steps=8)
    stream_bits = 8 * (len(out["bytes"]) - pqmim.HEADER.size)
    # real bits of the rANS stream vs Σ −log2 P(code): within 2%
    assert out["bits_est"] > 1000
    assert abs(stream_bits - out["bits_est"]) / out["bits_est"] < 0.02


def test_independent_prior_stream_round_trips():
    probs = torch.softmax(torch.randn(3, 16, generator=torch.Generator().manual_seed(0)) * 3, -1)
    codes = torch.randint(0, 16, (50, 3), generator=torch.Generator().manual_seed(1))
    stream = pqmim.encode_independent(probs, codes)
    assert torch.equal(pqmim.decode_independent(probs, stream, 50), codes)


@pytest.mark.parametrize("shape,steps,M", [((4, 4), 1, 1), ((5, 7), 10, 4), ((3, 3), 9, 1),
                                           ((32, 48), 12, 4), ((2, 3), 5, 2)])
def test_schedule_reveals_every_code_exactly_once(shape, steps, M):
    groups = pqmim.coding_schedule(*shape, steps, M=M)
    assert len(groups) == steps and all(len(g) > 0 for g in groups)
    revealed = torch.cat(groups)
    assert sorted(revealed.tolist()) == list(range(shape[0] * shape[1] * M))
    again = pqmim.coding_schedule(*shape, steps, M=M)  # fixed by the grid, M and S alone
    assert all(torch.equal(a, b) for a, b in zip(groups, again))


def test_schedule_codes_one_code_of_every_position_per_round():
    H, W, M = 6, 5, 4
    order = torch.cat(pqmim.coding_schedule(H, W, 7, M=M))
    L = H * W
    for r in range(M):
        positions = order[r * L:(r + 1) * L] // M
        assert sorted(positions.tolist()) == list(range(L))
    # M = 1 is the plain position schedule
    plain = torch.cat(pqmim.coding_schedule(H, W, 7))
    assert plain.tolist() == list(pqmim.spread_order(H, W))


def test_schedule_refuses_more_steps_than_codes():
    with pytest.raises(ValueError, match="at least one"):
        pqmim.coding_schedule(2, 2, 5)
    assert len(pqmim.coding_schedule(2, 2, 5, M=2)) == 5  # 8 codes are enough


def test_mim_predictions_ignore_the_values_of_hidden_codes():
    model = _peaked_mim(M=3, K=16, sharpness=1.0)
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (2, 4, 5, 3), generator=gen)
    visible = torch.rand(2, 4, 5, 3, generator=gen) < 0.5
    other = torch.where(visible, codes, torch.randint(0, 16, codes.shape, generator=gen))
    with torch.no_grad():
        assert torch.allclose(model(codes, visible), model(other, visible))
        # a per-position mask is the per-code mask repeated over the M codes
        per_position = visible[..., 0]
        assert torch.allclose(model(codes, per_position),
                              model(codes, per_position[..., None].expand_as(codes)))
        # and a visible code does change the prediction
        more = visible.clone()
        more[0, 0, 0] = True
        assert not torch.allclose(model(codes, visible), model(codes, more))


def test_mask_ratio_sampler_matches_the_cosine_law():
    ratios = pqmim.mask_ratio(4000, torch.Generator().manual_seed(0)).double().numpy()
    # γ = cos(π r / 2), r ~ U[0, 1)  =>  P(γ <= g) = 1 − (2/π) arccos g
    result = scipy.stats.kstest(ratios, lambda g: 1 - 2 / np.pi * np.arccos(np.clip(g, 0, 1)))
    assert result.pvalue > 0.01
    # and the uniform law (a wrong sampler) is rejected by the same test
    assert scipy.stats.kstest(ratios, "uniform").pvalue < 1e-6


def test_schedule_mask_law_is_the_hidden_fraction_at_which_the_schedule_codes():
    # from coding_schedule itself: a unit coded at step s was coded while 1 − C_{s−1}/L hid
    H, W, M, S = 5, 6, 2, 7
    L = H * W * M
    expected, known = {}, 0
    for group in pqmim.coding_schedule(H, W, S, M=M):
        gamma = round(1 - known / L, 9)
        expected[gamma] = expected.get(gamma, 0) + len(group) / L
        known += len(group)
    n = 40_000
    ratios = pqmim.mask_ratio(n, torch.Generator().manual_seed(0), "schedule", units=L, steps=S)
    values, counts = np.unique(np.round(ratios.double().numpy(), 6), return_counts=True)
    assert values.tolist() == pytest.approx(sorted(expected), abs=1e-6)
    probs = np.array([expected[g] for g in sorted(expected)])
    assert scipy.stats.chisquare(counts, n * probs).pvalue > 0.01
    # the cosine law draws far more of its ratios near 1
    cosine = pqmim.mask_ratio(n, torch.Generator().manual_seed(0), "cosine")
    assert float((cosine > 0.9).float().mean()) > 1.5 * float((ratios > 0.9).float().mean())


def test_mask_ratio_refuses_an_unknown_law_and_a_schedule_without_its_size():
    with pytest.raises(ValueError, match="unknown masking law 'linear'"):
        pqmim.mask_ratio(4, law="linear")
    with pytest.raises(ValueError, match="needs units"):
        pqmim.mask_ratio(4, law="schedule")
    # fewer codes than steps: the schedule of so few codes (one per step) is used
    assert pqmim.random_mask(3, 4, torch.Generator().manual_seed(0), law="schedule").any(-1).all()


def test_per_crop_loss_weighs_every_crop_alike():
    torch.manual_seed(0)
    model = pqmim.PQMIM(**TINY).eval()
    codes = torch.randint(0, TINY["K"], (2, 3, 4, TINY["M"]))
    masked = torch.zeros(2, 3, 4, TINY["M"], dtype=torch.bool)
    masked[0, 0, 0, 0] = True          # crop 0 hides 1 code
    masked[1] = True                   # crop 1 hides all 24
    masked[1, 0, 0, 0] = False
    each = [float(model.mim_loss(codes[b:b + 1], masked[b:b + 1])["loss"]) for b in range(2)]
    per_crop = float(model.mim_loss(codes, masked, per_crop=True)["loss"])
    pooled = float(model.mim_loss(codes, masked)["loss"])
    assert per_crop == pytest.approx((each[0] + each[1]) / 2, rel=1e-5)
    assert pooled == pytest.approx((each[0] * 1 + each[1] * 23) / 24, rel=1e-5)


def test_random_mask_hides_ceil_ratio_times_positions():
    gen = torch.Generator().manual_seed(0)
    masks = pqmim.random_mask(500, 64, gen)
    gamma = pqmim.mask_ratio(500, torch.Generator().manual_seed(0))
    expected = torch.ceil(gamma * 64).clamp(1, 64)
    assert torch.equal(masks.sum(-1), expected.long())


def test_quantizer_table_counts_bits_and_codebook_sizes():
    rows = {(r["M"], r["K"]): r for r in pqmim.quantizer_table(32, [1, 4, 32], [256])}
    assert rows[(4, 256)]["bits_per_position"] == 32 and rows[(4, 256)]["codebook_vectors"] == 1024
    assert rows[(1, 256)]["kind"] == "VQ" and rows[(32, 256)]["kind"] == "scalar"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny seeded two-stage run on scikit-image's sample photos (no data files)."""
    cfg = train_pqmim.PQMIMTrainConfig(**TINY, data=("sample",), crop=64, batch_size=4,
                                       steps_a=60, steps_b=60, warmup_steps=5, log_every=10,
                                       ckpt_every=0, lr_a=2e-3, lr_b=2e-3,
                                       out_dir=str(tmp_path_factory.mktemp("run")))
    return train_pqmim.train(cfg)


def test_tiny_run_repeats_exactly(tiny_run, tmp_path):
    """Issue 33: notebook 05's smoke profile trains such a run; a fixed number of steps with
    the same seed gives the same weights and losses whatever torch's global generator holds."""
    torch.seed()
    cfg = train_pqmim.PQMIMTrainConfig(**TINY, data=("sample",), crop=64, batch_size=4,
                                       steps_a=60, steps_b=60, warmup_steps=5, log_every=10,
                                       ckpt_every=0, lr_a=2e-3, lr_b=2e-3, out_dir=str(tmp_path / "again"))
    again = train_pqmim.train(cfg)
    for name in ("log_a.csv", "log_b.csv"):
        assert pd.read_csv(again / name)["loss"].tolist() == pd.read_csv(tiny_run / name)["loss"].tolist()
    first, second = (pqmim.load_pqmim(run / "final.pt")[0].state_dict() for run in (tiny_run, again))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_resume_refuses_to_change_the_maths_of_a_run(tiny_run):
    with pytest.raises(ValueError, match="K cannot change"):
        train_pqmim.train(train_pqmim.PQMIMTrainConfig(), resume=tiny_run, overrides={"K": 16})


def test_a_run_saved_without_a_setting_is_refused_not_resumed_with_its_default(tiny_run):
    state = torch.load(tiny_run / "ckpt.pt", weights_only=True)
    assert state["config"]["mask_law"] == "schedule"  # the default of new runs
    saved = {k: v for k, v in state["config"].items() if k != "mask_law"}
    with pytest.raises(ValueError, match="lacks mask_law"):
        train_pqmim.resumed_config(train_pqmim.PQMIMTrainConfig, saved,
                                   train_pqmim.RUNTIME_KEYS, None)


def test_stage_schedule_warms_up_then_decays_to_a_tenth_of_the_peak():
    rates = [warmup_cosine(s, 1e-3, 10, 100) for s in range(120)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))  # no rise after the warm-up
    assert rates[100] == rates[119] == pytest.approx(1e-4)
    # the law of nic_lib.train's cosine schedule with a floor of a tenth (up to rounding:
    # peak / 10 there is peak · 0.1 here)
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, max_steps=100, min_lr_ratio=0.1)
    assert rates == pytest.approx([learning_rate(s, cfg) for s in range(120)], rel=1e-12)


def test_tiny_seeded_training_run_decreases_its_loss(tiny_run):
    for name in ("log_a.csv", "log_b.csv"):
        loss = pd.read_csv(tiny_run / name)["loss"].to_numpy()
        assert len(loss) == 6 and loss[-1] < loss[0], name


def test_trained_checkpoint_codes_an_image_exactly(tiny_run):
    model, ckpt = pqmim.load_pqmim(tiny_run / "final.pt")
    # the common format: the architecture, the (untuned) radius and the masking law
    assert ckpt["format"] == checkpoints.CHECKPOINT_FORMAT and ckpt["model"] == "pqmim"
    assert ckpt["config"] == {**TINY, "model": "pqmim", "attention_radius": 0,
                              "mask_law": "schedule"}
    assert model.prior_counts.sum() > 0
    img = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
    full = pqmim.code_image(model, img, steps=4)
    assert full["exact"] and full["x_hat"].shape == img.shape
    hybrid = pqmim.code_image(model, img, steps=4, transmit_steps=1)
    assert hybrid["bytes"] < full["bytes"]


def test_half_precision_checkpoint_is_smaller_and_still_codes_exactly(tiny_run, tmp_path):
    model, ckpt = pqmim.load_pqmim(tiny_run / "final.pt")
    path = save_checkpoint(model, tmp_path / "half.pt", ckpt["config"], dtype=torch.float16)
    stored = torch.load(path, weights_only=True)["state_dict"]
    assert stored["g_a.0.weight"].dtype == torch.float16
    assert stored["entropy_model.head.weight"].dtype == torch.float16  # matrices too
    assert stored["g_a.0.bias"].dtype == torch.float32  # biases not
    assert stored["quantizer.codebooks"].dtype == torch.float32  # codes are decided against these
    assert path.stat().st_size < 0.75 * (tiny_run / "final.pt").stat().st_size
    half, _ = pqmim.load_pqmim(path)
    for key, value in half.state_dict().items():
        original = model.state_dict()[key]
        assert value.dtype == original.dtype, key
        if stored[key].dtype == torch.float16:
            assert torch.equal(value, original.half().to(original.dtype)), key
        else:
            assert torch.equal(value, original), key
    img = (np.random.default_rng(1).random((48, 64, 3)) * 255).astype(np.uint8)
    assert pqmim.code_image(half, img, steps=4)["exact"]
    # a perceptual run digests the loaded model; pairing digests the stored file
    assert perceptual.state_digest(stored) == perceptual.state_digest(half.state_dict())


def test_load_refuses_files_that_are_not_pqmim_checkpoints(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"format": "something-else"}, path)
    with pytest.raises(checkpoints.CheckpointError, match="not a nic-repro checkpoint"):
        pqmim.load_pqmim(path)
    torch.manual_seed(0)
    other = build_model("bmshj2018-factorized", N=8, M=8)
    other.update(force=True)
    save_checkpoint(other, path, {})
    with pytest.raises(checkpoints.CheckpointMismatchError, match="not PQ-MIM"):
        pqmim.load_pqmim(path)
    with pytest.raises(FileNotFoundError, match="train_pqmim"):
        pqmim.load_pqmim(tmp_path / "missing.pt")


def test_restart_b_keeps_the_autoencoder_and_trains_a_new_mim_model(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before, _ = pqmim.load_pqmim(run / "final.pt")
    with pytest.raises(ValueError, match="width cannot change"):  # not without --restart-b
        train_pqmim.train(train_pqmim.PQMIMTrainConfig(), resume=run, overrides={"width": 16})
    with pytest.raises(ValueError, match="not a masking law"):
        train_pqmim.train(train_pqmim.PQMIMTrainConfig(), resume=run, restart_b=True,
                          overrides={"mask_law": "linear"})
    train_pqmim.train(train_pqmim.PQMIMTrainConfig(), resume=run, restart_b=True,
                      overrides={"width": 16, "heads": 1, "crop_b": 32, "steps_b": 20,
                                 "mask_law": "schedule"})
    after, ckpt = pqmim.load_pqmim(run / "final.pt")
    assert ckpt["config"]["width"] == 16 and ckpt["train_config"]["crop_b"] == 32
    assert ckpt["train_config"]["mask_law"] == "schedule"
    assert json.loads((run / "config.json").read_text())["config"]["mask_law"] == "schedule"
    for name, tensor in before.state_dict().items():
        if not name.startswith(("entropy_model.", "prior_counts")):
            assert torch.equal(tensor, after.state_dict()[name]), name
    # the new stage B counted only its own codes: 20 steps x 4 crops x (32/16)^2 positions
    assert after.prior_counts.sum(-1).tolist() == [20 * 4 * 4] * TINY["M"]
    assert (run / "log_b.before-restart.csv").is_file()
    assert len(pd.read_csv(run / "log_b.csv")) == 2
    img = (np.random.default_rng(1).random((32, 48, 3)) * 255).astype(np.uint8)
    assert pqmim.code_image(after, img, steps=3)["exact"]


def test_restart_b_from_an_exported_half_precision_checkpoint(tiny_run, tmp_path):
    import hashlib

    model, ckpt = pqmim.load_pqmim(tiny_run / "final.pt")
    extra = {k: v for k, v in ckpt.items() if k not in checkpoints._RESERVED_KEYS}
    # as the retrain script writes them: the run exported straight onto the shipped file
    extra["train_config"] = {**extra["train_config"], "export": str(tmp_path / "shipped.pt")}
    source = save_checkpoint(model, tmp_path / "shipped.pt", ckpt["config"], extra=extra,
                             dtype=torch.float16)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    shipped, _ = pqmim.load_pqmim(source)
    with pytest.raises(ValueError, match="final.pt cannot be resumed"):  # only with restart_b
        train_pqmim.train(train_pqmim.PQMIMTrainConfig(), resume=source)
    with pytest.raises(ValueError, match="--out-dir"):
        train_pqmim.train(train_pqmim.PQMIMTrainConfig(), resume=source, restart_b=True)
    with pytest.raises(ValueError, match="overwrite"):
        train_pqmim.train(train_pqmim.PQMIMTrainConfig(), resume=source, restart_b=True,
                          overrides={"out_dir": str(tmp_path / "new"), "export": str(source)})
    with pytest.raises(ValueError, match="already holds a run"):
        train_pqmim.train(train_pqmim.PQMIMTrainConfig(), resume=source, restart_b=True,
                          overrides={"out_dir": str(tiny_run)})
    variant = save_checkpoint(model, tmp_path / "variant.pt", ckpt["config"],
                              extra={**extra, "perceptual": {}})
    with pytest.raises(ValueError, match="perceptual variant"):
        train_pqmim.train(train_pqmim.PQMIMTrainConfig(), resume=variant, restart_b=True,
                          overrides={"out_dir": str(tmp_path / "v")})

    # without --export the source's own export path is not inherited: nothing is exported
    bare = train_pqmim.train(train_pqmim.PQMIMTrainConfig(), resume=source, restart_b=True,
                             overrides={"out_dir": str(tmp_path / "bare"), "steps_b": 2,
                                        "crop_b": 32})
    assert (bare / "final.pt").is_file()
    assert json.loads((bare / "config.json").read_text())["config"]["export"] is None
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest
    run = train_pqmim.train(train_pqmim.PQMIMTrainConfig(), resume=source, restart_b=True,
                            overrides={"out_dir": str(tmp_path / "new"), "steps_b": 20,
                                       "crop_b": 32, "mask_law": "schedule",
                                       "export": str(tmp_path / "new.pt")})
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest  # the input is untouched
    after, new = pqmim.load_pqmim(tmp_path / "new.pt")
    assert new["train_config"]["mask_law"] == "schedule"
    assert new["train_config"]["out_dir"] == str(tmp_path / "new")
    resolved = json.loads((run / "config.json").read_text())["resolved"]
    assert resolved["stage_b_restarted_from"] == str(source)
    # the autoencoder and codebooks are the exported (float16-rounded) ones
    for name, tensor in shipped.state_dict().items():
        if not name.startswith(("entropy_model.", "prior_counts")):
            assert torch.equal(tensor, after.state_dict()[name]), name
    assert after.prior_counts.sum(-1).tolist() == [20 * 4 * 4] * TINY["M"]
    assert len(pd.read_csv(run / "log_b.csv")) == 2
    # the new run folder resumes like any other
    train_pqmim.train(train_pqmim.PQMIMTrainConfig(), resume=run, overrides={"steps_b": 30})
    assert len(pd.read_csv(run / "log_b.csv")) == 3
    img = (np.random.default_rng(2).random((32, 48, 3)) * 255).astype(np.uint8)
    assert pqmim.code_image(after, img, steps=3)["exact"]


def test_hybrid_generation_is_a_function_of_the_seed_alone():
    """Issue 33: the codes the decoder samples in hybrid mode repeat run to run, whatever
    torch's global generator holds (a fresh process seeds it at random)."""
    model = _peaked_mim(M=2, K=16, sharpness=1.0)  # flat enough that samples vary with the seed
    codes = torch.randint(0, 16, (6, 6, 2), generator=torch.Generator().manual_seed(7))
    stream = pqmim.encode_codes(model, codes, steps=4, transmit_steps=1)["bytes"]
    torch.manual_seed(123)
    first = pqmim.decode_codes(model, stream, temperature=1.0, seed=0)
    torch.seed()
    torch.rand(5)
    assert torch.equal(pqmim.decode_codes(model, stream, temperature=1.0, seed=0), first)
    assert not torch.equal(pqmim.decode_codes(model, stream, temperature=1.0, seed=1), first)


@pytest.mark.parametrize("transmitted", [0, 1, 2, 3])
def test_streams_of_very_few_codes_round_trip(transmitted):
    # CompressAI's BufferedRansEncoder overruns its buffer on 1-3 symbols: padded
    model = _peaked_mim(M=1, K=16)
    codes = torch.randint(0, 16, (2, 2, 1), generator=torch.Generator().manual_seed(5))
    out = pqmim.encode_codes(model, codes, steps=4, transmit_steps=transmitted)
    decoded = pqmim.decode_codes(model, out["bytes"], temperature=0)
    order = torch.cat(pqmim.coding_schedule(2, 2, 4))[:transmitted]
    assert torch.equal(decoded.reshape(-1)[order], codes.reshape(-1)[order])
    probs = torch.full((1, 16), 1 / 16)
    stream = pqmim.encode_independent(probs, codes.reshape(-1, 1)[:max(transmitted, 1)])
    assert torch.equal(pqmim.decode_independent(probs, stream, max(transmitted, 1)),
                       codes.reshape(-1, 1)[:max(transmitted, 1)])


# ---------------------------------------------------------------------------------------
# Local attention at inference (the attention radius of the stream header)


def test_local_attention_mask_allows_exactly_the_chebyshev_window():
    mask = pqmim.local_attention_mask(5, 7, 2)
    assert mask.shape == (35, 35) and mask.dtype == torch.bool
    assert torch.equal(mask, mask.T) and not mask.diagonal().any()
    i, j = divmod(17, 7)  # position (2, 3): its whole 5x5 window lies inside the grid
    allowed = (~mask[17]).reshape(5, 7).nonzero().tolist()
    assert allowed == [[a, b] for a in range(i - 2, i + 3) for b in range(j - 2, j + 3)]
    assert int((~mask[0]).sum()) == 9  # corner: window clipped to 3x3
    assert pqmim.local_attention_mask(5, 7, 0) is None  # global
    assert pqmim.local_attention_mask(5, 7, 6) is None  # window covers the grid
    with pytest.raises(ValueError, match=">= 0"):
        pqmim.local_attention_mask(5, 7, -1)


def test_local_attention_ignores_codes_beyond_its_receptive_field():
    # one transformer layer at radius 1, after the 3x3 positional convolution: position
    # (0, 0) sees tokens within Chebyshev distance 2, no farther
    model = _peaked_mim(M=2, K=16, sharpness=1.0)
    gen = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 16, (1, 6, 8, 2), generator=gen)
    visible = torch.ones(1, 6, 8, 2, dtype=torch.bool)
    far = codes.clone()
    far[0, 5, 7] = (far[0, 5, 7] + 1) % 16
    near = codes.clone()
    near[0, 2, 2] = (near[0, 2, 2] + 1) % 16
    with torch.no_grad():
        base = model(codes, visible, radius=1)
        assert torch.allclose(base[0, 0, 0], model(far, visible, radius=1)[0, 0, 0])
        assert not torch.allclose(base[0, 0, 0], model(near, visible, radius=1)[0, 0, 0])
        # global attention does see the far code
        assert not torch.allclose(model(codes, visible)[0, 0, 0], model(far, visible)[0, 0, 0])
        # a window that covers the grid is global attention
        assert torch.equal(model(codes, visible, radius=7), model(codes, visible))


@pytest.mark.parametrize("radius", [1, 2, 5])
def test_stream_carries_its_attention_radius(radius):
    model = _peaked_mim(M=2, K=32, seed=4, sharpness=2.0)
    codes = torch.randint(0, 32, (9, 11, 2), generator=torch.Generator().manual_seed(radius))
    out = pqmim.encode_codes(model, codes, steps=6, radius=radius)
    assert out["radius"] == radius
    assert pqmim.HEADER.unpack(out["bytes"][:pqmim.HEADER.size])[-1] == radius
    model.attention_radius = 0  # the decoder follows the header, not its own default
    assert torch.equal(pqmim.decode_codes(model, out["bytes"]), codes)
    assert math.isclose(out["bits_est"], sum(pqmim.bits_per_step(model, codes, 6, radius)),
                        rel_tol=1e-9)
    global_bits = pqmim.encode_codes(model, codes, steps=6)["bits_est"]
    assert not math.isclose(out["bits_est"], global_bits, rel_tol=1e-6)
    # the model's own radius is the default
    model.attention_radius = radius
    assert pqmim.encode_codes(model, codes, steps=6)["bytes"] == out["bytes"]
    with pytest.raises(ValueError, match="0..255"):
        pqmim.encode_codes(model, codes, steps=6, radius=256)


def test_tuned_radius_is_written_into_the_checkpoint_and_loaded_from_its_config(tiny_run, tmp_path):
    model, ckpt = pqmim.load_pqmim(tiny_run / "final.pt")
    assert model.attention_radius == pqmim.GLOBAL_ATTENTION  # none tuned
    path = save_checkpoint(model, tmp_path / "M2-K16.pt", ckpt["config"])
    images = [(f"im{i}", (np.random.default_rng(i).random((64, 96, 3)) * 255).astype(np.uint8))
              for i in range(2)]
    table = pqmim.tune_attention_radius(model, images, steps=3, candidates=(0, 1, 2))
    assert len(table) == 2 * 3 * 3 and set(table["radius"]) == {0, 1, 2}
    assert set(table["step"]) == {1, 2, 3}
    assert (table["positions"] == 4 * 6).all()
    best = pqmim.best_radius(table)
    assert table.groupby("radius")["bits"].sum()[best] == table.groupby("radius")["bits"].sum().min()
    checkpoints.update_config(path, attention_radius=2)
    tuned, _ = pqmim.load_pqmim(path)
    assert tuned.entropy_model.attention_radius == 2
    row = pqmim.rate_table({"m": tuned}, images[:1], steps=3)
    assert row["radius"].tolist() == [2] and row["exact"].all()
    assert pqmim.rate_table({"m": tuned}, images[:1], steps=3, radius=0)["radius"].tolist() == [0]
    assert not pqmim.radius_is_current(path)  # no record
    record = pqmim.save_tuned_radius(path, table)
    assert record["radius"] == best and pqmim.radius_is_current(path)
    assert pqmim.load_pqmim(path)[1]["config"]["attention_radius"] == best
    save_checkpoint(tuned, path, {"mask_law": "schedule"}, extra={"note": "retrained"})
    assert not pqmim.radius_is_current(path)
    with pytest.raises(ValueError, match="0..255"):  # the stream header's byte
        pqmim.code_image(pqmim.PQMIM(**TINY, attention_radius=256).eval(), images[0][1], steps=3)


def _tune_script():
    spec = importlib.util.spec_from_file_location(
        "tune_pqmim_radius", Path(__file__).resolve().parents[1] / "scripts" / "tune_pqmim_radius.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tuning_crop_is_centred_and_follows_the_orientation():
    crop = data.centre_crop_oriented
    img = np.arange(10 * 6 * 3).reshape(10, 6, 3)  # portrait
    assert np.array_equal(crop(img, 2, 4), img[3:7, 2:4])  # transposed window, centred
    assert crop(img.transpose(1, 0, 2), 2, 4).shape == (2, 4, 3)
    with pytest.raises(ValueError, match="smaller than"):
        crop(img, 8, 12)


def test_tuning_script_writes_the_radius_of_a_checkpoint_and_its_perceptual_variant(
        tiny_run, tmp_path):
    if not data.shared_data_dir().joinpath("photos-hr").is_dir():
        pytest.skip("photos-hr is not on this machine")
    model, ckpt = pqmim.load_pqmim(tiny_run / "final.pt")
    base = save_checkpoint(model, tmp_path / "M2-K16.pt", ckpt["config"])
    variant = save_checkpoint(model, tmp_path / "M2-K16-perceptual.pt", ckpt["config"],
                              extra={"perceptual": {}})
    script = _tune_script()
    assert script.main(["--checkpoint", str(base), "--images", "1", "--steps", "3",
                        "--candidates", "0", "1", "3"]) == 0
    record = json.loads(pqmim.radius_path(base).read_text())
    assert record["radius"] in (0, 1, 3) and set(record["bits_by_radius"]) == {"0", "1", "3"}
    assert record["tuning_set"] == "photos-hr" and len(record["images"]) == 1
    assert pqmim.load_pqmim(variant)[0].entropy_model.attention_radius == record["radius"]
    with pytest.raises(SystemExit, match="perceptual"):
        script.main(["--checkpoint", str(variant), "--images", "1"])
    with pytest.raises(SystemExit):  # argparse error: no global-attention reference
        script.main(["--checkpoint", str(base), "--candidates", "3", "4"])


def test_code_to_budget_sends_the_most_steps_that_fit_and_completes_the_rest(tiny_run):
    model, _ = pqmim.load_pqmim(tiny_run / "final.pt")
    img = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    sizes = {s: pqmim.code_image(model, img, steps=4, transmit_steps=s)["bytes"] for s in range(1, 5)}
    budget = (sizes[2] + sizes[3]) // 2 if sizes[3] > sizes[2] else sizes[2]
    r = pqmim.code_to_budget(model, img, budget, steps=4, samples=2)
    assert r["fits"] and r["transmit_steps"] == max(s for s, b in sizes.items() if b <= budget)
    assert r["bytes"] == sizes[r["transmit_steps"]] <= budget
    names = [c["completion"] for c in r["completions"]]
    assert names == ["argmax", "sample 0", "sample 1"]
    assert all(c["x_hat"].shape == img.shape for c in r["completions"])
    # the argmax completion is deterministic: decoding again gives the same pixels
    again = pqmim.code_to_budget(model, img, budget, steps=4, samples=0)
    assert np.array_equal(again["completions"][0]["x_hat"], r["completions"][0]["x_hat"])
    none_fit = pqmim.code_to_budget(model, img, 1, steps=4, samples=0)
    assert not none_fit["fits"] and none_fit["transmit_steps"] == 0 and none_fit["bytes"] == sizes[1]


def test_extreme_gallery_rows_say_whether_each_file_fits_and_every_panel_is_drawn(tiny_run):
    from nic_lib import extreme  # a module above the models (codecs + PQ-MIM)
    model, _ = pqmim.load_pqmim(tiny_run / "final.pt")
    images = [("a", (np.random.default_rng(2).random((48, 64, 3)) * 255).astype(np.uint8))]
    budget = pqmim.code_image(model, images[0][1], steps=4, transmit_steps=2)["bytes"]
    table, pictures = extreme.gallery_table(model, "pq", images, budget, ("jpeg", "jpeg2000"), steps=4, samples=1)
    assert list(table["codec"]) == ["pq", "pq", "jpeg", "jpeg2000"]
    assert (table["fits"] == (table["bytes"] <= budget)).all()
    classic = table[table["codec"] != "pq"]
    assert (classic["bytes"] >= 0).all() and (classic[~classic["fits"]]["bytes"] == classic[~classic["fits"]]["min_bytes"]).all()
    assert set(pictures) == set(zip(table["image"], table["codec"], table["completion"]))
    fig = extreme.gallery_figure(table, pictures, images, budget)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 1 + len(table) and all("B" in t and "dB" in t for t in titles[1:])


def test_plain_vq_rate_point_trains_end_to_end_and_codes_exactly(tmp_path):
    """M = 1 (the VQ baseline of scripts/train_pqmim_cpu.py) through both stages."""
    cfg = train_pqmim.PQMIMTrainConfig(**{**TINY, "M": 1, "K": 16}, data=("sample",), crop=64, batch_size=4,
                                       steps_a=8, steps_b=8, warmup_steps=2, log_every=4, ckpt_every=0,
                                       mask_law="schedule", out_dir=str(tmp_path / "vq"))
    model, _ = pqmim.load_pqmim(train_pqmim.train(cfg) / "final.pt")
    assert model.M == 1 and model.K == 16
    img = (np.random.default_rng(3).random((32, 48, 3)) * 255).astype(np.uint8)
    assert pqmim.code_image(model, img, steps=4)["exact"]


def test_pqmim_recipes_list_the_vq_pair_with_budgets_and_parse(capsys):
    spec = importlib.util.spec_from_file_location("train_pqmim_cpu_under_test",
                                                  Path(__file__).resolve().parents[1] / "scripts" / "train_pqmim_cpu.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    bits = {}
    for name in script.VQ_PAIR:
        flags = script.RATE_POINTS[name]
        M, K = int(flags[flags.index("--M") + 1]), int(flags[flags.index("--K") + 1])
        bits[name] = M * math.log2(K)
        args = train_pqmim._parser().parse_args([*script.COMMON, *flags])
        assert args.M == M and args.K == K
    assert len(set(bits.values())) == 1  # the pair has the same bits per token
    assert sorted(int(script.RATE_POINTS[n][1]) for n in script.VQ_PAIR)[0] == 1  # one of them is plain VQ
    script.main(["--list", "--only", *script.VQ_PAIR])
    out = capsys.readouterr().out
    assert all(f"{n} [" in out and "CPU h]" in out for n in script.VQ_PAIR)


def test_shipped_checkpoints_state_their_masking_law_and_tuned_radius():
    paths = pqmim.find_checkpoints() + pqmim.find_checkpoints(perceptual=True)
    if not paths:
        pytest.skip(f"no shipped PQ-MIM checkpoints in {pqmim.checkpoint_dir()}")
    laws = {}
    for path in paths:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        assert ckpt["format"] == checkpoints.CHECKPOINT_FORMAT and ckpt["model"] == "pqmim"
        assert ckpt["dtype"] == "float16" and ckpt["state_dict"]["g_a.0.bias"].dtype == torch.float32
        assert ckpt["config"]["mask_law"] in pqmim.MASK_LAWS
        # the radius the tuning record chose, and the record was made on this very file
        record = json.loads(pqmim.radius_path(path).read_text())
        assert ckpt["config"]["attention_radius"] == record["radius"]
        assert pqmim.radius_is_current(path)
        laws[path.stem] = ckpt["config"]["mask_law"]
    assert laws.get("M8-K256", "cosine") == "cosine"  # trained before the schedule law


def test_update_config_refuses_a_config_the_weights_do_not_fit(tiny_run, tmp_path):
    path = tmp_path / "m.pt"
    path.write_bytes((tiny_run / "final.pt").read_bytes())
    before = path.read_bytes()
    with pytest.raises(checkpoints.CheckpointMismatchError, match="no longer fit"):
        checkpoints.update_config(path, M=4)
    assert path.read_bytes() == before
    checkpoints.update_config(path, attention_radius=3)
    assert pqmim.load_pqmim(path)[0].attention_radius == 3
