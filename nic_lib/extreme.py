r"""The extreme regime (PQ-MIM's ~200 bytes per image) beside the classic codecs' smallest files.

PQ-MIM reaches a byte budget by transmitting only the first s of its S schedule steps and
letting the decoder complete the rest with the MIM model (hybrid mode,
:func:`nic_lib.models.pqmim.code_to_budget`); a classic codec can only lower its setting,
and most cannot get under a few hundred bytes on a Kodak image at all
(:func:`nic_lib.codecs.smallest`). :func:`gallery_table` codes every image both ways (one
tidy row per image x codec x completion, and the decoded pictures);
:func:`gallery_figure` draws them as a grid whose every panel names its bytes, bpp and
PSNR.

Rates are real stream lengths: bpp = 8 · bytes / (H · W), headers included (PQ-MIM's 7-byte
header; each classic codec's own file format).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from nic_lib import codecs, metrics
from nic_lib.models import pqmim

#: The classic codecs of the gallery: Pillow's four, configured as in notebook 00.
GALLERY_CODECS = ("jpeg", "webp", "jpeg2000", "avif")

#: Columns of :func:`gallery_table`.
GALLERY_COLUMNS = ("image", "codec", "completion", "setting", "bytes", "bpp", "psnr_rgb", "fits", "min_bytes")


def gallery_table(model, label: str, images, max_bytes: int, codec_names=GALLERY_CODECS,
                  steps: int = pqmim.DEFAULT_STEPS, samples: int = pqmim.BUDGET_SAMPLES,
                  radius: int | None = None) -> tuple[pd.DataFrame, dict]:
    """Code each image with PQ-MIM within ``max_bytes`` and with each classic codec at its smallest.

    A classic codec's row is its best file within the budget when its smallest file fits
    (``fits`` True), else its smallest file (``fits`` False, ``min_bytes`` = its size): the
    floor of that codec on that image. PQ-MIM gives one row per completion (argmax and
    seeded samples) of the same stream.

    Args:
        model: PQ-MIM in eval mode.
        label: its name in the ``codec`` column.
        images: ``(name, uint8 (H, W, 3))`` pairs.
        max_bytes: the byte budget.
        codec_names: classic codecs (those not available here are skipped with a notice).
        steps, samples, radius: see :func:`nic_lib.models.pqmim.code_to_budget`.

    Returns:
        ``(table, pictures)``: the table has :data:`GALLERY_COLUMNS` (``setting``: transmitted
        steps s for PQ-MIM, the codec's setting otherwise; ``completion`` is empty for
        classic codecs); ``pictures[(image, codec, completion)]`` is the decoded uint8 image.
    """
    rows, pictures = [], {}
    available = [c for c in codec_names if c in codecs.available_codecs()]
    for c in codec_names:
        if c not in available:
            print(f"{c} skipped: not available here (nic_lib.codecs.get_codec({c!r}) names what to install)")
    for name, img in images:
        h, w = img.shape[:2]
        r = pqmim.code_to_budget(model, img, max_bytes, steps, samples, radius)
        for comp in r["completions"]:
            rows.append({"image": name, "codec": label, "completion": comp["completion"],
                         "setting": r["transmit_steps"], "bytes": r["bytes"], "bpp": r["bpp"],
                         "psnr_rgb": comp["psnr_rgb"], "fits": r["fits"], "min_bytes": np.nan})
            pictures[(name, label, comp["completion"])] = comp["x_hat"]
        for c in available:
            s = codecs.smallest(c, img, max_bytes)
            x_hat = codecs.get_codec(c).decode(s["stream"])
            rows.append({"image": name, "codec": c, "completion": "", "setting": s["setting"],
                         "bytes": s["bytes"], "bpp": metrics.bpp(s["bytes"], h, w),
                         "psnr_rgb": metrics.psnr(img, x_hat), "fits": s["fits"], "min_bytes": s["min_bytes"]})
            pictures[(name, c, "")] = x_hat
    return pd.DataFrame(rows, columns=list(GALLERY_COLUMNS)), pictures


def gallery_figure(table: pd.DataFrame, pictures: dict, images, max_bytes: int, panel: float = 2.4,
                   title: str | None = None):
    """One row per image: the original, PQ-MIM's completions, then each classic codec's file.

    Every panel's title gives its bytes, bpp and PSNR; a classic file over the budget says
    "over budget: its minimum". Panels keep the images' aspect (portrait Kodak images
    stay portrait).

    Args:
        table, pictures: :func:`gallery_table`'s output.
        images: the same ``(name, uint8 image)`` pairs (the originals).
        max_bytes: the budget (for the titles).
        panel: inches per panel.
        title: the figure's title, laid out above the panels' three-line titles.

    Returns:
        The matplotlib figure.
    """
    columns = list(dict.fromkeys(zip(table["codec"], table["completion"])))
    fig, axes = plt.subplots(len(images), len(columns) + 1, squeeze=False,
                             figsize=(panel * (len(columns) + 1), 0.8 * panel * len(images) + 0.4))
    for row, (name, img) in zip(axes, images):
        h, w = img.shape[:2]
        row[0].imshow(img)
        row[0].set_title(f"{name}\noriginal {w}×{h}", fontsize=8)
        for ax, (codec, completion) in zip(row[1:], columns):
            r = table[(table["image"] == name) & (table["codec"] == codec) & (table["completion"] == completion)].iloc[0]
            ax.imshow(pictures[(name, codec, completion)])
            if completion:  # PQ-MIM: which completion, and how many schedule steps were sent
                head = f"{codec}\n{completion}, s={int(r['setting'])} steps sent"
            else:
                head = codec if r["fits"] else f"{codec} (smallest)"
            note = "" if r["fits"] else f" > {max_bytes} B"
            ax.set_title(f"{head}\n{int(r['bytes'])} B{note}, {r['bpp']:.4f} bpp, {r['psnr_rgb']:.1f} dB", fontsize=8)
        for ax in row:
            ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()  # makes room for the suptitle too
    return fig
