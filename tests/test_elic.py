"""Tests for ELIC (``elic2022``, nic_lib.models.elic): CompressAI's architecture in this
project's contract — forward, real bitstreams through nic_lib.coding, checkpoints, widths,
and a tiny run of ``python -m nic_lib.train --model elic2022``.

Tiny ELIC: N = 8, M = 136 (the smallest latent with ELIC's groups 16, 16, 32, 64 and a
last group of 8) on 64x64 inputs.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_train import _synthetic_images  # shared helper

from nic_lib import coding, pruning
from nic_lib import train as T
from nic_lib.models import (FULL_WIDTHS, build_model, default_config, load_checkpoint,
                            save_checkpoint)
from nic_lib.models.elic import ELIC, channel_groups

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TINY = {"N": 8, "M": 136}


def _tiny(seed: int = 0) -> ELIC:
    torch.manual_seed(seed)
    return build_model("elic2022", **TINY)


def _smooth(seed: int = 0, side: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, side // 8, side // 8, generator=g)
    return F.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False).clamp(0, 1)


def test_groups_are_elics_uneven_split_and_widths_are_registered():
    assert channel_groups(320) == [16, 16, 32, 64, 192]
    assert channel_groups(192) == [16, 16, 32, 64, 64]
    with pytest.raises(ValueError, match="M > 128"):
        channel_groups(128)
    assert FULL_WIDTHS["elic2022"][3] == (192, 320)
    config = default_config("elic2022", 3)
    assert (config["N"], config["M"]) == (64, 192)  # registry.CPU_MODEL_WIDTHS
    assert (default_config("mbt2018", 3)["N"], default_config("mbt2018", 3)["M"]) == (96, 192)  # CPU_PROFILE_WIDTHS


def test_forward_follows_the_compressai_contract():
    model, x = _tiny(), _smooth()
    for training in (True, False):
        model.train(training)
        out = model(x)
        assert out["x_hat"].shape == x.shape
        assert set(out["likelihoods"]) == {"y", "z"}
        assert out["likelihoods"]["y"].shape[1] == TINY["M"]
        for likelihood in out["likelihoods"].values():
            assert ((likelihood > 0) & (likelihood <= 1)).all()
    assert torch.isfinite(model.aux_loss())


def test_real_bitstreams_round_trip_through_nic_lib_coding():
    model = _tiny().eval()
    model.update(force=True)
    rng = np.random.default_rng(0)
    img = (_smooth(side=128)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)[:100, :90]
    img = np.clip(img + rng.integers(-3, 4, img.shape), 0, 255).astype(np.uint8)
    result = coding.code_image(model, img)  # pads to 64 (the model's factor), crops back
    assert result["x_hat"].shape == img.shape and result["bpp"] > 0
    decoded = coding.decode(model, result["strings"], result["shape"], *img.shape[:2])
    assert np.array_equal(decoded, result["x_hat"])  # the same strings decode the same
    # the coder writes the latents the eval-mode forward rounds: same reconstruction
    x = coding.model_input(model, img)
    with torch.no_grad():
        forward = model(x)["x_hat"].clamp(0, 1)
    out = model.compress(x)
    assert torch.allclose(model.decompress(out["strings"], out["shape"])["x_hat"], forward,
                          atol=1e-4)


def test_checkpoint_round_trip_reproduces_bitstreams(tmp_path):
    model = _tiny().eval()
    model.update(force=True)
    config = {**default_config("elic2022", 3), **TINY}
    path = save_checkpoint(model, tmp_path / "elic2022" / "q3.pt", config)
    loaded, checkpoint = load_checkpoint(path)
    assert type(loaded) is ELIC and checkpoint["config"]["M"] == TINY["M"]
    x = _smooth(seed=3)
    assert loaded.compress(x)["strings"] == model.compress(x)["strings"]


def test_elic_trains_with_nic_lib_train(tmp_path, monkeypatch):
    monkeypatch.setenv("NIC_CACHE_DIR", str(tmp_path / "cache"))
    images = _synthetic_images(tmp_path / "images")
    cfg = T.TrainConfig(model="elic2022", **TINY, lmbda=0.01, data=(str(images),), crop=64,
                        batch_size=2, lr=1e-3, warmup_steps=2, max_steps=6, log_every=2,
                        ckpt_every=0, eval_every=0, out_dir=str(tmp_path / "run"),
                        progress=False, threads=1)
    run = T.train(cfg)
    rows = (run / "log.csv").read_text().splitlines()
    assert len(rows) == 1 + 3
    model, checkpoint = load_checkpoint(run / "final.pt")
    assert type(model) is ELIC and checkpoint["config"]["lmbda"] == 0.01
    x = _smooth(seed=5)
    coded = model.compress(x)
    assert model.decompress(coded["strings"], coded["shape"])["x_hat"].shape == x.shape
    # pruning acts on ELIC's transforms too (nic_lib.pruning.PRUNED_MODULES)
    pruned = T.train(dataclasses.replace(cfg, init_from=str(run / "final.pt"), prune=0.5,
                                         max_steps=2, out_dir=str(tmp_path / "pruned")))
    assert pruning.sparsity_report(load_checkpoint(pruned / "final.pt")[0])["sparsity"] >= 0.5 - 1e-3
