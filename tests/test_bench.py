"""Properties of nic_lib.bench: sharding, merging, resuming, rate sources, row contents."""

import copy
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from nic_lib import bench, codecs, coding, corruptions, data, metrics, neural
from nic_lib.models import build_model, default_config, pqmim


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Corrupted images and grid caches go to temporary folders."""
    monkeypatch.setenv(data.ENV_CACHE_DIR, str(tmp_path / "cache"))
    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)


@dataclasses.dataclass
class CountingCodec:
    """JPEG behind the grid's codec contract, counting its calls."""

    name: str = "counting-jpeg"
    settings: tuple = (30, 70)
    description: str = "jpeg via nic_lib.codecs, counted"
    calls: int = 0

    def code(self, img, setting):
        self.calls += 1
        jpeg = codecs.get_codec("jpeg")
        stream = jpeg.encode(img, setting)
        return jpeg.decode(stream), metrics.bpp(len(stream), *img.shape[:2]), "bitstream"


def tiny_nic(rate="bitstream"):
    torch.manual_seed(0)
    config = default_config("mbt2018", 1)
    config.update(N=8, M=12)
    return bench.NicCodec("tiny-mbt2018", {1: build_model("mbt2018", **config)}, rate=rate)


def tiny_grid(tmp_path, codec_list, **kw):
    args = {"corruptions": ["gaussian_noise", "pixelate"], "severities": [2], "limit": 2, "with_ms_ssim": False,
                "corrupted_out": str(tmp_path / "c")}
    args.update(kw)
    return bench.Grid("sample", codec_list, **args)


def test_sharded_grid_merged_equals_unsharded_grid(tmp_path):
    grid = tiny_grid(tmp_path, [bench.classic_codec("jpeg", [20, 80]), bench.classic_codec("jpeg2000", [0.3])],
                     with_ms_ssim=True)
    whole = bench.run_grid(grid, tmp_path / "g", progress=False)
    for i in range(3):
        bench.run_grid(grid, tmp_path / "g", shard=f"{i}/3", progress=False)
    merged = bench.merge_shards(grid, 3, tmp_path / "g")
    assert len(whole) == 2 * 3 * 3  # images x conditions (clean + 2) x rate points
    pd.testing.assert_frame_equal(merged, whole)
    assert list(whole.columns) == list(bench.COLUMNS)


def test_merge_refuses_unfinished_shards(tmp_path):
    grid = tiny_grid(tmp_path, [CountingCodec()], corruptions=["pixelate"])
    bench.run_grid(grid, tmp_path / "g", shard=(0, 2), progress=False)
    with pytest.raises(bench.ShardsIncompleteError, match=r"shards \[1\] of 2"):
        bench.merge_shards(grid, 2, tmp_path / "g")


def test_grid_resumes_from_finished_units_without_recomputing(tmp_path):
    codec = CountingCodec()
    grid = tiny_grid(tmp_path, [codec])
    first = bench.run_grid(grid, tmp_path / "g", progress=False)
    assert codec.calls == len(first) == 2 * 3 * 2
    (grid.folder(tmp_path / "g") / "shard-0-of-1.csv").unlink()  # only the parts remain
    again = bench.run_grid(grid, tmp_path / "g", progress=False)
    assert codec.calls == len(first)
    pd.testing.assert_frame_equal(again, first)


def test_rows_compare_the_reconstruction_with_the_corrupted_input_and_with_the_clean_image(tmp_path):
    grid = tiny_grid(tmp_path, [CountingCodec()])
    table = bench.run_grid(grid, tmp_path / "g", progress=False)
    clean_rows = table[table["corruption"] == bench.CLEAN]
    assert (clean_rows["severity"] == 0).all()
    assert np.allclose(clean_rows["psnr_vs_input"], clean_rows["psnr_vs_clean"])
    # recompute one shifted row by hand
    [(name, clean)] = corruptions.load_clean("sample", limit=1)
    shifted = corruptions.corrupt(clean, "gaussian_noise", 2, name)
    x_hat, bpp, _ = CountingCodec().code(shifted, 30)
    row = table.query("image == @name and corruption == 'gaussian_noise' and setting == 30").iloc[0]
    assert row["bpp"] == pytest.approx(bpp)
    assert row["psnr_vs_input"] == pytest.approx(metrics.psnr(shifted, x_hat))
    assert row["psnr_vs_clean"] == pytest.approx(metrics.psnr(clean, x_hat))


