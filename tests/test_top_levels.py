"""The cpu profile's top levels from a second file (issue 25): ``<model>/n96-top.pt``.

Where ``mbt2018/n96-top.pt`` is shipped (qualities 6-8, transforms of their own), every
path that loads a cpu-profile model by key serves those qualities from it and the others
from ``n96.pt`` (:func:`nic_lib.models.hub.cpu_checkpoint_for`); without it everything
comes from ``n96.pt``. Tiny models with different weights in a temporary
``$NIC_CHECKPOINT_DIR`` stand for the two files.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from nic_lib import cache, cli, container, data, neural
from nic_lib.models import CheckpointNotFoundError, get_model, hub, identity, registry
from nic_lib.models.checkpoints import checkpoint_digest, load_checkpoint, save_checkpoint
from nic_lib.models.registry import LAMBDA_MSE
from nic_lib.models.variable_rate import set_rate_level

TINY = {"N": 8, "M": 12}  # widths that keep a 64x64 decode in milliseconds
MAIN_QUALITIES = [1, 2, 3, 4, 5, 6, 7, 8]
TOP_QUALITIES = [6, 7, 8]
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _save(path: Path, qualities: list[int], seed: int, name: str = "mbt2018") -> Path:
    """A tiny variable-rate checkpoint of ``name`` holding ``qualities``, weights from ``seed``."""
    torch.manual_seed(seed)
    config = registry.default_config(name, qualities[0], "cpu")
    config.pop("lmbda")
    config.update(TINY, lmbdas=[LAMBDA_MSE[q] for q in qualities], quality=None,
                  qualities=list(qualities))
    model = registry.build_model(name, **config)
    model.update(force=True)
    return save_checkpoint(model, path, config)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """``$NIC_CHECKPOINT_DIR`` with ``mbt2018/n96.pt`` (q1-q8) and ``mbt2018/n96-top.pt`` (q6-q8)."""
    monkeypatch.setenv(hub.CHECKPOINT_DIR_ENV, str(tmp_path))
    _save(tmp_path / "mbt2018" / hub.CPU_FILE, MAIN_QUALITIES, seed=0)
    _save(tmp_path / "mbt2018" / hub.CPU_TOP_FILE, TOP_QUALITIES, seed=1)
    return tmp_path


def _digest_at(path: Path, quality: int) -> str:
    """model_digest of a file's model at a quality (weights and rate level)."""
    model, checkpoint = load_checkpoint(path)
    level = checkpoint["config"]["qualities"].index(quality)
    return identity.model_digest(set_rate_level(model, level))


def _expected_file(folder: Path, quality: int) -> Path:
    return folder / "mbt2018" / (hub.CPU_TOP_FILE if quality in TOP_QUALITIES else hub.CPU_FILE)


# ------------------------------------------------------------------------- the rule


def test_the_top_file_holds_its_qualities_and_n96_the_others(folder):
    for q in MAIN_QUALITIES:
        assert hub.cpu_checkpoint_for("mbt2018", q) == _expected_file(folder, q), q
    assert hub.cpu_checkpoint_files("mbt2018") == [folder / "mbt2018" / hub.CPU_FILE,
                                                    folder / "mbt2018" / hub.CPU_TOP_FILE]
    assert hub.cpu_qualities("mbt2018") == MAIN_QUALITIES


def test_get_model_serves_each_quality_from_the_file_that_holds_it(folder):
    main, top = folder / "mbt2018" / hub.CPU_FILE, folder / "mbt2018" / hub.CPU_TOP_FILE
    for q in MAIN_QUALITIES:
        served = identity.model_digest(get_model("mbt2018", q, "cpu"))
        assert served == _digest_at(_expected_file(folder, q), q), q
        if q in TOP_QUALITIES:  # the weights differ from the main file's at that level
            assert served != _digest_at(main, q), q
    # the top file's own levels: q6 is its level 0, q8 its level 2
    assert get_model("mbt2018", 6).gain.level == 0 and get_model("mbt2018", 8).gain.level == 2
    g_a = "g_a.0.weight"
    assert torch.equal(get_model("mbt2018", 7).state_dict()[g_a], load_checkpoint(top)[0].state_dict()[g_a])
    assert torch.equal(get_model("mbt2018", 5).state_dict()[g_a], load_checkpoint(main)[0].state_dict()[g_a])


