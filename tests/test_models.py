"""Properties of the mbt2018 family (nic_lib.models).

Tiny widths (N=8, M=12) and small smooth random images keep every test fast. The
latent-coding tests compare the decoder's y_hat (captured at g_s's input) with an
independent reference: the model's own forward pass where it quantizes like the coder,
and a slow full-tensor raster loop for the serial context models.
"""

from __future__ import annotations

import copy
import functools
import pickle

import compressai.zoo.image
import pytest
import torch
import torch.nn.functional as F
from compressai.models.google import (
    JointAutoregressiveHierarchicalPriors as CompressAIJoint,
)

from nic_lib.models import (
    CPU_PROFILE_WIDTHS,
    FULL_WIDTHS,
    LAMBDA_MSE,
    LOW_RATE_QUALITIES,
    CheckpointError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    JointAutoregressiveHierarchicalPriors,
    PretrainedWeightsUnavailableError,
    available_models,
    build_model,
    default_config,
    get_model,
    load_checkpoint,
    quality_models,
    read_config,
    save_checkpoint,
)
from nic_lib.models import google, hub, mixture, registry, tiling
from nic_lib.models.variable_rate import set_rate_level

TINY = {"N": 8, "M": 12}
SIDE = 64  # the smallest input the hyperprior models accept (downsampling factor 64)
PLAIN_MODELS = ["bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean"]
CONTEXT_MODELS = ["mbt2018", "mbt2018-context", "mbt2018-gmm", "mbt2018-checkerboard"]
RASTER_MODELS = ["mbt2018", "mbt2018-context", "mbt2018-gmm"]
HYPERPRIOR_FREE = {"bmshj2018-factorized", "mbt2018-context"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, **TINY, **kwargs)


