"""Function-preserving widening of the latent and hidden layers (nic_lib.models.widen).

The promise: the widened model computes the same reconstruction and (up to the ~1e-5 bit
a zero latent costs) the same bits as the source, in evaluation and in the first training
step, and its new channels can still learn.
"""

from __future__ import annotations

import math

import pytest
import torch

from nic_lib.models import build_model, variable_rate
from nic_lib.models.widen import add_levels, widen_hidden, widen_latent

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

LMBDAS = [0.0018, 0.0130, 0.0483]


def _source(variable: bool = True, context_size: int = 5, per_level: bool = False):
    torch.manual_seed(0)
    config = {"N": 8, "M": 12, "context_size": context_size}
    if variable:
        config.update(lmbdas=LMBDAS, reference_lmbda=0.013)
    if per_level:
        config.update(per_level_hyper_density=True)
    model = build_model("mbt2018", **config)
    with torch.no_grad():  # a "trained" model: biases and scales away from their init
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.update(force=True)
    return model.eval(), {"model": "mbt2018", **config}


def _image(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=64, mode="bicubic").clamp(0, 1)


def _bits(out: dict) -> float:
    return sum((-torch.log2(v)).sum().item() for v in out["likelihoods"].values())


@pytest.mark.parametrize("context_size", [3, 5])
def test_widened_model_reconstructs_and_rates_like_the_source(context_size):
    source, config = _source(context_size=context_size)
    wide, wide_config = widen_latent(source, config, 20)
    assert wide.M == 20 and wide_config["M"] == 20
    x = _image()
    for level in range(len(LMBDAS)):
        variable_rate.set_rate_level(source, level)
        variable_rate.set_rate_level(wide, level)
        with torch.no_grad():
            a, b = source(x), wide(x)
        assert torch.equal(a["x_hat"], b["x_hat"])
        # 8 new channels x 16 latents at a scale of 0.11 cost about 1e-5 bit each
        assert _bits(a) <= _bits(b) <= _bits(a) + 0.01


def test_widened_model_codes_the_same_bytes_and_decodes_the_same_image():
    source, config = _source()
    wide, _ = widen_latent(source, config, 20)
    x = _image(1)
    a, b = source.compress(x), wide.compress(x)
    assert a["strings"][1] == b["strings"][1]  # z: unchanged
    assert sum(map(len, a["strings"][0])) == sum(map(len, b["strings"][0]))
    x_a = source.decompress(a["strings"], a["shape"])["x_hat"]
    x_b = wide.decompress(b["strings"], b["shape"])["x_hat"]
    assert torch.equal(x_a, x_b)


def test_first_training_step_sees_the_same_loss_and_new_channels_get_gradients():
    source, config = _source(variable=False)
    wide, _ = widen_latent(source, config, 20)
    source.train(), wide.train()
    x = _image(2)
    # the training forward: ŷ = y + u. Same u on the old channels, any u on the new ones
    y_a, y_b = source.g_a(x), wide.g_a(x)
    assert torch.equal(y_b[:, 12:], torch.zeros_like(y_b[:, 12:]))
    g = torch.Generator().manual_seed(5)
    u = torch.rand(y_b.shape, generator=g) - 0.5
    x_a = source.g_s(y_a + u[:, :12])
    x_b = wide.g_s(y_b + u)
    # g_s reads the new channels with zero weights: the noise on them changes nothing
    torch.testing.assert_close(x_b, x_a, rtol=0, atol=1e-6)
    d_b = torch.mean((x_b - x) ** 2)
    d_b.backward()
    grad = wide.g_s[0].weight.grad[12:]  # ConvTranspose2d: (in, out, k, k), new inputs
    assert grad.abs().sum() > 0  # δ·u ≠ 0: the new channels start learning at once


