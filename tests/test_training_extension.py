"""Properties of the training-extension benchmark's pure functions
(benchmarks/training_extension.py). Hand-made tables; nothing trains or encodes."""

import json

import numpy as np
import pandas as pd
import pytest

from benchmark_modules import load_benchmark

te = load_benchmark("training_extension")

#: A made-up JPEG 2000 curve: +3 dB per doubling of the rate, 0.125 .. 2 bpp.
J2K = pd.DataFrame({"bpp": [0.125, 0.25, 0.5, 1.0, 2.0], "psnr_rgb": [26.0, 29.0, 32.0, 35.0, 38.0]})
LMBDAS = [0.0018, 0.0035, 0.0067, 0.013, 0.025, 0.0483]


def _levels(weights, run_h, step, bpp_factor):
    """Six levels on the J2K curve, each with its rate times bpp_factor."""
    bpp = np.array([0.15, 0.25, 0.4, 0.6, 0.9, 1.4])
    psnr = 26.0 + 3.0 * np.log2(bpp / 0.125)  # exactly JPEG 2000's quality at bpp
    return pd.DataFrame({"weights": weights, "run_h": run_h, "step": step,
                         "quality": range(1, 7), "lmbda": LMBDAS, "images": 24,
                         "bpp": bpp * bpp_factor, "psnr": psnr})


def _link(evals, name="run", hours=0.0, threads=1):
    return [{"segment": name, "evals": evals, "hours": hours, "threads": threads}]


def test_a_chain_of_links_adds_up_hours_and_keeps_equal_steps_apart():
    start = _levels("start", 0.0, 0, 1.25)
    first = pd.concat([_levels("model", 1.0, 4000, 1.0), _levels("ema", 1.0, 4000, 0.9)])
    # the second link restarts its step count: its step 4000 must not merge with the first's
    second = pd.concat([_levels("model", 0.5, 4000, 0.8), _levels("ema", 0.5, 4000, 0.7)])
    links = [*_link(first, "ext1", hours=2.0, threads=1), *_link(second, "ext2", threads=2)]
    table = te.extension_table(links, start, J2K, shipped_h=1.5)
    ema = table[table["weights"] == "ema"].groupby(["segment", "step"]).first()
    assert ema.loc[("ext1", 0), "total_h"] == pytest.approx(1.5)
    assert ema.loc[("ext1", 4000), "total_h"] == pytest.approx(2.5)
    assert ema.loc[("ext2", 4000), "total_h"] == pytest.approx(1.5 + 2.0 + 0.5)
    # core-hours: shipped on SHIPPED_THREADS, ext1 on one thread, ext2 on two
    assert ema.loc[("ext2", 4000), "core_h"] == pytest.approx(
        te.SHIPPED_THREADS * 1.5 + 2.0 + 2 * 0.5)
    assert ema.loc[("ext1", 4000), "bd_rate_vs_jpeg2000_pct"] == pytest.approx(-10.0, abs=0.5)
    assert ema.loc[("ext2", 4000), "bd_rate_vs_jpeg2000_pct"] == pytest.approx(-30.0, abs=0.5)
    assert ("ext2", 0) not in ema.index  # the start belongs to the first link only
    summary = te.summary_markdown(table)
    assert "| ema | ext2 | 4.00 |" in summary and "-30.0 %" in summary


def _exported(folder, stem, parent, hours, threads=1):
    """A checkpoint as --export leaves it: the file and its records beside it."""
    (folder / f"{stem}.pt").write_bytes(b"")
    (folder / f"{stem}.config.json").write_text(json.dumps(
        {"config": {"init_from": str(parent)}, "resolved": {"threads": threads}}))
    (folder / f"{stem}.log.csv").write_text(f"step,wall_s\n10,1.0\n20,{hours * 3600}\n")
    return folder / f"{stem}.pt"


def test_lineage_walks_exported_checkpoints_back_to_the_root(tmp_path):
    root = tmp_path / "vr.pt"
    root.write_bytes(b"")
    one = _exported(tmp_path, "vr-extended", root, 2.0)
    two = _exported(tmp_path, "vr-5h", one, 1.5, threads=2)
    assert te.lineage(root, root=root) == []
    chain = te.lineage(two, root=root)
    assert [c["segment"] for c in chain] == ["vr-extended", "vr-5h"]
    assert [c["hours"] for c in chain] == pytest.approx([2.0, 1.5])
    assert [c["threads"] for c in chain] == [1, 2]
    assert chain[0]["evals"] == tmp_path / "vr-extended.eval.csv"
    stray = tmp_path / "other.pt"
    stray.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="training hours"):
        te.lineage(stray, root=root)
    loop = _exported(tmp_path, "a", tmp_path / "b.pt", 1.0)
    _exported(tmp_path, "b", loop, 1.0)
    with pytest.raises(ValueError, match="loops"):
        te.lineage(loop, root=root)


def test_train_flags_take_the_peak_learning_rate():
    flags = te.train_flags(2e-4)
    assert flags[flags.index("--lr") + 1] == "0.0002"
    default = te.train_flags()
    i = default.index("--lr")
    assert float(default[i + 1]) == te.DEFAULT_LR
    assert default[:i + 1] == te.TRAIN_FLAGS[:i + 1] and default[i + 2:] == te.TRAIN_FLAGS[i + 2:]