def test_nic_bitstream_rows_report_real_bytes(tmp_path):
    nic = tiny_nic()
    table = bench.run_grid(tiny_grid(tmp_path, [nic], corruptions=["pixelate"], limit=1), tmp_path / "g",
                           progress=False)
    assert (table["rate_source"] == "bitstream").all() and (table["bpp"] > 0).all()
    assert np.isfinite(table["psnr_vs_input"]).all()


def test_likelihood_rate_is_used_only_after_matching_real_bitstreams(tmp_path, monkeypatch):
    grid = tiny_grid(tmp_path, [tiny_nic("likelihood")], corruptions=["pixelate"], limit=1)
    monkeypatch.setattr(bench, "LIKELIHOOD_RTOL", 0.0)  # no estimate is exact: must refuse
    with pytest.raises(bench.LikelihoodRateMismatchError, match="rate='bitstream'"):
        bench.run_grid(grid, tmp_path / "g", progress=False)
    monkeypatch.setattr(bench, "LIKELIHOOD_RTOL", 10.0)  # anything passes: rows from likelihoods
    table = bench.run_grid(grid, tmp_path / "g", progress=False)
    assert (table["rate_source"] == "likelihood").all()


def test_likelihood_check_compares_real_bytes_with_the_estimate_of_each_setting():
    nic = tiny_nic("likelihood")
    images = corruptions.load_clean("sample", limit=2)
    table = bench.likelihood_rate_table(nic, images)
    for (_, img) in images:  # compress-only bytes are the bytes of a full encode/decode
        assert nic.bitstream_bpp(img, 1) == nic.code(img, 1, "bitstream")[1]
    real = np.mean([nic.code(img, 1, "bitstream")[1] for _, img in images])
    est = np.mean([nic.code(img, 1, "likelihood")[1] for _, img in images])
    [row] = table.to_dict("records")
    assert row["bpp_bitstream"] == pytest.approx(real, rel=1e-12)
    assert row["bpp_likelihood"] == pytest.approx(est, rel=1e-5)
    assert row["rel_diff"] == pytest.approx(abs(est - real) / real, rel=1e-4)


def test_changing_a_codec_setting_changes_the_cache_folder(tmp_path):
    a = tiny_grid(tmp_path, [bench.classic_codec("jpeg", [20, 80])])
    b = tiny_grid(tmp_path, [bench.classic_codec("jpeg", [20, 81])])
    assert a.folder(tmp_path) != b.folder(tmp_path)


@pytest.mark.parametrize("text", ["3/3", "1", "-1/2", "a/b"])
def test_bad_shard_is_refused(text):
    with pytest.raises(ValueError, match="i/n"):
        bench.parse_shard(text)


def test_a_grid_reuses_the_rows_another_grid_computed_for_the_same_codec(tmp_path):
    first = CountingCodec()
    alone = bench.run_grid(tiny_grid(tmp_path, [first]), tmp_path / "g", progress=False)
    again = CountingCodec()  # same name, description and settings: the same codec
    mixed = bench.run_grid(tiny_grid(tmp_path, [bench.classic_codec("jpeg", [50]), again]), tmp_path / "g",
                           progress=False)
    assert first.calls == len(alone) and again.calls == 0
    reused = mixed[mixed["codec"] == first.name].reset_index(drop=True)
    pd.testing.assert_frame_equal(reused, alone)


def test_a_codec_with_another_configuration_is_recomputed(tmp_path):
    bench.run_grid(tiny_grid(tmp_path, [CountingCodec()]), tmp_path / "g", progress=False)
    other = CountingCodec(description="jpeg via nic_lib.codecs, counted, other options")
    table = bench.run_grid(tiny_grid(tmp_path, [other]), tmp_path / "g", progress=False)
    assert other.calls == len(table) > 0