def test_added_levels_keep_the_trained_ones_and_extrapolate_the_learned_gain_step():
    source, config = _source()  # levels q1, q4, q6 (λ 0.0018, 0.013, 0.0483)
    grown, grown_config = add_levels(source, config, [1, 4, 6, 8])
    assert variable_rate.rate_levels(grown) == [0.0018, 0.013, 0.0483, 0.18]
    assert grown_config["qualities"] == [1, 4, 6, 8]
    x = _image(3)
    for level in range(3):
        variable_rate.set_rate_level(source, level)
        variable_rate.set_rate_level(grown, level)
        with torch.no_grad():
            assert torch.equal(source(x)["x_hat"], grown(x)["x_hat"])
    for unit in ("gain", "inverse_gain"):
        old = getattr(source, unit).log_gain.detach()
        new = getattr(grown, unit).log_gain.detach()
        step = (old[2] - old[1]) / math.log(0.0483 / 0.013)
        torch.testing.assert_close(new[3], old[2] + step * math.log(0.18 / 0.0483))
    # a level between two trained ones and below the lowest: interpolated, extrapolated
    mid, _ = add_levels(source, config, [1, 2, 4, 6])
    g = source.gain.log_gain.detach()
    step = (g[1] - g[0]) / math.log(0.013 / 0.0018)
    torch.testing.assert_close(mid.gain.log_gain.detach()[1], g[0] + step * math.log(0.0035 / 0.0018))
    with pytest.raises(ValueError, match="keep every trained"):
        add_levels(source, config, [1, 8])
    fixed, fixed_config = _source(variable=False)
    with pytest.raises(ValueError, match="variable-rate"):
        add_levels(fixed, fixed_config, [1, 8])


def _bits_tensor(out: dict) -> torch.Tensor:
    return sum((-torch.log2(v)).sum() for v in out["likelihoods"].values())


def test_widening_refuses_a_narrower_width_and_other_models():
    source, config = _source()
    with pytest.raises(ValueError, match="larger than 12"):
        widen_latent(source, config, 12)
    with pytest.raises(ValueError, match="even"):
        widen_latent(source, config, 15)
    torch.manual_seed(0)
    other = build_model("mbt2018-mean", N=8, M=12)
    with pytest.raises(ValueError, match="supports"):
        widen_latent(other, {"model": "mbt2018-mean", "N": 8, "M": 12}, 20)


@pytest.mark.parametrize("per_level", [False, True])
def test_hidden_widened_model_reconstructs_and_rates_like_the_source(per_level):
    source, config = _source(per_level=per_level)
    wide, wide_config = widen_hidden(source, config, 13)
    assert wide.N == 13 and wide_config["N"] == 13 and wide.M == source.M
    x = _image(4)
    for level in range(len(LMBDAS)):
        variable_rate.set_rate_level(source, level)
        variable_rate.set_rate_level(wide, level)
        with torch.no_grad():
            a, b = source(x), wide(x)
            z = wide.h_a(wide.g_a(x))
        assert torch.equal(z[:, 8:], torch.zeros_like(z[:, 8:]))  # z's new channels are 0
        torch.testing.assert_close(b["x_hat"], a["x_hat"], rtol=0, atol=1e-6)
        bits_a = {k: (-torch.log2(v)).sum().item() for k, v in a["likelihoods"].items()}
        bits_b = {k: (-torch.log2(v)).sum().item() for k, v in b["likelihoods"].items()}
        assert bits_b["y"] == pytest.approx(bits_a["y"], abs=1e-3)
        # each of the 5 new z channels costs, at every position, what the most peaked
        # trained density costs at its median (z = 0 sits at the re-centred median)
        eb = source.entropy_bottleneck
        if per_level:
            eb = eb.bottlenecks[level]
        with torch.no_grad():
            peak = eb._likelihood(eb.quantiles[:, :, 1:2])[0].max().clamp_min(1e-9)
        expected = 5 * z.shape[-2] * z.shape[-1] * -math.log2(peak.item())
        assert bits_b["z"] - bits_a["z"] == pytest.approx(expected, rel=1e-3, abs=1e-3)
    # real bitstreams: the same y bytes, the same decoded image
    variable_rate.set_rate_level(source, 1)
    variable_rate.set_rate_level(wide, 1)
    sa, sb = source.compress(x), wide.compress(x)
    assert sa["strings"][0] == sb["strings"][0]
    x_a = source.decompress(sa["strings"], sa["shape"])["x_hat"]
    x_b = wide.decompress(sb["strings"], sb["shape"])["x_hat"]
    torch.testing.assert_close(x_b, x_a, rtol=0, atol=1e-6)