def test_without_the_top_file_everything_comes_from_n96(folder):
    main = folder / "mbt2018" / hub.CPU_FILE
    (folder / "mbt2018" / hub.CPU_TOP_FILE).unlink()
    assert hub.cpu_checkpoint_files("mbt2018") == [main]
    for q in MAIN_QUALITIES:
        assert hub.cpu_checkpoint_for("mbt2018", q) == main
        assert identity.model_digest(get_model("mbt2018", q)) == _digest_at(main, q), q
    models = neural.quality_models("mbt2018")
    assert sorted(models) == MAIN_QUALITIES
    assert all(identity.model_digest(models[q]) == _digest_at(main, q) for q in MAIN_QUALITIES)


def test_a_top_file_routes_only_the_qualities_it_holds(folder):
    _save(folder / "mbt2018" / hub.CPU_TOP_FILE, [8], seed=2)  # shipped again, q8 only
    assert [hub.cpu_checkpoint_for("mbt2018", q).name for q in (5, 6, 7, 8)] == [
        hub.CPU_FILE, hub.CPU_FILE, hub.CPU_FILE, hub.CPU_TOP_FILE]
    assert identity.model_digest(get_model("mbt2018", 7)) == _digest_at(folder / "mbt2018" / hub.CPU_FILE, 7)


def test_the_top_file_serves_its_qualities_without_n96_and_names_it_for_the_others(folder):
    (folder / "mbt2018" / hub.CPU_FILE).unlink()
    assert identity.model_digest(get_model("mbt2018", 7)) == _digest_at(_expected_file(folder, 7), 7)
    with pytest.raises(CheckpointNotFoundError) as err:
        get_model("mbt2018", 3)
    assert str(folder / "mbt2018" / hub.CPU_FILE) in str(err.value)
    assert "python scripts/train_cpu_profile.py --only n96`" in str(err.value)


def test_a_top_file_of_another_model_is_refused_with_its_path(folder):
    _save(folder / "mbt2018" / hub.CPU_TOP_FILE, TOP_QUALITIES, seed=1, name="mbt2018-mean")
    with pytest.raises(CheckpointNotFoundError, match="'mbt2018-mean'") as err:
        get_model("mbt2018", 7)
    assert str(folder / "mbt2018" / hub.CPU_TOP_FILE) in str(err.value)
    assert "--only n96-top" in str(err.value)
    with pytest.raises(CheckpointNotFoundError, match="'mbt2018-mean'"):
        neural.quality_models("mbt2018", [7])


# ------------------------------------------------------------------- quality_models


def test_quality_models_of_a_key_route_like_get_model(folder):
    models = neural.quality_models("mbt2018")  # default: every quality served
    assert sorted(models) == MAIN_QUALITIES
    for q, model in models.items():
        assert identity.model_digest(model) == identity.model_digest(get_model("mbt2018", q)), q
    some = neural.quality_models("mbt2018", [2, 7])
    assert list(some) == [2, 7]
    assert identity.model_digest(some[7]) == _digest_at(_expected_file(folder, 7), 7)


def test_quality_models_of_an_explicit_path_keep_that_file(folder):
    main = folder / "mbt2018" / hub.CPU_FILE
    models = neural.quality_models(main)  # the main line's own eight levels
    assert sorted(models) == MAIN_QUALITIES
    assert all(identity.model_digest(models[q]) == _digest_at(main, q) for q in MAIN_QUALITIES)
    with pytest.raises(ValueError, match=r"\[6, 7, 8\]; \[5\]"):
        neural.quality_models(folder / "mbt2018" / hub.CPU_TOP_FILE, [5])


# ------------------------------------------------------------------ .nic and the CLI


@pytest.fixture
def png(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (40, 70, 3), dtype=np.uint8)
    path = tmp_path / "in.png"
    Image.fromarray(img).save(path)
    return path


def test_nic_round_trip_at_a_top_quality_uses_the_top_files_weights(folder, tmp_path, png):
    nic, out = tmp_path / "x.nic", tmp_path / "out.png"
    assert cli.main(["compress", str(png), str(nic), "--model", "mbt2018", "--quality", "7"]) == 0
    assert cli.main(["decompress", str(nic), str(out)]) == 0
    header = container.read_header(nic.read_bytes())
    top_model = get_model("mbt2018", 7)
    main_model = neural.quality_models(folder / "mbt2018" / hub.CPU_FILE, [7])[7]
    assert header.fingerprint == container.weights_fingerprint(top_model)
    assert header.fingerprint != container.weights_fingerprint(main_model)
    img = data.load_image(png)
    assert np.array_equal(data.load_image(out), container.decode_image(nic.read_bytes(), top_model, 7))
    assert data.load_image(out).shape == img.shape