def smooth_image(seed: int = 0, side: int = SIDE, batch: int = 1) -> torch.Tensor:
    """Low-frequency random RGB in [0, 1]: bicubically upsampled noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, side // 8, side // 8, generator=g)
    return F.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False).clamp(0, 1)


class SynthesisInput:
    """Records what g_s receives: the y_hat a forward pass or the decoder reconstructs."""

    def __init__(self, model):
        self.seen = []
        self.handle = model.g_s.register_forward_pre_hook(
            lambda module, args: self.seen.append(args[0].clone().float())  # float64 when decoding
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def round_trip(model, x):
    """(compress output, decompress x_hat, y_hat the decoder fed to g_s)."""
    with SynthesisInput(model) as rec:
        coded = model.compress(x)
        x_hat = model.decompress(coded["strings"], coded["shape"])["x_hat"]
    return coded, x_hat, rec.seen[-1]


def stream_bytes(coded) -> tuple[int, int]:
    """(total bytes, number of rANS streams) of a compress() output."""
    streams = [s for per_latent in coded["strings"] for s in per_latent]
    return sum(len(s) for s in streams), len(streams)


# --------------------------------------------------------------------------------------
# Independent references for what the coders quantize
# --------------------------------------------------------------------------------------


def _hyper_side(model, y):
    """(hyperprior features, z likelihoods) as the eval-mode coder computes them."""
    if isinstance(model, google.JointCheckerboardPrior):
        hyper = model.latent_codec["hyper"]
        z_hat, z_lik = hyper.entropy_bottleneck(hyper.h_a(y))
        return hyper.h_s(z_hat), z_lik
    z_hat, z_lik = model.entropy_bottleneck(model.h_a(y))
    return model.h_s(z_hat), z_lik


@torch.no_grad()
def reference_latents(model, x) -> tuple[torch.Tensor, float]:
    """(y_hat the coder must reproduce, -log2 likelihood of the coded symbols in bits).

    Models that code with tiled transforms (``tile_memory``) run them on the
    deterministic GEMM path, bit for bit that path's whole-image result: their
    reference is computed on it too.
    """
    if hasattr(model, "tile_memory"):
        with tiling.deterministic_convolutions():
            return _reference_latents(model, x)
    return _reference_latents(model, x)


def _reference_latents(model, x) -> tuple[torch.Tensor, float]:
    """reference_latents on the current convolution path.

    Models without a serial context and the GMM (y_hat = round(y)): the eval-mode
    forward pass, which quantizes like their coder. Serial Gaussian models: a raster
    loop over full-tensor masked convolutions (not the cropped convolutions the coder
    uses). Checkerboard: anchors from the hyperprior alone, then non-anchors from the
    anchors' context.
    """
    model.eval()
    serial = (JointAutoregressiveHierarchicalPriors, google.ContextOnlyPrior)
    if isinstance(model, google.JointGaussianMixturePrior) or not isinstance(
        model, (*serial, google.JointCheckerboardPrior)
    ):
        with SynthesisInput(model) as rec:
            out = model(x)
        bits = sum(-torch.log2(v).sum().item() for v in out["likelihoods"].values())
        return rec.seen[-1], bits

    y = model.g_a(x)
    if isinstance(model, google.ContextOnlyPrior):
        side, z_lik = None, None
    else:
        side, z_lik = _hyper_side(model, y)
    z_bits = 0.0 if z_lik is None else -torch.log2(z_lik).sum().item()

    if isinstance(model, google.JointCheckerboardPrior):
        codec = model.latent_codec["y"]
        gc = codec.latent_codec["y"].gaussian_conditional
        h, w = torch.meshgrid(torch.arange(y.shape[2]), torch.arange(y.shape[3]), indexing="ij")
        anchor = ((h + w) % 2 == 0)[None, None]
        zero_ctx = torch.zeros_like(torch.cat((y, y), dim=1))
        s0, m0 = codec.entropy_parameters(torch.cat((zero_ctx, side), 1)).chunk(2, 1)
        y_anchor = torch.where(anchor, torch.round(y - m0) + m0, torch.zeros_like(y))
        ctx = codec.context_prediction(y_anchor)
        s1, m1 = codec.entropy_parameters(torch.cat((ctx, side), 1)).chunk(2, 1)
        scales, means = torch.where(anchor, s0, s1), torch.where(anchor, m0, m1)
        y_hat = torch.round(y - means) + means
        _, y_lik = gc(y_hat, scales, means, training=False)
        return y_hat, z_bits - torch.log2(y_lik).sum().item()

    def gaussian_params(y_hat):
        ctx = model.context_prediction(y_hat)
        inp = ctx if side is None else torch.cat((side, ctx), dim=1)
        return model.entropy_parameters(inp).chunk(2, 1)

    y_hat = torch.zeros_like(y)
    for i in range(y.shape[2]):
        for j in range(y.shape[3]):
            _, means = gaussian_params(y_hat)
            y_hat[:, :, i, j] = torch.round(y - means)[:, :, i, j] + means[:, :, i, j]
    # The mask is causal, so parameters from the final y_hat are those used while coding.
    scales, means = gaussian_params(y_hat)
    _, y_lik = model.gaussian_conditional(y_hat, scales, means, training=False)
    return y_hat, z_bits - torch.log2(y_lik).sum().item()


# --------------------------------------------------------------------------------------
# Registry and contract
# --------------------------------------------------------------------------------------


def test_models_are_registered_under_the_paper_keys():
    assert set(available_models()) == (set(PLAIN_MODELS) | set(CONTEXT_MODELS)
                                       | {"elic2022", "pqmim"})
    assert quality_models() == sorted(set(available_models()) - {"pqmim"})


def test_a_single_rate_model_is_named_by_its_checkpoint_and_has_no_quality_table():
    assert registry.model_key("pqmim-M4-K256") == registry.model_key("pqmim") == "pqmim"
    assert registry.model_key("mbt2018-mean") == "mbt2018-mean"
    for unknown in ("pqmim-", "mbt2018-M4", "nope"):
        with pytest.raises(registry.UnknownModelError):
            registry.model_key(unknown)
    with pytest.raises(registry.ModelSettingError, match="no quality levels"):
        default_config("pqmim", 1)
    path = hub.single_rate_checkpoint_path("pqmim-M4-K256")
    assert path == hub.checkpoint_dir() / "pqmim" / "M4-K256.pt"
    for name in ("pqmim", "mbt2018"):
        with pytest.raises(registry.ModelSettingError):
            hub.single_rate_checkpoint_path(name)


def test_full_widths_are_compressai_zoo_widths():
    for name in ["bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean", "mbt2018"]:
        assert FULL_WIDTHS[name] == compressai.zoo.image.cfgs[name]
    for ablation in ["mbt2018-context", "mbt2018-gmm", "mbt2018-checkerboard"]:
        assert FULL_WIDTHS[ablation] == FULL_WIDTHS["mbt2018"]
    assert LAMBDA_MSE[1] == 0.0018 and LAMBDA_MSE[8] == 0.18 and len(LAMBDA_MSE) == 8 + len(LOW_RATE_QUALITIES)


def test_low_rate_levels_continue_the_table_and_reach_pqmims_rates_on_the_measured_law():
    from pathlib import Path

    import numpy as np
    import pandas as pd

    lams = [LAMBDA_MSE[q] for q in sorted(LAMBDA_MSE)]
    assert lams == sorted(lams) and min(LOW_RATE_QUALITIES) < 1 and max(LOW_RATE_QUALITIES) == 0
    ratios = np.diff(np.log(lams[: len(LOW_RATE_QUALITIES) + 3]))
    assert np.allclose(ratios, np.log(1.93), atol=0.05)  # the table's own spacing
    e = pd.read_csv(Path(__file__).resolve().parents[1] / "checkpoints" / "mbt2018" / "n96.eval.csv")
    e = e[(e["step"] == e["step"].max()) & (e["weights"] == "ema") & (e["quality"] <= 3)]
    slope = np.polyfit(np.log(e["lmbda"]), np.log(e["bpp"]), 1)[0]
    assert 0.5 < slope < 0.62  # the law the docstring quotes (0.56)
    kodak_q1 = 0.22  # n96 q1 on Kodak (issue 31)
    lowest = kodak_q1 * (LAMBDA_MSE[min(LOW_RATE_QUALITIES)] / LAMBDA_MSE[1]) ** slope
    assert 0.03 < lowest < 0.045  # PQ-MIM's lowest shipped point is 0.042 bpp


def test_transforms_are_compressai_mbt2018_layers():
    reference = CompressAIJoint(**TINY)
    for attr, build in [("g_a", google.analysis_transform), ("g_s", google.synthesis_transform),
                        ("h_a", google.hyper_analysis), ("h_s", google.hyper_synthesis)]:
        ours = {k: v.shape for k, v in build(**TINY).state_dict().items()}
        assert ours == {k: v.shape for k, v in getattr(reference, attr).state_dict().items()}
    ours = google.entropy_parameters_network(4 * TINY["M"], 2 * TINY["M"]).state_dict()
    theirs = reference.entropy_parameters.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


@pytest.mark.parametrize("name", PLAIN_MODELS + CONTEXT_MODELS)
def test_forward_follows_the_compressai_contract(name):
    model = tiny(name)
    x = smooth_image()
    for training in (True, False):
        model.train(training)
        out = model(x)
        assert out["x_hat"].shape == x.shape
        expected = {"y"} if name in HYPERPRIOR_FREE else {"y", "z"}
        assert set(out["likelihoods"]) == expected
        for likelihood in out["likelihoods"].values():
            assert ((likelihood > 0) & (likelihood <= 1)).all()
    assert torch.isfinite(model.aux_loss())


def test_even_context_size_is_rejected():
    with pytest.raises(ValueError, match="odd"):
        tiny("mbt2018", context_size=4)


# --------------------------------------------------------------------------------------
# Lossless latent coding
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PLAIN_MODELS)
def test_decoder_reproduces_forward_quantization(name):
    model = tiny(name).eval()
    model.update(force=True)
    x = smooth_image(batch=2)
    y_ref, _ = reference_latents(model, x)
    _, x_hat, y_hat = round_trip(model, x)
    if name == "mbt2018-mean":
        # the coder's means are float64, snapped to 2^-16 (models.google._HyperpriorCoding):
        # ŷ = q + μ moves by at most 2^-17 from the float32 forward pass, q does not change
        assert torch.allclose(y_hat.to(y_ref.dtype), y_ref, atol=2.0**-16)
    else:
        assert torch.equal(y_hat, y_ref)
    assert torch.allclose(x_hat, model(x)["x_hat"].clamp(0, 1), atol=1e-5)


@pytest.mark.parametrize("context_size", [3, 5, 7])
@pytest.mark.parametrize("name", CONTEXT_MODELS)
def test_decoder_reproduces_the_quantized_latents(name, context_size):
    model = tiny(name, context_size=context_size).eval()
    model.update(force=True)
    x = smooth_image(seed=1)
    # Spread y over many integers so that every context term matters.
    with torch.no_grad():
        model.g_a[-1].weight.mul_(30)
    _, x_hat, y_hat = round_trip(model, x)
    y_ref, _ = reference_latents(model, x)
    assert y_ref.abs().max() > 3
    if name == "mbt2018-gmm":  # y_hat = round(y): no predicted mean in the latents
        assert torch.equal(y_hat, y_ref)
    assert torch.allclose(y_hat, y_ref, atol=1e-4)
    with torch.no_grad():
        assert torch.allclose(x_hat, model.g_s(y_ref).clamp(0, 1), atol=1e-5)


def test_mixture_tables_follow_the_mixture_pmf():
    weights = torch.tensor([[0.2, 1.0], [0.5, 0.0], [0.3, 0.0]])
    means = torch.tensor([[-3.0, 0.3], [0.0, 0.0], [4.2, 0.0]])
    scales = torch.tensor([[0.5, 2.0], [1.0, 1.0], [2.0, 1.0]])
    cdfs, lengths, offsets = mixture.mixture_quantized_cdfs(weights, means, scales)
    for i in range(2):
        v = torch.arange(offsets[i], offsets[i] + lengths[i] - 2, dtype=torch.float64)
        component = torch.distributions.Normal(
            means[:, i, None].double(), scales[:, i, None].double()
        )
        # P(v) = sum_k w_k [Phi((v + 1/2 - mu_k) / s_k) - Phi((v - 1/2 - mu_k) / s_k)]
        pmf = (weights[:, i, None] * (component.cdf(v + 0.5) - component.cdf(v - 0.5))).sum(0)
        cdf = torch.tensor(cdfs[i], dtype=torch.float64)
        assert cdf[0] == 0 and cdf[-1] == 2**16 and (cdf.diff() > 0).all()
        quantized = cdf.diff()[:-1] / 2**16  # drop the escape symbol
        assert torch.allclose(quantized, pmf, atol=1e-3)
        assert pmf.sum() > 1 - 1e-6  # the support holds all but the tail mass

    # Modes far apart: the table stays bounded and the far mode goes to the escape symbol.
    far = torch.tensor([[-5000.0], [5000.0]])
    cdfs, lengths, _ = mixture.mixture_quantized_cdfs(
        torch.tensor([[0.7], [0.3]]), far, torch.ones(2, 1)
    )
    assert lengths[0] < 5000  # not the 10000 symbols between the modes
    assert abs((cdfs[0][-1] - cdfs[0][-2]) / 2**16 - 0.3) < 1e-3  # escape = far mode


# --------------------------------------------------------------------------------------
# Real bits against estimated bits
# --------------------------------------------------------------------------------------

#: A short rate-distortion fit, so that the entropy models describe the latents they
#: code: random-init models put many symbols far in their tails, where the likelihood
#: bound (1e-9) and the coder's 16-bit escape code make estimated and real bits
#: disagree for reasons unrelated to the coder. Checked over several seeds.
FIT_STEPS, FIT_LR, FIT_LAMBDA = 100, 3e-3, 0.5

#: g_a's last layer starts scaled up so that y spans many integers (a few bits each).
LATENT_GAIN = 10.0

#: Start value added to a scale-only h_s's last bias: its final ReLU otherwise leaves
#: some scales dead at 0, far below the latents they describe, for many more steps.
SCALE_BIAS = 1.0

#: Bytes per rANS stream beyond the information content: the 64-bit final state.
RANS_FLUSH_BYTES = 8


@functools.lru_cache(maxsize=None)
def fitted(name: str):
    """A tiny model fitted to one 128x128 image, coder tables built."""
    model = tiny(name)
    with torch.no_grad():
        model.g_a[-1].weight.mul_(LATENT_GAIN)
        h_s = getattr(model, "h_s", None)
        if h_s is not None and isinstance(h_s[-1], torch.nn.ReLU):
            h_s[-2].bias.add_(SCALE_BIAS)
    x = smooth_image(seed=3, side=128)
    quantiles = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
    others = [p for n, p in model.named_parameters() if not n.endswith("quantiles")]
    optimizer = torch.optim.Adam(others, lr=FIT_LR)
    aux_optimizer = torch.optim.Adam(quantiles, lr=0.1) if quantiles else None
    for _ in range(FIT_STEPS):
        out = model(x)
        bpp = sum(-torch.log2(v).sum() for v in out["likelihoods"].values()) / (x.numel() / 3)
        loss = bpp + FIT_LAMBDA * 255**2 * F.mse_loss(out["x_hat"], x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if aux_optimizer:
            aux_optimizer.zero_grad()
            model.aux_loss().backward()
            aux_optimizer.step()
    model.eval()
    # Bisection for the entropy bottleneck's tail quantiles (CompressAI 1.2.8), so its
    # tables cover z's density whatever the short aux fit reached.
    model.update(force=True, update_quantiles=True)
    return model, x


@pytest.mark.slow
@pytest.mark.parametrize("name", PLAIN_MODELS + CONTEXT_MODELS)
def test_real_bits_exceed_and_track_estimated_bits(name):
    model, x = fitted(name)
    _, estimated_bits = reference_latents(model, x)
    coded, _, _ = round_trip(model, x)
    n_bytes, n_streams = stream_bytes(coded)
    real_bits = 8 * n_bytes
    assert estimated_bits > 300 * n_streams  # enough information for the margin to matter
    assert real_bits >= estimated_bits
    assert real_bits <= 1.10 * estimated_bits + 8 * RANS_FLUSH_BYTES * n_streams


# --------------------------------------------------------------------------------------
# Causal contexts
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("context_size", [3, 5, 7])
@pytest.mark.parametrize("name", RASTER_MODELS)
def test_raster_context_never_sees_the_future(name, context_size):
    context = tiny(name, context_size=context_size).context_model
    y = torch.randn(1, TINY["M"], 9, 9)
    with torch.no_grad():
        base = context(y)
        for i, j in [(0, 0), (4, 4), (4, 8), (8, 0), (8, 8)]:
            changed = y.clone()
            changed[:, :, i, j] += 5.0
            diff = (context(changed) - base).abs().amax(dim=1)[0]  # (H, W)
            raster = torch.arange(81).reshape(9, 9)
            assert (diff[raster <= i * 9 + j] == 0).all()  # positions up to (i, j)
            if j + 1 < 9:
                assert diff[i, j + 1] > 0  # the next position does see (i, j)


@pytest.mark.parametrize("context_size", [3, 5, 7])
def test_checkerboard_anchors_never_see_non_anchors(context_size):
    model = tiny("mbt2018-checkerboard", context_size=context_size).eval()
    codec = model.latent_codec["y"]
    y = torch.randn(1, TINY["M"], 8, 8) * 3
    side = torch.randn(1, 2 * TINY["M"], 8, 8)
    h, w = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    anchor = (h + w) % 2 == 0
    with torch.no_grad():
        base = codec(y, side)["likelihoods"]["y"]
        for i, j in [(3, 4), (4, 3), (3, 3), (4, 4)]:
            changed = y.clone()
            changed[:, :, i, j] += 5.0
            diff = (codec(changed, side)["likelihoods"]["y"] - base).abs().amax(dim=1)[0]
            others = torch.ones(8, 8, dtype=torch.bool)
            others[i, j] = False
            if anchor[i, j]:
                assert (diff[~anchor & others] > 0).any()  # non-anchors read anchors
                assert (diff[anchor & others] == 0).all()  # anchors read nothing
            else:
                assert (diff[others] == 0).all()  # nobody reads a non-anchor


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------


def _updated(name: str, **kwargs):
    model = tiny(name, **kwargs).eval()
    model.update(force=True)
    return model


def test_checkpoint_round_trip_reproduces_outputs_and_bitstreams(tmp_path):
    model = _updated("mbt2018", context_size=3)
    config = {**default_config("mbt2018", 3), **TINY, "context_size": 3}
    path = save_checkpoint(model, tmp_path / "mbt2018" / "q3.pt", config, extra={"epoch": 7})
    loaded, checkpoint = load_checkpoint(path)
    assert type(loaded) is type(model) and not loaded.training
    assert checkpoint["model"] == "mbt2018" and checkpoint["epoch"] == 7
    assert checkpoint["config"]["context_size"] == 3 and checkpoint["config"]["M"] == TINY["M"]
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = smooth_image(seed=4)
    with torch.no_grad():
        assert torch.equal(loaded(x)["x_hat"], model(x)["x_hat"])
    assert loaded.compress(x)["strings"] == model.compress(x)["strings"]
    assert not list(tmp_path.rglob("*.tmp"))  # the atomic write left no temp file


@pytest.mark.parametrize("name", ["mbt2018", "mbt2018-checkerboard"])
def test_context_masks_are_stored_empty_and_rebuilt_by_the_architecture(tmp_path, name):
    model = _updated(name, context_size=5)
    config = default_config(name, 2) | TINY
    path = save_checkpoint(model, tmp_path / "m.pt", config, dtype=torch.float16)
    raw = torch.load(path, weights_only=True)
    (key,) = [k for k in raw["state_dict"] if k.endswith("context_prediction.mask")]
    assert raw["state_dict"][key].numel() == 0
    loaded, _ = load_checkpoint(path)
    mask = loaded.state_dict()[key]
    assert torch.equal(mask, model.state_dict()[key])
    assert 0 < mask.sum() < mask.numel()  # a real mask, not ones or zeros
    x = smooth_image(seed=3)
    assert loaded.compress(x)["strings"] == load_checkpoint(path)[0].compress(x)["strings"]
    # a file written before masks were stored empty holds the mask in full: still read
    raw["state_dict"][key] = model.state_dict()[key]
    torch.save(raw, tmp_path / "old.pt")
    fresh = load_checkpoint(path)[0].state_dict()  # (compress masks the kernel in place)
    for key_, value in load_checkpoint(tmp_path / "old.pt")[0].state_dict().items():
        assert torch.equal(value, fresh[key_]), key_
    # ... but a stored mask that is not the architecture's is refused by name
    raw["state_dict"][key] = torch.ones_like(mask)
    torch.save(raw, tmp_path / "bad.pt")
    with pytest.raises(CheckpointMismatchError, match="context_prediction.mask"):
        load_checkpoint(tmp_path / "bad.pt")


def test_fp16_checkpoint_stores_half_weights_and_still_decodes(tmp_path):
    model = _updated("mbt2018-mean")
    path = save_checkpoint(model, tmp_path / "half.pt", default_config("mbt2018-mean", 2) | TINY,
                           dtype=torch.float16)
    raw = torch.load(path, weights_only=True)
    assert raw["dtype"] == "float16" and raw["state_dict"]["g_a.0.weight"].dtype == torch.float16
    assert raw["state_dict"]["entropy_bottleneck.quantiles"].dtype == torch.float32
    loaded, _ = load_checkpoint(path)
    assert loaded.g_a[0].weight.dtype == torch.float32
    x = smooth_image(seed=5)
    with torch.no_grad():
        assert torch.allclose(loaded(x)["x_hat"], model(x)["x_hat"], atol=1e-2)
    coded, x_hat, _ = round_trip(loaded, x)
    with torch.no_grad():
        assert torch.allclose(x_hat, loaded(x)["x_hat"].clamp(0, 1), atol=1e-6)


def test_int8_checkpoint_stores_kernels_in_int8_with_per_channel_scales(tmp_path):
    model = _updated("mbt2018")
    path = save_checkpoint(model, tmp_path / "q.pt", default_config("mbt2018", 2) | TINY,
                           dtype=torch.int8)
    raw = torch.load(path, weights_only=True)
    assert raw["format_version"] == 2 and raw["dtype"] == "int8"
    for key in ("g_a.0.weight", "g_s.0.weight", "context_prediction.weight"):
        assert raw["state_dict"][key].dtype == torch.int8, key
    assert raw["state_dict"]["g_a.0.bias"].dtype == torch.float16
    loaded, _ = load_checkpoint(path)
    for key in ("g_a.0.weight", "g_s.0.weight"):  # Conv2d: out = dim 0; ConvTranspose2d: dim 1
        w, got = model.state_dict()[key], loaded.state_dict()[key]
        out_dim = 1 if key.startswith("g_s") else 0
        dims = [d for d in range(4) if d != out_dim]
        # each output channel is within half a step of its own scale, max |w_c| / 127
        step = w.abs().amax(dim=dims, keepdim=True) / 127
        assert torch.all((got - w).abs() <= step / 2 + 1e-7), key
        assert not torch.equal(got, w)
    mean = _updated("mbt2018-mean")
    loaded, _ = load_checkpoint(save_checkpoint(
        mean, tmp_path / "m.pt", default_config("mbt2018-mean", 2) | TINY, dtype=torch.int8))
    x = smooth_image(seed=6)
    coded, x_hat, _ = round_trip(loaded, x)  # a model as stored codes exactly
    with torch.no_grad():
        assert torch.allclose(x_hat, loaded(x)["x_hat"].clamp(0, 1), atol=1e-6)


def test_checkpoint_on_a_base_stores_only_what_differs_and_loads_whole(tmp_path):
    config = default_config("mbt2018", 2) | TINY
    base_model = _updated("mbt2018")
    base = save_checkpoint(base_model, tmp_path / "mbt2018" / "base.pt", config,
                           dtype=torch.float16)
    base_loaded, _ = load_checkpoint(base)
    # an ablation: the base's transforms (as stored), a new entropy model
    ablation = _updated("mbt2018")
    transforms = {k: v for k, v in base_loaded.state_dict().items() if k.startswith(("g_a", "g_s"))}
    with torch.no_grad():
        for name, p in ablation.named_parameters():
            if not name.startswith(("g_a", "g_s")):
                p.add_(0.01 * torch.randn_like(p))
    ablation.load_state_dict({**ablation.state_dict(), **transforms})
    ablation.update(force=True)
    path = save_checkpoint(ablation, tmp_path / "ablations" / "a.pt", config, base=base)
    raw = torch.load(path, weights_only=True)
    assert raw["base"]["checkpoint"] == "../mbt2018/base.pt"
    shared = set(raw["base"]["keys"])
    assert set(transforms) <= shared and not set(raw["state_dict"]) & shared
    assert not [k for k in shared if k.endswith(".weight") and k.startswith(
        ("h_a", "h_s", "context", "entropy_param"))]
    assert "h_s.0.weight" in raw["state_dict"]
    loaded, _ = load_checkpoint(path)
    for key, value in ablation.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = smooth_image(seed=7)
    assert loaded.compress(x)["strings"] == ablation.compress(x)["strings"]

    # the base changes under it: refused, with what to do
    other = _updated("mbt2018")
    with torch.no_grad():
        other.g_a[0].weight.mul_(1.5)
    save_checkpoint(other, base, config, dtype=torch.float16)
    with pytest.raises(CheckpointMismatchError, match="re-train it on the current base"):
        load_checkpoint(path)
    base.unlink()
    with pytest.raises(CheckpointNotFoundError, match="base checkpoint ../mbt2018/base.pt"):
        load_checkpoint(path)


def test_an_int8_base_can_keep_its_frozen_transforms_in_float16_for_the_files_on_it(tmp_path):
    """The ablation protocol's joint model: int8 entropy model, float16 transforms (exactly
    the frozen ones), and another ablation stored on it shares those transforms."""
    config = default_config("mbt2018", 2) | TINY
    frozen = ("g_a", "g_s")
    joint = _updated("mbt2018")
    with torch.no_grad():  # transforms as shipped in float16 before (exact in float16)
        for name, p in joint.named_parameters():
            if name.startswith(frozen):
                p.copy_(p.half().float())
    joint.update(force=True)
    base = save_checkpoint(joint, tmp_path / "joint.pt", config, dtype=torch.int8,
                           keep_float16=frozen)
    raw = torch.load(base, weights_only=True)
    assert raw["state_dict"]["g_a.0.weight"].dtype == torch.float16
    assert raw["state_dict"]["context_prediction.weight"].dtype == torch.int8
    loaded, _ = load_checkpoint(base)
    for key, value in joint.state_dict().items():
        if key.startswith(frozen):
            assert torch.equal(loaded.state_dict()[key], value), key
    other = _updated("mbt2018")
    other.load_state_dict({**other.state_dict(), **{
        k: v for k, v in joint.state_dict().items() if k.startswith(frozen)}})
    other.update(force=True)
    path = save_checkpoint(other, tmp_path / "other.pt", config, dtype=torch.int8, base=base)
    shared = set(torch.load(path, weights_only=True)["base"]["keys"])
    assert {k for k in joint.state_dict() if k.startswith(frozen)} <= shared


def test_a_newer_checkpoint_format_is_refused_by_name(tmp_path):
    path = save_checkpoint(_updated("mbt2018"), tmp_path / "c.pt", {"quality": 3})
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["format_version"] = 9
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="format version 9"):
        load_checkpoint(path)


def test_read_config_returns_the_saved_config_and_refuses_foreign_files(tmp_path):
    path = save_checkpoint(_updated("mbt2018"), tmp_path / "c.pt", {"quality": 3, "qualities": [6, 7, 8]})
    assert read_config(path)["qualities"] == [6, 7, 8]
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a nic-repro checkpoint"):
        read_config(tmp_path / "foreign.pt")


def test_checkpoint_of_another_architecture_raises_mismatch(tmp_path):
    model = _updated("mbt2018")
    path = save_checkpoint(model, tmp_path / "ckpt.pt", {"quality": 3})
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["config"]["M"] = 16
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointMismatchError, match="shape mismatches") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "g_a.6.weight" in str(err.value)

    checkpoint["config"]["M"] = TINY["M"]
    del checkpoint["state_dict"]["context_prediction.weight"]
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointMismatchError, match="missing keys: context_prediction.weight"):
        load_checkpoint(path)


def test_save_refuses_configs_that_safe_loading_could_not_read(tmp_path):
    model = tiny("bmshj2018-factorized")
    with pytest.raises(ValueError, match=r"config.*data_dir.*PosixPath"):
        save_checkpoint(model, tmp_path / "a.pt", {"data_dir": tmp_path})
    with pytest.raises(ValueError, match="model has M = 12"):
        save_checkpoint(model, tmp_path / "b.pt", {"M": 16})
    assert not list(tmp_path.iterdir())


def _save_cpu_profile(name: str, folder, qualities: list[int], **kwargs):
    """A tiny variable-rate model saved where get_model's cpu profile looks for it."""
    model = tiny(name, lmbdas=[LAMBDA_MSE[q] for q in qualities], **kwargs).eval()
    model.update(force=True)
    save_checkpoint(model, folder / name / hub.CPU_FILE, {"quality": None, "qualities": qualities})
    return model