def test_hidden_widening_new_units_start_at_zero_and_get_gradients():
    source, config = _source(variable=False)
    wide, _ = widen_hidden(source, config, 13)
    wide.train()
    x = _image(5)
    out = wide(x)
    loss = torch.mean((out["x_hat"] - x) ** 2) + sum(
        (-torch.log2(v)).sum() for v in out["likelihoods"].values()) / x.numel()
    loss.backward()
    # new units' filters are 0 and learn at once (their readers are random, or see noise)
    for conv in (wide.g_a[0], wide.g_a[2], wide.h_a[4]):
        assert torch.equal(conv.weight[8:], torch.zeros_like(conv.weight[8:]))
        assert conv.weight.grad[8:].abs().sum() > 0
    assert torch.equal(wide.g_s[2].weight[:, 8:], torch.zeros_like(wide.g_s[2].weight[:, 8:]))
    assert wide.g_s[2].weight.grad[:, 8:].abs().sum() > 0  # ConvTranspose2d: (in, out, ...)
    assert torch.equal(wide.h_s[0].weight[8:], torch.zeros_like(wide.h_s[0].weight[8:]))
    assert wide.h_s[0].weight.grad[8:].abs().sum() > 0  # δ·(0 + u): z's noise reaches it
    # GDN of the new units: GDN's own init (β = 1, γ = 0.1 on the diagonal), old block kept
    gdn_old, gdn_new = source.g_a[1], wide.g_a[1]
    torch.testing.assert_close(gdn_new.gamma_reparam(gdn_new.gamma)[:8, :8],
                               gdn_old.gamma_reparam(gdn_old.gamma))
    torch.testing.assert_close(gdn_new.gamma_reparam(gdn_new.gamma)[8:, 8:],
                               0.1 * torch.eye(5), atol=1e-6, rtol=0)
    assert torch.all(gdn_new.gamma_reparam(gdn_new.gamma)[:8, 8:] == 0)


def test_hidden_widening_refuses_a_narrower_width_and_other_models():
    source, config = _source()
    with pytest.raises(ValueError, match="larger than 8"):
        widen_hidden(source, config, 8)
    torch.manual_seed(0)
    other = build_model("mbt2018-mean", N=8, M=12)
    with pytest.raises(ValueError, match="supports"):
        widen_hidden(other, {"model": "mbt2018-mean", "N": 8, "M": 12}, 16)


def test_levels_below_quality_1_extrapolate_the_lowest_gain_step():
    from nic_lib.models import LAMBDA_MSE, LOW_RATE_QUALITIES

    source, config = _source()  # levels q1, q4, q6
    grown, grown_config = add_levels(source, config, [*LOW_RATE_QUALITIES, 1, 4, 6])
    assert grown_config["qualities"] == [*LOW_RATE_QUALITIES, 1, 4, 6]
    assert variable_rate.rate_levels(grown) == sorted(LAMBDA_MSE[q] for q in grown_config["qualities"])
    g = source.gain.log_gain.detach()
    step = (g[1] - g[0]) / math.log(0.013 / 0.0018)
    low = LAMBDA_MSE[min(LOW_RATE_QUALITIES)]
    torch.testing.assert_close(grown.gain.log_gain.detach()[0], g[0] + step * math.log(low / 0.0018))
    x = _image(5)
    n = len(LOW_RATE_QUALITIES)
    with torch.no_grad():  # the trained levels code as before
        variable_rate.set_rate_level(source, 0)
        variable_rate.set_rate_level(grown, n)
        assert torch.equal(source(x)["x_hat"], grown(x)["x_hat"])


@pytest.mark.parametrize("per_level", [False, True])
@pytest.mark.parametrize("qualities", [[4, 6], [6]])
def test_selected_levels_code_exactly_like_the_same_levels_of_the_source(per_level, qualities):
    from nic_lib.models import registry
    from nic_lib.models.widen import select_levels

    source, config = _source(per_level=per_level)
    top, top_config = select_levels(source, config, qualities)
    assert top_config["lmbdas"] == [registry.LAMBDA_MSE[q] for q in qualities]
    assert variable_rate.rate_levels(top) == top_config["lmbdas"]
    x = _image(1)
    for level, q in enumerate(qualities):
        variable_rate.set_rate_level(top, level)
        variable_rate.set_rate_level(source, LMBDAS.index(registry.LAMBDA_MSE[q]))
        with torch.no_grad():
            a, b = source(x), top(x)
            assert torch.equal(a["x_hat"], b["x_hat"])
            assert _bits(a) == _bits(b)
            assert source.compress(x)["strings"] == top.compress(x)["strings"]
    with pytest.raises(ValueError, match="not a level"):
        select_levels(source, config, [8])