def test_an_unsharded_run_after_its_shards_recomputes_nothing(tmp_path):
    codec = CountingCodec()
    grid = tiny_grid(tmp_path, [codec])
    for i in range(2):
        bench.run_grid(grid, tmp_path / "g", shard=(i, 2), progress=False)
    calls = codec.calls
    whole = bench.run_grid(grid, tmp_path / "g", progress=False)
    assert codec.calls == calls
    pd.testing.assert_frame_equal(whole, bench.merge_shards(grid, 2, tmp_path / "g"))


def test_levels_of_one_variable_rate_model_share_the_analysis_transform_exactly():
    import copy

    from nic_lib.models.variable_rate import make_variable_rate, set_rate_level

    torch.manual_seed(0)
    config = default_config("mbt2018", 1)
    config.update(N=8, M=12)
    base = make_variable_rate(build_model("mbt2018", **config), [0.001, 0.01, 0.1])
    models = {}
    for level in range(3):
        models[level + 1] = set_rate_level(copy.deepcopy(base), level)
        models[level + 1].gain.log_gain.data[level] += 0.1 * level  # levels really differ
    nic = bench.NicCodec("tiny-vr", models, rate="likelihood")
    [(_, img)] = corruptions.load_clean("sample", limit=1)
    calls, layouts = [], []
    hook = models[1].g_a.register_forward_hook(lambda *a: calls.append(1))
    pre_hooks = len(models[1].g_s._forward_pre_hooks)
    first = models[1].g_s[0].register_forward_pre_hook(lambda m, a: layouts.append(
        a[0].is_contiguous(memory_format=torch.channels_last)))
    together = nic.code_many(img)
    hook.remove()
    first.remove()
    assert len(set(nic._analysis_groups().values())) == 1
    assert calls == [1]  # g_a ran once for the three levels
    assert layouts == [True]  # g_s ran on a channels-last input ...
    assert len(models[1].g_s._forward_pre_hooks) == pre_hooks  # ... and the hook is gone
    for setting, (x_hat, bpp, source) in zip(nic.settings, together):
        x_alone, bpp_alone, _ = nic.code(img, setting)
        assert source == "likelihood"
        assert bpp == pytest.approx(bpp_alone, rel=1e-5)
        assert np.abs(x_hat.astype(int) - x_alone).max() <= 1
    assert len({round(b, 6) for _, b, _ in together}) == 3


def _grid_table():
    """A grid table: a reference at 4 rate points (+3 dB per doubling) and a codec at 2 settings, 2 conditions."""
    rows = []
    for corruption, severity, shift in ((bench.CLEAN, 0, 0.0), ("fog", 3, 0.5)):
        for i, bpp in enumerate([0.1, 0.2, 0.4, 0.8]):
            psnr = 26.0 + 3 * i
            rows.append({"image": "a", "codec": "ref", "setting": bpp, "corruption": corruption, "severity": severity,
                         "bpp": bpp, "psnr_vs_input": psnr, "psnr_vs_clean": psnr - 5})
        for setting, bpp in ((1, 0.2 * (1 + shift)), (2, 2.0)):  # setting 2 lies beyond the reference's rates
            rows.append({"image": "a", "codec": "nic", "setting": setting, "corruption": corruption,
                         "severity": severity, "bpp": bpp, "psnr_vs_input": 30.0, "psnr_vs_clean": 24.0})
    return pd.DataFrame(rows)


def test_delta_at_setting_compares_one_setting_at_the_rate_it_spends_in_every_condition():
    table = _grid_table()
    cells = bench.delta_at_setting(table, "nic", 1, "ref").set_index("corruption")
    assert cells.loc[bench.CLEAN, "delta_db"] == pytest.approx(30.0 - 29.0)  # the reference gives 29 dB at 0.2 bpp
    # under fog the codec spends 0.3 bpp: the reference is read there, log-linearly
    assert cells.loc["fog", "bpp"] == pytest.approx(0.3)
    assert cells.loc["fog", "delta_db"] == pytest.approx(30.0 - (29.0 + 3 * np.log2(1.5)))
    assert (cells["reason"] == "").all()