def test_a_nic_file_made_with_the_main_files_q7_is_refused(folder, tmp_path, png, capsys):
    main_model = neural.quality_models(folder / "mbt2018" / hub.CPU_FILE, [7])[7]
    nic = tmp_path / "old.nic"
    nic.write_bytes(container.encode_image(main_model, data.load_image(png), "mbt2018", 7, "cpu"))
    with pytest.raises(container.NicModelMismatchError, match="other weights"):
        container.decode_image(nic.read_bytes(), lambda name, q: get_model(name, q, "cpu"))
    capsys.readouterr()
    assert cli.main(["decompress", str(nic), str(tmp_path / "out.png")]) == cli.EXIT_USER_ERROR
    assert "other weights" in capsys.readouterr().err
    # and it decodes with the model that made it
    assert container.decode_image(nic.read_bytes(), main_model, 7).shape == (40, 70, 3)


# ---------------------------------------------------------------- cache keys


def test_the_cpu_digest_changes_when_either_file_changes(folder):
    main, top = folder / "mbt2018" / hub.CPU_FILE, folder / "mbt2018" / hub.CPU_TOP_FILE
    both = hub.cpu_checkpoint_digest("mbt2018")
    assert both != checkpoint_digest(main)
    _save(top, TOP_QUALITIES, seed=3)  # only the top file changes
    after_top = hub.cpu_checkpoint_digest("mbt2018")
    assert after_top != both
    _save(main, MAIN_QUALITIES, seed=4)  # only the main file changes
    assert hub.cpu_checkpoint_digest("mbt2018") not in (both, after_top)
    top.unlink()  # n96.pt alone: its own digest, as before top files existed
    assert hub.cpu_checkpoint_digest("mbt2018") == checkpoint_digest(main)


def test_a_cached_table_keyed_on_the_cpu_digest_is_recomputed_when_only_the_top_file_changes(folder, tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return pd.DataFrame({"x": [len(calls)]})

    def table():
        return cache.cached_table(tmp_path / "t.csv", {"what": "test"}, compute, data=None,
                                  models={"mbt2018": hub.cpu_checkpoint_digest("mbt2018")})

    table(), table()
    assert len(calls) == 1
    _save(folder / "mbt2018" / hub.CPU_TOP_FILE, TOP_QUALITIES, seed=5)
    table()
    assert len(calls) == 2


# ------------------------------------------------------------------ test vectors


def test_vectors_span_every_quality_the_cpu_profile_serves(folder):
    spec = importlib.util.spec_from_file_location("make_nic_vectors_under_test", SCRIPTS / "make_nic_vectors.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    _save(folder / "mbt2018" / hub.CPU_FILE, [1, 2, 3, 4, 5, 6], seed=0)  # the top beyond it
    assert script.shipped_models() == [("mbt2018", [1, 8])]
    (folder / "mbt2018" / hub.CPU_TOP_FILE).unlink()
    assert script.shipped_models() == [("mbt2018", [1, 6])]


# ------------------------------------------------------------- the Kodak benchmark


def test_kodak_rd_measures_a_key_as_the_cpu_profile_serves_it(folder, monkeypatch):
    from benchmark_modules import load_benchmark

    kodak_rd = load_benchmark("kodak_rd")
    monkeypatch.chdir(folder)  # a folder named mbt2018 here, but no run in it: the key
    images = [("probe", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))]
    # random tiny models spend the same bits at every level: no BD-rate exists; this test is
    # about which file serves each level, so the BD step returns NaN
    monkeypatch.setattr(kodak_rd.rd, "bd_rate_table", lambda curves, ref: pd.DataFrame(
        {"codec": curves["codec"].unique(), "bd_rate_percent": np.nan, "overlap": np.nan}))
    points, row = kodak_rd.measure(Path("mbt2018"), images, decode=0)
    assert row["files"] == f"{hub.CPU_FILE}+{hub.CPU_TOP_FILE}"
    assert sorted(points["setting"].unique()) == MAIN_QUALITIES
    # q8's numbers are the top file's own, q1's the main file's
    by_q = points.set_index("setting")
    for q, path in ((8, folder / "mbt2018" / hub.CPU_TOP_FILE), (1, folder / "mbt2018" / hub.CPU_FILE)):
        alone = neural.rate_sweep(images, {"x": neural.quality_models(path, [q])}, decode=False, progress=False)
        assert by_q.loc[q, "bpp"] == pytest.approx(float(alone["bpp"].iloc[0]))
    # the ceiling is the top file's at q8, not the main file's
    top = neural.quality_models(folder / "mbt2018" / hub.CPU_TOP_FILE, [8])[8]
    from nic_lib import capacity
    assert row["ceiling_psnr_top"] == pytest.approx(capacity.autoencoder_ceiling(top, images))
