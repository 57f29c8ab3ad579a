"""Wavefront decoding and cross-thread determinism of the context models' coders.

Properties of the context models' coder (``nic_lib.models.context_coding``): the
wavefront schedule respects every dependency of the masked context, the decoder
reproduces the encoder's y_hat bit for bit in either coding order, whatever the thread
counts of the two sides, and the two orders reconstruct the same latents. Tiny random
models (the coder's correctness does not depend on training) with g_a's last layer
scaled up so that y spans many integers and every context term matters.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nic_lib import data
from nic_lib.models import build_model
from nic_lib.models import context_coding, google

TINY = {"N": 8, "M": 12}
#: Latents span many integers: the context terms and the escape code are exercised.
LATENT_GAIN = 30.0
#: 64 x 128 input -> 4 x 8 latent: wavefronts of up to 3 positions for k = 5.
HEIGHT, WIDTH = 64, 128
SERIAL_MODELS = ["mbt2018", "mbt2018-context", "mbt2018-gmm"]
#: The M = 96 generation's widths (smaller than the cpu profile's 96/192: a quicker test), for the test on a real image.
CPU_N, CPU_M = 64, 96


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(name: str, context_size: int = context_coding.DEFAULT_CONTEXT_SIZE, seed: int = 0, **widths):
    torch.manual_seed(seed)
    model = build_model(name, **(widths or TINY), context_size=context_size).eval()
    with torch.no_grad():
        model.g_a[-1].weight.mul_(LATENT_GAIN)
    model.update(force=True)
    return model


def smooth_image(seed: int = 0, height: int = HEIGHT, width: int = WIDTH) -> torch.Tensor:
    """Low-frequency random RGB in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // 8, width // 8, generator=g)
    return F.interpolate(coarse, size=(height, width), mode="bicubic").clamp(0, 1)


def decoded_latents(model, coded) -> tuple[torch.Tensor, torch.Tensor]:
    """(y_hat fed to g_s, x_hat) of decompress."""
    seen = []
    handle = model.g_s.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    try:
        x_hat = model.decompress(coded["strings"], coded["shape"])["x_hat"]
    finally:
        handle.remove()
    return seen[-1], x_hat


# --------------------------------------------------------------------------------------
# The schedule
# --------------------------------------------------------------------------------------


def context_inputs(context_size: int) -> list[tuple[int, int]]:
    """(di, dj) offsets of the latents a position reads, from the real mask."""
    mask = google.context_model(2, context_size).mask[0, 0]
    p = context_size // 2
    return [(int(a) - p, int(b) - p) for a, b in mask.nonzero().tolist()]


@pytest.mark.parametrize("context_size", context_coding.CONTEXT_SIZES)
def test_every_context_input_lies_on_an_earlier_wavefront(context_size):
    a = context_coding.wavefront_slope(context_size)
    inputs = context_inputs(context_size)
    assert len(inputs) == (context_size**2 - 1) // 2  # mask A: the causal half
    # t(i, j) - t(i + di, j + dj) = -(a di + dj) must be >= 1 for every input.
    assert all(-(a * di + dj) >= 1 for di, dj in inputs)
    # a is the smallest such slope: one less puts an input on the same wavefront.
    assert any(-((a - 1) * di + dj) < 1 for di, dj in inputs)


@pytest.mark.parametrize("context_size", context_coding.CONTEXT_SIZES)
@pytest.mark.parametrize("height, width", [(1, 1), (5, 2), (4, 9), (7, 7)])
def test_schedule_codes_each_position_once_after_its_inputs(context_size, height, width):
    inputs = context_inputs(context_size)
    for order in context_coding.CODING_ORDERS:
        groups = context_coding.coding_schedule(height, width, context_size, order)
        step = {}
        for n, (rows, cols) in enumerate(groups):
            assert (rows.diff() > 0).all()  # rows increase inside a group
            for i, j in zip(rows.tolist(), cols.tolist()):
                assert (i, j) not in step
                step[i, j] = n
        assert len(step) == height * width
        for (i, j), n in step.items():
            for di, dj in inputs:
                if (i + di, j + dj) in step:
                    assert step[i + di, j + dj] < n
    a = context_coding.wavefront_slope(context_size)
    if width >= a:  # no empty wavefronts: exactly a (H - 1) + W network calls
        wavefronts = context_coding.coding_schedule(height, width, context_size, "wavefront")
        assert len(wavefronts) == a * (height - 1) + width


