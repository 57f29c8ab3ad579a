"""One model identity (nic_lib.models.identity) and one file identity (fileio.file_digest)."""

from __future__ import annotations

import ast
import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nic_lib import bench, cache, container, fileio, neural
from nic_lib.models import build_model, calibration, identity, save_checkpoint, variable_rate
from nic_lib.models.checkpoints import checkpoint_digest


def _model():
    torch.manual_seed(0)
    model = build_model("mbt2018", N=8, M=16, lmbdas=[0.0018, 0.013], reference_lmbda=0.013)
    return model.eval()


def test_the_container_fingerprint_is_the_model_digest_without_the_calibration_buffer():
    model = _model()
    assert container.weights_fingerprint(model) == identity.model_digest(
        model, skip=container.FINGERPRINT_SKIPS)[:container.FINGERPRINT_BYTES]
    assert identity.model_id(model) == identity.model_digest(model).hex()[:identity.ID_CHARS]


def test_the_identity_follows_weights_and_coding_settings_not_the_object():
    model = _model()
    base = identity.model_id(model)
    assert identity.model_id(copy.deepcopy(model)) == base
    variable_rate.set_rate_level(model, 0)  # another level (built at the top one) codes other bits
    assert identity.model_id(model) != base
    variable_rate.set_rate_level(model, 1)
    assert identity.model_id(model) == base
    with torch.no_grad():
        model.g_s[0].weight[0, 0, 0, 0] += 1e-6
    assert identity.model_id(model) != base
    assert identity.coding_settings(model)["coding_order"] == model.coding_order


def test_a_file_is_identified_by_its_bytes_and_its_json_sidecars(tmp_path):
    path = tmp_path / "vr.pt"
    path.write_bytes(b"weights")
    first = fileio.file_digest(path)
    assert checkpoint_digest(path) == first == cache.model_digests(path)
    (tmp_path / "vr.calibration.json").write_text("[1.0, 1.1]")
    assert fileio.file_digest(path) != first
    (tmp_path / "other.calibration.json").write_text("[2]")  # another file's sidecar: no
    with_sidecar = fileio.file_digest(path)
    (tmp_path / "other.calibration.json").write_text("[3]")
    assert fileio.file_digest(path) == with_sidecar


# --------------------------------------------------------------------------- cache keys


def _saved_variable_rate_model(tmp_path):
    model = _model()
    model.update(force=True)
    config = {"N": 8, "M": 16, "lmbdas": [0.0018, 0.013], "reference_lmbda": 0.013, "qualities": [1, 2]}
    return save_checkpoint(model, tmp_path / "vr.pt", config)


def test_a_sweeps_cache_key_follows_the_rate_level_and_not_the_loading(tmp_path, monkeypatch):
    """Two qualities of one variable-rate file have the same state dict and differ only in
    their rate level: they must not share a cached table; the same file loaded twice must."""
    path = _saved_variable_rate_model(tmp_path)
    calls = []
    real_sweep = neural.rate_sweep
    monkeypatch.setattr(neural, "rate_sweep", lambda *a, **k: calls.append(1) or real_sweep(*a, **k))
    images = [("flat", np.full((32, 32, 3), 120, np.uint8))]

    def sweep(model):  # the same label, setting, file digest and images every time
        return neural.cached_rate_sweep(tmp_path / "results", "vr", {1: model}, "one-file", images, {},
                                        decode=False)

    first = neural.quality_models(path)
    low, high = first[1], first[2]
    assert all(torch.equal(a, b) for a, b in zip(low.state_dict().values(), high.state_dict().values()))
    sweep(high)
    sweep(neural.quality_models(path)[2])  # the same model, loaded again: a hit
    assert len(calls) == 1
    sweep(low)  # another rate level of the same weights: recomputed
    assert len(calls) == 2


def test_cache_keys_of_models_differing_only_in_their_calibration_differ(tmp_path):
    """The OOD grid's key (its codecs' model ids) and a table's ``models=`` key."""
    torch.manual_seed(0)
    model = build_model("mbt2018-mean", N=8, M=16).eval()
    a = calibration.apply_calibration(copy.deepcopy(model), [1.1])
    b = calibration.apply_calibration(copy.deepcopy(model), [1.2])
    assert bench.NicCodec("m", {1: a}).model_ids != bench.NicCodec("m", {1: b}).model_ids
    assert bench.NicCodec("m", {1: a}).model_ids == bench.NicCodec("m", {1: copy.deepcopy(a)}).model_ids
    calls = []

    def table(m):
        return cache.cached_table(tmp_path / "t.csv", {}, lambda: calls.append(1) or pd.DataFrame({"x": [1]}),
                                  data=None, models=identity.model_ids({"mean": {1: m}}))

    table(a), table(copy.deepcopy(a)), table(b)
    assert len(calls) == 2


def test_model_ids_replace_every_module_and_keep_paths_and_digests(tmp_path):
    model = _model()
    ids = identity.model_ids({"m": {1: model}, "file": tmp_path / "x.pt", "given": "abc", "pair": (model, None)})
    assert ids == {"m": {"1": identity.model_id(model)}, "file": tmp_path / "x.pt", "given": "abc",
                   "pair": [identity.model_id(model), None]}


def test_the_cache_imports_neither_torch_nor_the_models():
    """Importing nic_lib.models from nic_lib.cache would close a cycle through nic_lib.data
    (which imports the cache): the cache's own imports, by its own reading of import
    statements (those inside functions too), are the leaf nic_lib.fileio alone."""
    tree = ast.parse(Path(cache.__file__).read_text())
    assert cache._project_imports(tree, "nic_lib.cache", is_package=False) == ["nic_lib.fileio"]
    code = "import sys, nic_lib.cache; print(sorted(m for m in sys.modules if m.startswith(('nic_lib', 'torch'))))"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "['nic_lib', 'nic_lib.cache', 'nic_lib.fileio']"