def test_delta_at_setting_names_why_a_cell_cannot_exist():
    cells = bench.delta_at_setting(_grid_table(), "nic", 2, "ref", metric="psnr_vs_clean")
    assert cells["delta_db"].isna().all()
    assert cells["reason"].str.contains("spends 2 bpp here, ref's highest rate is 0.8 bpp").all()
    with pytest.raises(ValueError, match="no setting 7"):
        bench.delta_at_setting(_grid_table(), "nic", 7, "ref")


def test_likelihood_rate_is_checked_on_corrupted_inputs_too(tmp_path):
    nic = tiny_nic("likelihood")
    table = bench.likelihood_rate_under_shift(nic, "sample", ["gaussian_noise"], [1, 5], limit=1,
                                              corrupted_out=tmp_path / "c")
    assert list(zip(table["corruption"], table["severity"])) == [(bench.CLEAN, 0), ("gaussian_noise", 1),
                                                                 ("gaussian_noise", 5)]
    (_, noisy), = corruptions.load_corrupted("sample", "gaussian_noise", 5, limit=1, out=tmp_path / "c")
    row = table.iloc[-1]
    assert row["bpp_bitstream"] == pytest.approx(nic.bitstream_bpp(noisy, 1))
    assert row["images"] == 1


PQMIM_TINY = {"N": 16, "latent_dim": 8, "K": 16, "width": 32, "layers": 1, "heads": 2}


def tiny_pqmim(M):
    torch.manual_seed(M)
    return pqmim.PQMIM(**PQMIM_TINY, M=M).eval()


def test_pqmim_rate_points_join_the_grid_with_real_streams_and_their_model_identity(tmp_path):
    low, high = tiny_pqmim(2), tiny_pqmim(4)
    grid = tiny_grid(tmp_path, [bench.NicCodec("tiny-pqmim", {1: low, 2: high})], corruptions=["pixelate"], limit=1)
    table = bench.run_grid(grid, tmp_path / "g", progress=False)
    assert len(table) == 4 and (table["rate_source"] == "bitstream").all()
    name, img = corruptions.load_clean("sample", 1)[0]
    stream = high.compress(coding.model_input(high, img))["strings"][0][0]
    row = table[(table["corruption"] == bench.CLEAN) & (table["setting"] == 2)].iloc[0]
    # bpp = 8 · bytes of the real stream / H·W
    assert row["bpp"] == pytest.approx(8 * len(stream) / (img.shape[0] * img.shape[1]))
    assert np.isfinite(table["psnr_vs_input"]).all()
    # the cache key is the models' identity: the same weights coded with another attention
    # radius (a setting outside the state dict) are another grid; a copy is the same one
    wider = copy.deepcopy(high)
    wider.attention_radius = 3
    same = tiny_grid(tmp_path, [bench.NicCodec("tiny-pqmim", {1: low, 2: copy.deepcopy(high)})],
                     corruptions=["pixelate"], limit=1)
    other = tiny_grid(tmp_path, [bench.NicCodec("tiny-pqmim", {1: low, 2: wider})], corruptions=["pixelate"], limit=1)
    assert same.folder(tmp_path / "g") == grid.folder(tmp_path / "g") != other.folder(tmp_path / "g")


def test_pqmim_has_no_likelihood_rate_and_the_command_line_codes_it_for_real(monkeypatch):
    with pytest.raises(ValueError, match="rate='bitstream'"):
        bench.NicCodec("tiny-pqmim", {1: tiny_pqmim(2)}, rate="likelihood")
    asked = []
    monkeypatch.setattr(neural, "quality_models",
                        lambda name, qualities=None: asked.append((name, qualities)) or {1: tiny_pqmim(2)})
    (codec,) = bench.nic_codecs_from_checkpoints(["pqmim:1"], rate="likelihood")
    assert asked == [("pqmim", [1])] and codec.rate == "bitstream" and codec.settings == (1,)
    with pytest.raises(ValueError, match="profile 'cpu'"):
        bench.nic_codecs_from_checkpoints(["pqmim"], profile="full")
