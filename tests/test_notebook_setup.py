"""The notebooks' shared first cell (nic_lib/notebook_setup.py): what each profile means."""

import matplotlib.pyplot as plt
import pytest
import torch

from nic_lib import notebook_setup, plotting


def test_smoke_profile_takes_smoke_sizes_and_the_embedded_photos(tmp_path):
    run = notebook_setup.setup("07_x", "smoke", figure_dir=tmp_path / "figs")
    assert run.smoke and run.model_profile == "cpu"
    assert run.dataset == notebook_setup.SMOKE_DATASET and run.n_images == notebook_setup.SMOKE_IMAGES
    assert run.results_dir == plotting.BUILD_DIR / "results" / "smoke" / "07_x"


@pytest.mark.parametrize("profile, model_profile", [("cpu", "cpu"), ("full", "full")])
def test_cpu_and_full_profiles_take_all_of_kodak(tmp_path, profile, model_profile):
    run = notebook_setup.setup("07_x", profile, figure_dir=tmp_path)
    assert not run.smoke and run.model_profile == model_profile
    assert run.dataset == "kodak" and run.n_images is None


def test_smoke_flag_gives_a_profile_smoke_sizes_with_its_own_models(tmp_path):
    run = notebook_setup.setup("07_x", "full", smoke=True, figure_dir=tmp_path)
    assert run.smoke and run.model_profile == "full" and run.n_images == 2
    assert not notebook_setup.setup("07_x", "smoke", smoke=False, figure_dir=tmp_path).smoke


def test_given_parameters_win_over_the_profile(tmp_path):
    run = notebook_setup.setup("07_x", "smoke", dataset="photos-hr", n_images=5, device="cpu",
                               figure_dir=tmp_path / "f", results_dir=tmp_path / "r", smoke_dataset="kodak")
    assert (run.dataset, run.n_images, run.device) == ("photos-hr", 5, torch.device("cpu"))
    assert run.results_dir == tmp_path / "r"
    # a notebook whose smoke run keeps another dataset names it
    assert notebook_setup.setup("07_x", "smoke", figure_dir=tmp_path, smoke_dataset="kodak").dataset == "kodak"


def test_figures_go_to_the_folder_the_profile_implies_and_it_exists(tmp_path):
    run = notebook_setup.setup("07_x", "smoke", figure_dir=tmp_path / "figs")
    assert run.fig_dir == tmp_path / "figs" and run.fig_dir.is_dir()
    saved = plotting.save_figure(plt.figure(), "probe", formats=("png",))
    assert saved == [tmp_path / "figs" / "probe.png"]


def test_device_follows_what_pytorch_sees(tmp_path):
    run = notebook_setup.setup("07_x", "smoke", figure_dir=tmp_path)
    assert run.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no GPU"):
            notebook_setup.setup("07_x", "smoke", device="cuda", figure_dir=tmp_path)