def test_unknown_coding_order_is_rejected():
    with pytest.raises(ValueError, match="coding_order"):
        context_coding.coding_schedule(2, 2, 5, "zigzag")


def test_scale_indexes_are_gaussian_conditionals():
    gc = tiny("mbt2018").gaussian_conditional
    scales = torch.cat([gc.scale_table, gc.scale_table * 1.0001, torch.rand(500) * 300,
                        torch.tensor([0.0, 0.05, 1e4])])  # fmt: skip
    indexes, _ = context_coding.GaussianSymbols(gc).indexes_and_means(
        torch.stack([scales.double(), torch.zeros_like(scales).double()], 1)
    )
    assert torch.equal(indexes[:, 0].int(), gc.build_indexes(scales))


# --------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("context_size", context_coding.CONTEXT_SIZES)
@pytest.mark.parametrize("name", SERIAL_MODELS)
def test_decoder_reproduces_the_encoders_latents_bit_for_bit(name, context_size):
    model = tiny(name, context_size)
    x = smooth_image(seed=1)
    coded = model.compress(x, return_y_hat=True)
    assert coded["y_hat"].abs().max() > 3
    y_hat, x_hat = decoded_latents(model, coded)
    assert torch.equal(y_hat, coded["y_hat"])
    with torch.no_grad():
        assert torch.equal(x_hat, model.synthesize(coded["y_hat"]))


@pytest.mark.parametrize("name", SERIAL_MODELS)
def test_wavefront_and_raster_orders_reconstruct_the_same_latents(name):
    model = tiny(name)
    x = smooth_image(seed=2)
    latents = {}
    for order in context_coding.CODING_ORDERS:
        model.coding_order = order
        coded = model.compress(x, return_y_hat=True)
        y_hat, _ = decoded_latents(model, coded)
        assert torch.equal(y_hat, coded["y_hat"])
        latents[order] = y_hat
    assert torch.equal(latents["wavefront"], latents["raster"])


@pytest.mark.parametrize("encode_threads, decode_threads", [(2, 1), (1, 2)])
@pytest.mark.parametrize("name", SERIAL_MODELS)
def test_decoding_does_not_depend_on_the_thread_count(name, encode_threads, decode_threads):
    model = tiny(name)
    x = smooth_image(seed=3)
    torch.set_num_threads(encode_threads)
    coded = model.compress(x, return_y_hat=True)
    torch.set_num_threads(decode_threads)
    y_hat, _ = decoded_latents(model, coded)
    assert torch.equal(y_hat, coded["y_hat"])


def test_kodak_crop_round_trips_across_thread_counts_at_cpu_widths():
    try:
        _, pixels = data.load_images("kodak", limit=1)[0]
    except data.DatasetNotFoundError as err:
        pytest.skip(f"Kodak not found ({err})")
    crop = torch.from_numpy(pixels[:64, :128].copy()).permute(2, 0, 1)[None].float() / 255
    model = tiny("mbt2018", N=CPU_N, M=CPU_M)
    coded = {}
    for order, threads in [("wavefront", 2), ("raster", 1)]:
        torch.set_num_threads(threads)
        model.coding_order = order
        coded[order] = model.compress(crop, return_y_hat=True)
    assert torch.equal(coded["wavefront"]["y_hat"], coded["raster"]["y_hat"])
    for order, threads in [("wavefront", 1), ("raster", 2)]:  # the other thread count
        torch.set_num_threads(threads)
        model.coding_order = order
        y_hat, _ = decoded_latents(model, coded[order])
        assert torch.equal(y_hat, coded[order]["y_hat"])
