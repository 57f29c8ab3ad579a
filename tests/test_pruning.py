"""Tests for nic_lib.pruning and ``python -m nic_lib.train --prune``: the sparsity asked
is the sparsity got, the pruned weights stay zero through training (and its EMA and
resume), and a pruned model saves, loads and codes like any other.

Runs prune a tiny mbt2018 (N = M = 8) trained for a few steps on synthetic images
(tests/test_train.py's helpers), about a second each.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from test_train import _synthetic_images  # shared helper

from nic_lib import pruning
from nic_lib import train as T
from nic_lib.models import build_model, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _tiny(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("mbt2018", N=8, M=12)


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    """A 20-step dense run: the trained model the pruning runs start from."""
    root = tmp_path_factory.mktemp("prune")
    images = _synthetic_images(root / "images")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NIC_CACHE_DIR", str(root / "cache"))
        cfg = _config(images, root / "dense")
        yield root, images, T.train(cfg)


def _config(images, out, **changes) -> T.TrainConfig:
    base = T.TrainConfig(
        N=8, M=8, lmbda=0.01, data=(str(images),), crop=64, batch_size=4, lr=3e-3,
        warmup_steps=3, max_steps=20, log_every=5, ckpt_every=10, eval_every=0, ema=0.9,
        out_dir=str(out), progress=False, threads=1)
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.8])
def test_masks_remove_exactly_the_asked_fraction_of_the_smallest_weights(sparsity):
    model = _tiny()
    masks = pruning.magnitude_masks(model, sparsity)
    kernels = pruning.prunable_kernels(model)
    assert set(masks) == set(kernels) and any(k.startswith("h_s") for k in kernels)
    assert not any("context_prediction" in k or "entropy_parameters" in k for k in kernels)
    total = sum(w.numel() for w in kernels.values())
    pruned = sum(int((~m).sum()) for m in masks.values())
    assert pruned == round(sparsity * total)
    if sparsity:  # global: every kept weight is at least as large as every pruned one
        kept = torch.cat([w[m].abs().flatten() for w, m in zip(kernels.values(), masks.values())])
        gone = torch.cat([w[~m].abs().flatten() for w, m in zip(kernels.values(), masks.values())])
        assert kept.min() >= gone.max()
    pruning.apply_masks(model, masks)
    assert pruning.sparsity_report(model)["sparsity"] == pytest.approx(sparsity, abs=1e-4)
    assert pruning.masks_from_zeros(model).keys() == masks.keys()


def test_sparsity_outside_the_unit_interval_is_refused_by_flag():
    with pytest.raises(ValueError, match="--prune"):
        pruning.check_sparsity(1.0)
    with pytest.raises(ValueError, match="init-from"):
        T.check_config(T.TrainConfig(prune=0.5), world=1)


def test_pruned_weights_stay_zero_through_training_and_are_reported(dense_run):
    root, images, dense = dense_run
    run = T.train(_config(images, root / "pruned", init_from=str(dense / "final.pt"),
                          prune=0.5))
    source = load_checkpoint(dense / "final.pt")[0].state_dict()
    masks = pruning.magnitude_masks(load_checkpoint(dense / "final.pt")[0], 0.5)
    resolved = json.loads((run / "config.json").read_text())["resolved"]["pruning"]
    assert resolved["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert set(resolved["layers"]) == set(masks)
    for key in ("model", "ema"):  # the weights and their average after 20 steps
        state = torch.load(run / "ckpt.pt", map_location="cpu", weights_only=False)[key]
        prefix = "module." if key == "ema" else ""
        for name, mask in masks.items():
            weight = state[prefix + name]
            assert (weight[~mask] == 0).all(), name
    final, _ = load_checkpoint(run / "final.pt")
    assert pruning.sparsity_report(final)["sparsity"] >= 0.5 - 1e-3
    kept_moved = any(not torch.equal(w, source[n]) for n, w in
                     pruning.prunable_kernels(final).items())
    assert kept_moved  # the kept weights were fine-tuned


def test_a_resumed_pruned_run_keeps_its_zeros(dense_run):
    root, images, dense = dense_run
    cfg = _config(images, root / "pruned-resume", init_from=str(dense / "final.pt"), prune=0.8,
                  max_steps=10, ckpt_every=5)
    run = T.train(cfg)
    run = T.train(T.TrainConfig(), resume=run, overrides={"max_steps": 20})
    model, _ = load_checkpoint(run / "final.pt")
    assert pruning.sparsity_report(model)["sparsity"] >= 0.8 - 1e-3


def test_a_pruned_checkpoint_codes_with_the_normal_coder(dense_run):
    root, images, dense = dense_run
    run = T.train(_config(images, root / "pruned-code", init_from=str(dense / "final.pt"),
                          prune=0.8, max_steps=5))
    model, _ = load_checkpoint(run / "final.pt")
    assert pruning.sparsity_report(model)["sparsity"] >= 0.8 - 1e-3
    torch.manual_seed(1)
    x = torch.rand(1, 3, 64, 64)
    coded = model.compress(x)
    x_hat = model.decompress(coded["strings"], coded["shape"])["x_hat"]
    again = model.decompress(coded["strings"], coded["shape"])["x_hat"]
    assert x_hat.shape == x.shape and torch.equal(x_hat, again)
    with torch.no_grad():  # the decoder reconstructs what the forward pass quantizes
        assert torch.allclose(x_hat, model(x)["x_hat"].clamp(0, 1), atol=2e-2)