def test_get_model_refuses_a_checkpoint_of_another_model(tmp_path, monkeypatch):
    monkeypatch.setenv("NIC_CHECKPOINT_DIR", str(tmp_path))
    _save_cpu_profile("mbt2018-mean", tmp_path, [3])
    (tmp_path / "mbt2018").mkdir()
    (tmp_path / "mbt2018-mean" / hub.CPU_FILE).rename(tmp_path / "mbt2018" / hub.CPU_FILE)
    with pytest.raises(CheckpointNotFoundError, match="'mbt2018-mean'"):
        get_model("mbt2018", 3)


_EXECUTED = []


def _record(message):
    _EXECUTED.append(message)


class _Payload:
    def __reduce__(self):
        return (_record, ("unpickling ran code",))


def test_checkpoint_loading_never_runs_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "nic-repro-checkpoint", "payload": _Payload()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)
    assert _EXECUTED == []


def test_missing_checkpoint_names_the_file_and_the_training_command(tmp_path, monkeypatch):
    monkeypatch.setenv("NIC_CHECKPOINT_DIR", str(tmp_path))
    with pytest.raises(CheckpointNotFoundError) as err:
        get_model("mbt2018-gmm", 4, profile="cpu")
    message = str(err.value)
    assert str(tmp_path / "mbt2018-gmm" / hub.CPU_FILE) in message
    assert "python scripts/train_cpu_profile.py --only ablate-mbt2018-gmm" in message


