"""Properties of benchmarks/hyperprior_tails.py's per-image statistics on a tiny untrained
scale hyperprior whose predicted scales are forced dead (σ = 0) or huge."""

import numpy as np
import pytest
import torch

from nic_lib.coding import pad_to, to_tensor
from nic_lib.models.registry import build_model
from benchmark_modules import load_benchmark

ht = load_benchmark("hyperprior_tails")


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = build_model("bmshj2018-hyperprior", N=8, M=12).eval()
    with torch.no_grad():
        m.g_a[-1].weight.mul_(50.0)  # latents far from 0, so a small σ puts them at the floor
    return m


def _image():
    return np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def test_estimate_matches_forward(model):
    s = ht.scale_stats(model, _image())
    with torch.no_grad():
        out = model(pad_to(to_tensor(_image()), 64))
    for key in ("y", "z"):
        expected = float(-torch.log2(out["likelihoods"][key]).sum())
        assert s[f"{key}_est_bits"] == pytest.approx(expected, rel=1e-5)
    assert s["latents"] == out["likelihoods"]["y"].numel()


def test_dead_scales_are_counted(model):
    with torch.no_grad():
        model.h_s[-2].bias.fill_(-1e3)  # every unit of h_s's final ReLU dead: σ = 0
    s = ht.scale_stats(model, _image())
    assert s["at_floor"] > 0
    assert s["floor_dead_sigma"] == s["at_floor"]
    # |ŷ| / σ with σ at the coder's lower bound 0.11: p < 1e-9 needs about 6σ
    assert float(s["floor_ratios"].min()) > 5.0


def test_wide_scales_leave_no_floor(model):
    with torch.no_grad():
        model.h_s[-2].bias.fill_(1e4)  # σ far wider than any latent
    s = ht.scale_stats(model, _image())
    assert s["at_floor"] == 0 and s["floor_dead_sigma"] == 0
    assert len(s["floor_ratios"]) == 0
