"""Scale calibration (nic_lib.models.calibration): σ' = c·σ per rate level.

Tiny variable-rate models as tests/test_variable_rate.py; the sidecar tests save them to a
temporary folder.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nic_lib import coding, container, data, neural
from nic_lib.models import (
    CheckpointMismatchError,
    build_model,
    checkpoint_digest,
    default_config,
    load_checkpoint,
    save_checkpoint,
)
from nic_lib.models import calibration as C
from nic_lib.models.checkpoints import write_calibration
from nic_lib.models.variable_rate import set_rate_level

REPO = Path(__file__).resolve().parents[1]
TINY = {"N": 8, "M": 12}
LMBDAS = [0.0018, 0.0067, 0.0483]
#: g_a's and h_s's outputs are multiplied by this so that latents and predicted scales have
#: a trained model's spread (a fresh h_s predicts σ below the coder's floor 0.11, where no
#: factor would change a bit).
LATENT_SCALE = 30.0

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def vr_model(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(name, **{**default_config(name, 1), **TINY, "lmbdas": LMBDAS})
    for part in (model.g_a, model.h_s):
        last = [m for m in part.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))][-1]
        with torch.no_grad():
            last.weight.mul_(LATENT_SCALE)
            last.bias.mul_(LATENT_SCALE)
    model.update(force=True)
    return model.eval()


def image(seed: int = 0, side: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (side // 8, side // 8, 3)).astype(np.uint8)
    return np.kron(coarse, np.ones((8, 8, 1), np.uint8))


def y_bits(model: torch.nn.Module, img: np.ndarray) -> float:
    with torch.no_grad():
        lik = model(coding.pad_to(coding.to_tensor(img), 64))["likelihoods"]["y"]
    return float(-torch.log2(lik).sum())


@pytest.mark.parametrize("name", ["bmshj2018-hyperprior", "mbt2018-mean"])
def test_calibration_multiplies_the_scales_and_leaves_the_means(name):
    model = vr_model(name)
    z = torch.randn(1, TINY["N"], 2, 2)
    with torch.no_grad():
        s0, m0 = model.gaussian_parameters(z)
        C.apply_calibration(model, [1.0, 1.5, 2.0])
        for level, c in enumerate([1.0, 1.5, 2.0]):
            set_rate_level(model, level)
            s1, m1 = model.gaussian_parameters(z)
            assert torch.allclose(s1, s0 * c)
            assert (m1 is None) if name == "bmshj2018-hyperprior" else torch.equal(m1, m0)
        C.remove_calibration(model)
        assert torch.equal(model.gaussian_parameters(z)[0], s0)
    assert C.calibration_factor(model) == 1.0


def test_the_factors_are_in_the_state_dict_and_deep_copies_follow_their_level():
    model = vr_model("bmshj2018-hyperprior")
    keys = set(model.state_dict())
    C.apply_calibration(model, [0.8, 1.0, 1.3])
    assert set(model.state_dict()) == keys | {C.BUFFER}
    assert model.state_dict()[C.BUFFER].tolist() == [0.8, 1.0, 1.3]  # float64: exactly
    assert all(not m._forward_hooks for m in model.modules())  # applied by the model itself
    copies = [set_rate_level(copy.deepcopy(model), level) for level in range(3)]
    assert [C.calibration_factor(m) for m in copies] == [0.8, 1.0, 1.3]
    assert C.calibration_factor(model) == 1.3  # the original keeps its own level (the last)


def test_calibrated_codes_decode_exactly_at_another_rate():
    model = vr_model("mbt2018-mean")
    img = image(1)
    plain = coding.code_image(model, img)
    C.apply_calibration(model, [3.0, 3.0, 3.0])
    cal = coding.code_image(model, img)  # decodes with the real decoder, checked exact
    # ŷ does not depend on σ: the same reconstruction, another rate
    assert np.array_equal(cal["x_hat"], plain["x_hat"])
    assert cal["bpp"] != plain["bpp"] and cal["bpp_est"] != plain["bpp_est"]


def test_fit_prices_each_factor_as_the_calibrated_model_does():
    model = vr_model("bmshj2018-hyperprior")
    images = [("a", image(2)), ("b", image(3))]
    set_rate_level(model, 0)
    table = C.fit_scale_calibration(model, images, factors=[0.5, 1.0, 2.0], levels=[1])
    assert list(table["level"]) == [1, 1, 1]
    assert model.gain.level == 0  # the fit restores the model's level
    set_rate_level(model, 1)
    for c, bits in zip(table["factor"], table["bits"]):
        C.apply_calibration(model, [c] * 3)
        assert sum(y_bits(model, img) for _, img in images) == pytest.approx(bits, rel=1e-5)
    assert C.calibration_factor(model) == 2.0  # the fit left the calibration in place


def test_fit_undoes_a_known_miscalibration():
    # σ = ReLU(conv(...)) in h_s: halving the last convolution halves every σ exactly, so
    # the bits of the halved model at c equal those of the original at c/2.
    model = vr_model("bmshj2018-hyperprior")
    images = [("a", image(4))]
    original = C.fit_scale_calibration(model, images, factors=[0.5, 1.0, 2.0], levels=[2])
    last = [m for m in model.h_s.modules() if isinstance(m, torch.nn.ConvTranspose2d)
            or isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.mul_(0.5)
        last.bias.mul_(0.5)
    halved = C.fit_scale_calibration(model, images, factors=[1.0, 2.0, 4.0], levels=[2])
    assert np.allclose(halved["bits"], original["bits"], rtol=1e-5)
    assert C.best_factors(halved) == [2 * c for c in C.best_factors(original)]


def test_unsupported_models_and_bad_factors_are_refused():
    with pytest.raises(ValueError, match="h_s predicts the scales"):
        C.apply_calibration(vr_model("mbt2018"), [1.0, 1.0, 1.0])
    model = vr_model("bmshj2018-hyperprior")
    with pytest.raises(ValueError, match="3 rate level"):
        C.apply_calibration(model, [1.0])
    with pytest.raises(ValueError, match="positive and finite"):
        C.apply_calibration(model, [1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="must include 1.0"):
        C.fit_scale_calibration(model, [("a", image())], factors=[0.9, 1.1])


@pytest.fixture
def saved(tmp_path):
    """A tiny variable-rate hyperprior saved as a checkpoint, with a fitted calibration."""
    model = vr_model("bmshj2018-hyperprior")
    path = tmp_path / "vr.pt"
    config = {**default_config("bmshj2018-hyperprior", 1), **TINY, "lmbdas": LMBDAS,
              "qualities": [1, 2, 3]}
    save_checkpoint(model, path, config)
    table = C.fit_scale_calibration(model, [("a", image(5))], factors=[0.5, 1.0, 2.0])
    record = C.save_calibration(path, table, tuning_set="test")
    return path, record


def test_the_factors_are_in_the_state_dict_and_a_record_only_describes_the_fit(saved):
    path, record = saved
    assert C.calibration_path(path).name == "vr.calibration.json"
    assert C.read_calibration(path) == record["factors"]
    assert len(record["factors"]) == 3 and len(record["saving"]) == 3
    # a record beside a checkpoint without the buffer is not applied: the model is its state dict
    model, _ = load_checkpoint(path)
    assert C.calibration_factors(model) is None and C.calibration_factor(model) == 1.0
    write_calibration(path, record["factors"])
    model, ckpt = load_checkpoint(path)
    assert ckpt["state_dict"][C.BUFFER].dtype == torch.float64
    assert [C.calibration_factor(set_rate_level(model, lv)) for lv in range(3)] == record["factors"]
    raw, _ = load_checkpoint(path, calibrated=False)
    assert C.calibration_factors(raw) is None and C.calibration_factor(raw) == 1.0


def test_malformed_records_are_errors_when_read(saved):
    path, record = saved
    sidecar = C.calibration_path(path)
    sidecar.write_text("{not json")
    with pytest.raises(ValueError, match="calibrate_scales.py"):
        C.read_calibration(path)
    sidecar.write_text(json.dumps({**record, "factors": [1.0, -1.0, 1.0]}))
    with pytest.raises(ValueError, match="positive and finite"):
        C.read_calibration(path)
    load_checkpoint(path)  # loading does not read the record


def test_the_calibration_is_part_of_the_weights_fingerprint(saved):
    path, _ = saved
    write_calibration(path, [2.0, 1.0, 1.0])
    model, _ = load_checkpoint(path)
    raw, _ = load_checkpoint(path, calibrated=False)
    set_rate_level(model, 0), set_rate_level(raw, 0)
    assert C.calibration_factor(model) == 2.0
    assert container.weights_fingerprint(model) != container.weights_fingerprint(raw)
    # a file coded without the calibration is refused by a calibrated decoder
    data_ = container.encode_image(raw, image(6), "bmshj2018-hyperprior", 1, "cpu")
    with pytest.raises(container.NicModelMismatchError):
        container.decode_image(data_, model)
    before = checkpoint_digest(path)
    write_calibration(path, [1.5, 1.0, 1.0])
    assert checkpoint_digest(path) != before


def test_calibrate_script_fits_a_checkpoint(saved):
    if not data.shared_data_dir().joinpath(data.TUNING_SET).is_dir():
        pytest.skip(f"{data.TUNING_SET} is not on this machine")
    path, _ = saved
    C.calibration_path(path).unlink()
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "calibrate_scales.py"),
                          "--checkpoint", str(path), "--images", "1", "--min-saving", "0"],
                         capture_output=True, text=True, cwd=REPO, check=True)
    record = json.loads(C.calibration_path(path).read_text())
    assert record["images"] == [name for name, _ in data.load_tuning_images(1)]
    assert record["factors"] == C.best_factors(pd_table(record)) and "level 2" in out.stdout
    # the factors are in the model: the checkpoint's state dict
    model, ckpt = load_checkpoint(path)
    assert ckpt["state_dict"][C.BUFFER].tolist() == record["factors"]
    assert C.calibration_factors(model) == record["factors"]
    # above any achievable saving: no record is kept
    subprocess.run([sys.executable, str(REPO / "scripts" / "calibrate_scales.py"),
                    "--checkpoint", str(path), "--images", "1", "--min-saving", "2"],
                   capture_output=True, text=True, cwd=REPO, check=True)
    assert not C.calibration_path(path).exists()
    assert C.calibration_factors(load_checkpoint(path)[0]) is None


def pd_table(record: dict):
    import pandas as pd

    return pd.DataFrame([{"level": int(lv), "factor": float(f), "bits": b}
                         for lv, bits in record["bits_by_factor"].items() for f, b in bits.items()])
