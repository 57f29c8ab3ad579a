"""One model identity (nic_lib.models.identity) and one file identity (fileio.file_digest)."""

from __future__ import annotations

import copy

import torch

from nic_lib import cache, container, fileio
from nic_lib.models import build_model, identity, variable_rate
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
