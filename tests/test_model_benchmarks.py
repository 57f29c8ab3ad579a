"""Pure functions of the model benchmarks: benchmarks/widen_lever.py and kodak_rd.py."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from benchmark_modules import load_benchmark

widen_lever = load_benchmark("widen_lever")
kodak_rd = load_benchmark("kodak_rd")


def test_fork_schedule_continues_the_controls_cosine_to_the_same_floor():
    log = pd.DataFrame({"step": [16490, 16500, 16510], "lr": [1.7e-4, 1.69e-4, 1.68e-4]})
    config = {"lr_schedule": "cosine", "max_steps": 60000, "lr": 2e-4, "min_lr_ratio": 0.05}
    s = widen_lever.fork_schedule(log, config, 16500)
    assert s["steps"] == 43500 and s["lr"] == pytest.approx(1.69e-4)
    assert s["lr"] * s["min_lr_ratio"] == pytest.approx(2e-4 * 0.05)  # same absolute floor
    with pytest.raises(ValueError, match="nothing left"):
        widen_lever.fork_schedule(log, config, 60000)
    with pytest.raises(ValueError, match="cosine"):
        widen_lever.fork_schedule(log, {**config, "lr_schedule": "step"}, 16500)


def _run(tmp_path, name, steps, ips):
    run = tmp_path / name
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config": {"batch_size": 8}}))
    log = [{"step": s, "wall_s": s / 2.0, "images_per_s": ips} for s in steps]
    pd.DataFrame(log).to_csv(run / "log.csv", index=False)
    ev = [{"step": s, "wall_s": s / 2.0, "quality": q, "psnr": 30 + q + s / 1e4,
           "bpp": 0.1 * q, "weights": w} for s in steps[::2] for q in (1, 2, 3) for w in ("model", "ema")]
    pd.DataFrame(ev).to_csv(run / "eval.csv", index=False)
    return run


def test_clock_counts_cpu_hours_from_throughput_and_keeps_ema_rows(tmp_path):
    run = _run(tmp_path, "control", list(range(1000, 5001, 500)), ips=20.0)
    ev = widen_lever._clock(run, 2000)
    assert set(ev.weights) == {"ema"} and ev.step.min() == 2000
    # 2,000 steps of batch 8 at 20 images/s = 800 s
    row = ev[ev.step == 4000].iloc[0]
    assert row.hours == pytest.approx(2000 * 8 / 20 / 3600)


def test_clock_ignores_the_rows_a_resumed_run_logged_twice(tmp_path):
    steps = list(range(500, 3001, 500))
    run = _run(tmp_path, "fork", steps, ips=10.0)
    log = pd.read_csv(run / "log.csv")
    stale = log.assign(images_per_s=1e6)  # an older, interrupted pass over the same steps
    pd.concat([stale, log]).to_csv(run / "log.csv", index=False)
    ev = widen_lever._clock(run, None)
    assert ev.images_per_s.iloc[0] == pytest.approx(10.0)


def test_j2k_coverage_is_the_shared_share_of_the_psnr_range():
    j2k = pd.DataFrame({"bpp": [0.1, 1.0], "psnr_rgb": [26.0, 36.0]})
    # interpolation is in log bpp: ends at 26 and 36 dB
    full = pd.DataFrame({"psnr_rgb": [25.0, 37.0]})
    half = pd.DataFrame({"psnr_rgb": [31.0, 40.0]})
    none = pd.DataFrame({"psnr_rgb": [37.0, 40.0]})
    assert kodak_rd.j2k_coverage(full, j2k) == pytest.approx(1.0)
    assert kodak_rd.j2k_coverage(half, j2k) == pytest.approx(0.5)
    assert kodak_rd.j2k_coverage(none, j2k) == 0.0
    mid = pd.DataFrame({"bpp": [np.sqrt(0.1)], "psnr_rgb": [31.0]})
    j3 = pd.concat([j2k, mid]).sort_values("bpp")
    assert kodak_rd.j2k_coverage(pd.DataFrame({"psnr_rgb": [26.0, 31.0]}), j3) == pytest.approx(0.5)


pqmim_ae_curve = load_benchmark("pqmim_ae_curve")


def _tiny_pqmim():
    import torch

    from nic_lib.models import pqmim

    torch.manual_seed(0)
    return pqmim.PQMIM(N=8, latent_dim=4, M=2, K=4, width=16, layers=1, heads=2)


def test_pqmim_ae_curve_reads_run_states_and_exports_and_replaces_rows(tmp_path):
    import torch

    from nic_lib.models import save_checkpoint

    model = _tiny_pqmim()
    export = save_checkpoint(model, tmp_path / "export.pt", {"mask_law": "schedule"},
                             extra={"train_config": {"steps_a": 7}})
    run = tmp_path / "run"
    run.mkdir()
    cfg = {**model.architecture(), "steps_a": 9}
    torch.save({"format": "x", "config": cfg, "stage": "a", "step": 3,
                "model": model.state_dict()}, run / "ckpt.pt")
    m, stage, step = pqmim_ae_curve.load(run)
    assert (stage, step) == ("a", 3)
    torch.save({"format": "x", "config": cfg, "stage": "b", "step": 5,
                "model": model.state_dict()}, run / "ckpt.pt")
    assert pqmim_ae_curve.load(run)[1:] == ("b", 9)  # stage B: the autoencoder of stage A's end
    assert pqmim_ae_curve.load(export)[1:] == ("export", 7)
    # the reconstruction through the quantizer, on an image that is not a multiple of 16
    img = (np.arange(20 * 36 * 3) % 251).astype(np.uint8).reshape(20, 36, 3)
    stats = pqmim_ae_curve.autoencoder_stats(m, {"a": img, "b": img[:, ::-1].copy()})
    assert np.isfinite(stats["psnr"]) and 0 < stats["psnr"] < 60
    assert stats["worst"] in {"a", "b"} and stats["cast_worst"] >= stats["cast"] >= 0
    out = tmp_path / "out"
    pqmim_ae_curve.main([str(export), "--images", "1", "--out", str(out)])
    t = pqmim_ae_curve.main([str(export), "--images", "1", "--out", str(out)])
    assert len(t) == 1 and t.bpp_fixed.iloc[0] == pytest.approx(2 * 2 / 256)  # M log2 K / 16²
    assert (out / "curve.png").is_file()
    with pytest.raises(SystemExit, match="no checkpoint"):
        pqmim_ae_curve.main([str(tmp_path / "missing"), "--out", str(out)])


def test_chroma_and_colour_bias_measure_a_cast_and_a_loss_of_saturation():
    grey = np.full((4, 4, 3), 100, np.uint8)
    assert pqmim_ae_curve.chroma(grey) == 0
    img = np.zeros((2, 2, 3), np.uint8)
    img[..., 0] = 200  # pure red: chroma 200
    assert pqmim_ae_curve.chroma(img) == 200
    half = img // 2
    assert pqmim_ae_curve.chroma(half) / pqmim_ae_curve.chroma(img) == 0.5


def test_colour_cast_is_the_length_of_the_mean_error_colour(monkeypatch):
    import torch

    img = np.full((16, 16, 3), 100, np.uint8)
    tinted = img.astype(np.int16) + np.array([3, -4, 0])  # mean error colour (3, -4, 0): length 5

    class Fixed(torch.nn.Module):
        def codes(self, x):
            return x

        def decode_codes_to_image(self, codes):
            return torch.from_numpy(tinted.astype(np.float32) / 255).permute(2, 0, 1)[None]

    s = pqmim_ae_curve.autoencoder_stats(Fixed(), {"grey": img})
    assert s["cast"] == pytest.approx(5, abs=0.02) and s["worst_rgb"] == "+3.0/-4.0/+0.0"


pqmim_colour = load_benchmark("pqmim_colour")


def test_block_mean_keeps_blockwise_constant_images_and_averages_each_block():
    flat = np.repeat(np.repeat(np.arange(6, dtype=np.uint8).reshape(2, 3, 1) * 40, 16, 0), 16, 1)
    flat = np.repeat(flat, 3, axis=2)
    assert np.array_equal(pqmim_colour.block_mean(flat), flat)
    img = np.zeros((16, 16, 3), np.uint8)
    img[:8] = 200  # half the block at 200: mean 100
    assert (pqmim_colour.block_mean(img) == 100).all()


def test_pqmim_colour_rows_measure_every_stage_and_the_data_path_is_exact():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (20, 36, 3), dtype=np.uint8)
    rows = pqmim_colour.rows_for("tiny", _tiny_pqmim(), "noise", img)
    by_stage = {r["stage"]: r for r in rows}
    assert list(by_stage) == list(pqmim_colour.STAGES)
    data_path = by_stage["input"]
    assert data_path["psnr"] == np.inf and data_path["delta_E"] == 0 and data_path["order"] == "012"
    # the coded stream decodes to the codes of the pq stage: the same picture
    assert by_stage["coded"]["exact"] and by_stage["coded"]["psnr"] == by_stage["pq"]["psnr"]
    assert by_stage["pq"]["bpp"] == pytest.approx(2 * 2 / 256)  # M log2 K / 16², fixed length
    assert all(np.isfinite(r["lp_delta_E"]) for r in rows)


def test_pqmim_colour_main_writes_both_tables_and_refuses_a_missing_checkpoint(tmp_path, monkeypatch):
    from nic_lib.models import save_checkpoint

    export = save_checkpoint(_tiny_pqmim(), tmp_path / "tiny.pt", {"mask_law": "schedule"})
    rng = np.random.default_rng(1)
    images = [("a", rng.integers(0, 256, (20, 36, 3), dtype=np.uint8)),
              ("b", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))]
    monkeypatch.setattr(pqmim_colour, "pick_images", lambda n: images[:n])
    out = tmp_path / "colour.csv"
    table = pqmim_colour.main(["--checkpoint", str(export), "--images", "2", "--stages", "input",
                               "pq", "--out", str(out)])
    assert len(table) == 4 and set(table.stage) == {"input", "pq"}
    hue = pd.read_csv(pqmim_colour.hue_path(out))
    data_path = hue[hue.stage == "input"]
    assert len(data_path) and (data_path.hue_shift == 0).all() and (data_path.chroma_ratio == 1).all()
    with pytest.raises(SystemExit, match="no such checkpoint"):
        pqmim_colour.main(["--checkpoint", str(tmp_path / "missing.pt"), "--out", str(out)])


def test_top_lever_writes_the_gap_table_of_two_runs(tmp_path, capsys):
    top_lever = load_benchmark("top_lever")
    rows = lambda psnr: "step,wall_s,quality,lmbda,images,bpp,psnr,weights\n" + "".join(  # noqa: E731
        f"100,60.0,{q},0.01,4,{b},{p},ema\n" for q, b, p in zip((1, 2, 3), (0.1, 0.4, 1.0), psnr))
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "eval.csv").write_text(rows((30.0, 33.0, 35.0)))
    (tmp_path / "top.csv").write_text("step,wall_s,quality,lmbda,images,bpp,psnr,weights\n"
                                      "100,61.0,3,0.01,4,1.0,35.5,ema\n")
    out = tmp_path / "out" / "gap.csv"
    table = top_lever.main(["--control", str(tmp_path / "control"), "--top", str(tmp_path / "top.csv"),
                            "--out", str(out)])
    assert table["gap_db"].tolist() == pytest.approx([0.5])
    assert pd.read_csv(out)["gap_db"].tolist() == pytest.approx([0.5])
    with pytest.raises(SystemExit, match="no evaluations"):
        top_lever.main(["--control", str(tmp_path / "nowhere"), "--top", str(tmp_path / "top.csv")])