def test_get_model_loads_the_cpu_checkpoint_at_each_quality_it_holds(tmp_path, monkeypatch):
    monkeypatch.setenv("NIC_CHECKPOINT_DIR", str(tmp_path))
    model = _save_cpu_profile("mbt2018-checkerboard", tmp_path, [2, 5])
    x = smooth_image(seed=6)
    for level, quality in enumerate([2, 5]):
        expected = set_rate_level(copy.deepcopy(model), level).compress(x)["strings"]
        assert get_model("mbt2018-checkerboard", quality).compress(x)["strings"] == expected
    with pytest.raises(CheckpointNotFoundError, match=r"qualities \[2, 5\]"):
        get_model("mbt2018-checkerboard", 3)
    # a single-rate file in the old q<quality>.pt place is not looked for
    save_checkpoint(_updated("mbt2018-mean"), tmp_path / "mbt2018-mean" / "q1.pt", {"quality": 1})
    with pytest.raises(CheckpointNotFoundError, match=hub.CPU_FILE):
        get_model("mbt2018-mean", 1)


def test_untrained_models_take_the_profile_widths():
    cpu = get_model("mbt2018-context", 5, pretrained=False)
    assert (cpu.N, cpu.M) == CPU_PROFILE_WIDTHS
    full = get_model("bmshj2018-factorized", 1, profile="full", pretrained=False)
    assert (full.N, full.M) == FULL_WIDTHS["bmshj2018-factorized"][1] == (128, 192)


# --------------------------------------------------------------------------------------
# Full profile (CompressAI zoo), offline
# --------------------------------------------------------------------------------------


def test_full_profile_loads_zoo_weights_into_the_registered_class(tmp_path, monkeypatch):
    # the download, hash check and cache are tests/test_zoo.py's; here: the class
    from nic_lib.testing import standin_zoo
    from nic_lib.models import zoo

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with standin_zoo.serve(tmp_path / "zoo", keys=["mbt2018"]) as standin:
        monkeypatch.setenv(zoo.ZOO_URLS_ENV, str(standin.manifest))
        model = get_model("mbt2018", 3, profile="full")
    assert type(model) is JointAutoregressiveHierarchicalPriors and model.context_size == 5
    assert not model.training


def test_ablations_have_no_published_weights():
    with pytest.raises(ValueError, match="profile='cpu'"):
        get_model("mbt2018-checkerboard", 3, profile="full")