def test_shipped_hours_add_up_the_stage_logs(tmp_path):
    logs = []
    for i, seconds in enumerate((1800.0, 3600.0, 360.0)):
        path = tmp_path / f"stage{i}.log.csv"
        pd.DataFrame({"step": [10, 20], "wall_s": [5.0, seconds]}).to_csv(path, index=False)
        logs.append(path)
    assert te.shipped_hours(logs) == pytest.approx(1.6)
    with pytest.raises(FileNotFoundError, match="no training log"):
        te.shipped_hours([tmp_path / "missing.log.csv"])


def test_run_evaluations_reads_old_and_new_eval_files(tmp_path):
    (tmp_path / "eval.csv").write_text(
        "step,wall_s,quality,lmbda,images,loss,mse,psnr,bpp\n"
        "100,360.0,1,0.0018,24,1,1,28.0,0.2\n100,363.6,2,0.0035,24,1,1,29.0,0.3\n")
    ev = te.run_evaluations(tmp_path)
    assert set(ev["weights"]) == {"model"} and ev["run_h"].tolist() == pytest.approx([0.1, 0.1])
    (tmp_path / "eval.csv").write_text(
        "step,wall_s,quality,lmbda,images,loss,mse,psnr,bpp,weights\n"
        "100,360.0,1,0.0018,24,1,1,28.0,0.2,model\n100,720.0,1,0.0018,24,1,1,28.1,0.2,ema\n")
    ev = te.run_evaluations(tmp_path)
    assert ev["weights"].tolist() == ["model", "ema"]
    assert ev["run_h"].tolist() == pytest.approx([0.1, 0.2])
    assert te.run_evaluations(tmp_path / "missing").empty


def test_extension_table_hours_and_bd_rate():
    start = _levels("start", 0.0, 0, 1.25)  # 25% more bits than JPEG 2000
    evals = pd.concat([_levels("model", 1.0, 4000, 0.8), _levels("ema", 1.01, 4000, 0.9)])
    table = te.extension_table(_link(evals), start, J2K, shipped_h=1.5)
    assert list(table.columns) == list(te.COLUMNS)
    bd = table.groupby(["weights", "step"])["bd_rate_vs_jpeg2000_pct"].first()
    # the start counts as step 0 of both weights (the EMA begins as a copy)
    assert bd[("model", 0)] == pytest.approx(25.0, abs=0.5)
    assert bd[("ema", 0)] == pytest.approx(25.0, abs=0.5)
    assert bd[("model", 4000)] == pytest.approx(-20.0, abs=0.5)
    assert bd[("ema", 4000)] == pytest.approx(-10.0, abs=0.5)
    row = table[(table["weights"] == "model") & (table["step"] == 4000)].iloc[0]
    assert row["total_h"] == pytest.approx(2.5)
    assert row["core_h"] == pytest.approx(te.SHIPPED_THREADS * 1.5 + 1.0)
    summary = te.summary_markdown(table)
    assert "-20.0 %" in summary and "parity within 5 h: met" in summary


def test_summary_says_not_met_when_behind_or_late():
    start = _levels("start", 0.0, 0, 1.25)
    table = te.extension_table(_link(_levels("model", 1.0, 10, 1.1)), start, J2K, 1.5)
    assert "parity within 5 h: not met" in te.summary_markdown(table)
    late = te.extension_table(_link(_levels("model", 4.0, 10, 0.9)), start, J2K, 1.5)
    assert "parity within 5 h: not met" in te.summary_markdown(late)  # 5.5 h in all


def test_train_flags_are_valid_for_nic_lib_train():
    from nic_lib import train

    args = vars(train._parser().parse_args([*te.TRAIN_FLAGS, "--max-minutes", "120",
                                           "--init-from", "x.pt"]))
    assert args["model"] == "mbt2018" and args["ema"] == 0.999
    assert args["qualities"] == [1, 2, 3, 4, 5, 6] and (args["N"], args["M"]) == (64, 96)


def test_export_ships_the_final_model_with_its_logs(tmp_path):
    import torch

    from nic_lib.models import checkpoints, registry

    torch.manual_seed(0)
    config = {**registry.default_config("mbt2018-mean", 1, "cpu"), "N": 8, "M": 12}
    model = registry.build_model("mbt2018-mean", **config).eval()
    model.update(force=True)
    run = tmp_path / "run"
    run.mkdir()
    checkpoints.save_checkpoint(model, run / "final.pt", {"quality": 1})
    for name in ("config.json", "log.csv", "eval.csv"):
        (run / name).write_text(name)
    dest = te.export(run, tmp_path / "ship" / "vr-extended.pt")
    shipped, ckpt = checkpoints.load_checkpoint(dest)
    assert ckpt["dtype"] == "float16" and ckpt["lineage"][0] == "checkpoints/mbt2018/vr.pt"
    again = te.export(run, tmp_path / "ship" / "vr-5h.pt", te.REPO / "checkpoints" / "mbt2018" / "vr-extended.pt")
    assert checkpoints.load_checkpoint(again)[1]["lineage"][0] == "checkpoints/mbt2018/vr-extended.pt"
    assert (tmp_path / "ship" / "vr-extended.log.csv").read_text() == "log.csv"
    w = model.state_dict()["g_a.0.weight"]
    assert torch.allclose(shipped.state_dict()["g_a.0.weight"], w.half().float())
    with pytest.raises(FileNotFoundError, match="not finished"):
        te.export(tmp_path / "missing", tmp_path / "x.pt")
