"""The ``nic`` command line: compress images to .nic files and back.

::

    nic compress IN.png OUT.nic --model mbt2018 --quality 3 [--profile cpu] [--force]
    nic compress IN.png OUT.nic --model pqmim-M4-K256          # PQ-MIM: one file per rate
    nic compress IN.png OUT.nic --checkpoint FILE.pt [--quality Q]
    nic decompress IN.nic OUT.png [--profile cpu] [--checkpoint FILE.pt] [--force]
                   [--max-pixels N] [--max-memory-mb MB]
    nic info IN.nic

Models come from :func:`nic_lib.models.get_model` (``--profile cpu``: this project's
checkpoints under ``checkpoints/`` or ``$NIC_CHECKPOINT_DIR``; ``full``: CompressAI's
published weights; ``pqmim-M4-K256``: ``checkpoints/pqmim/M4-K256.pt``), or from a
checkpoint file (``--checkpoint``, :func:`nic_lib.models.hub.model_from_checkpoint`).
``decompress`` loads the model, quality and profile the file names, or ``--checkpoint``.
Outputs are written atomically; an existing output is kept unless ``--force``; an
output path that is the input is always refused. ``decompress`` works within a budget
(:func:`nic_lib.container.decode_image`): a file whose header announces more pixels than
``--max-pixels`` or a decode needing more working memory than ``--max-memory-mb`` is
refused before anything is allocated (defaults: the format's 33.5 MP, 1024 MiB).

From Python, :func:`compress_file` / :func:`decompress_file` do the same and raise;
:func:`main` takes an argument list (``main(["info", "x.nic"])``) and returns the exit
status. User errors (bad or missing files, wrong model, no checkpoint: :data:`USER_ERRORS`)
print one line ``nic: error: ...`` to stderr and exit with :data:`EXIT_USER_ERROR`, no
traceback; any other exception is a bug and propagates with its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from nic_lib import container, corruptions, data, fileio
from nic_lib.errors import NicReproError

__all__ = ["EXIT_OK", "EXIT_USER_ERROR", "NicCliError", "USER_ERRORS", "compress_file",
           "decompress_file", "main"]

#: Exit status of a successful command.
EXIT_OK = 0
#: Exit status of a user error (argparse uses 2 for bad arguments).
EXIT_USER_ERROR = 1
#: Model when --model is not given: the paper's joint model.
DEFAULT_MODEL = "mbt2018"
#: Quality when --quality is not given: the middle of the project's 1..6 cpu range (a
#: single-rate model, PQ-MIM, has quality 1 only).
DEFAULT_QUALITY = 3
#: Profile when --profile is not given: this project's own checkpoints (work offline).
DEFAULT_PROFILE = "cpu"


class NicCliError(NicReproError):
    """A user error the command line reports in one line (cause and fix)."""


#: What the command line reports as one line: the project's own errors, which name the
#: cause and the fix (:mod:`nic_lib.errors`), and the OS refusing the user's own paths.
#: Anything else is a bug in nic-repro or a library, and keeps its traceback.
USER_ERRORS = (NicReproError, FileNotFoundError, PermissionError)


def _check_paths(src: Path, dst: Path, force: bool) -> None:
    """Refuse a missing input, an output that is the input, or an existing output."""
    if not src.is_file():
        raise NicCliError(f"input {src} does not exist (or is not a file); check the path")
    if dst.resolve() == src.resolve() or (dst.exists() and os.path.samefile(src, dst)):
        raise NicCliError(f"output {dst} is the input file; choose another output path")
    if dst.is_dir():
        raise NicCliError(f"output {dst} is a folder; give a file path")
    if dst.exists() and not force:
        raise NicCliError(f"output {dst} exists; pass --force to overwrite it")


def _read_image(path: Path) -> np.ndarray:
    """Load an image as uint8 RGB after checking its size from the header alone."""
    try:
        with Image.open(path) as im:
            width, height = im.size  # reads the header only: no pixels yet
    except Image.DecompressionBombError:
        raise container.NicImageSizeError(
            f"{path} is larger than Pillow's safety limit; the .nic format allows sides up "
            f"to {container.MAX_IMAGE_SIDE} and {container.MAX_IMAGE_PIXELS / 1e6:.1f} MP "
            "(nic_lib.container.MAX_IMAGE_SIDE / MAX_IMAGE_PIXELS); downscale or tile it"
        ) from None
    except (OSError, SyntaxError, ValueError):
        width = height = None  # let load_image name the problem
    if width is not None:
        container.check_image_size(height, width, str(path))
    try:
        return data.load_image(path)
    except data.ImageLoadError as exc:
        cause = exc.__cause__ or exc.__context__ or exc  # Pillow's own words, not the dataset hint
        raise NicCliError(f"{path} is not an image this tool reads ({cause}); give a PNG, "
                          "JPEG, WebP, TIFF or BMP file") from None


def _model_loader(profile: str):
    from nic_lib.models import get_model  # imported here: `nic info` needs no torch models

    return lambda name, quality: get_model(name, quality, profile)


def compress_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    model: str = DEFAULT_MODEL,
    quality: int | None = None,
    profile: str = DEFAULT_PROFILE,
    force: bool = False,
    checkpoint: str | os.PathLike | None = None,
) -> container.NicHeader:
    """Compress an image file to a .nic file.

    Args:
        src: image file (any mode :func:`nic_lib.data.load_image` reads: grayscale,
            RGBA, 16-bit, palette...).
        dst: .nic file to write (atomically).
        model: registry key, or a single-rate model's checkpoint name (``pqmim-M4-K256``).
        quality: quality level; None: :data:`DEFAULT_QUALITY`, 1 for a single-rate model
            (with ``checkpoint``: the file's own, required for a variable-rate file).
        profile: ``"cpu"`` or ``"full"`` (see :func:`nic_lib.models.get_model`).
        force: overwrite ``dst`` if it exists.
        checkpoint: code with this checkpoint file instead of ``model`` / ``profile``; the
            file records its model name (``pqmim-M4-K256`` for a shipped PQ-MIM file, which
            plain ``nic decompress`` finds again; else the registry key: decode it with
            the same ``--checkpoint``).

    Returns:
        The header of the written file (``bpp`` is the file's).

    Raises:
        NicCliError: missing input, output exists or is the input, not an image.
        NicImageSizeError: the image is beyond the format's limits.
        UnknownModelError, ModelSettingError, CheckpointError: from ``get_model`` (unknown
            model, bad quality, checkpoint not trained yet).
    """
    src, dst = Path(src), Path(dst)
    _check_paths(src, dst, force)
    img = _read_image(src)
    from nic_lib.models import hub, registry  # here: `nic info` needs no torch models

    if checkpoint is not None:
        net, model, quality = hub.model_from_checkpoint(checkpoint, quality)
        # a shipped single-rate checkpoint (pqmim-M4-K256) is the cpu profile's, found by
        # name; any other file is no profile's: --checkpoint loads it again
        profile = DEFAULT_PROFILE if model != registry.model_key(model) else ""
    else:
        if quality is None:
            single_rate = registry.model_key(model) in registry.SINGLE_RATE_MODELS
            quality = 1 if single_rate else DEFAULT_QUALITY
        net = _model_loader(profile)(model, quality)
    payload = container.encode_image(net, img, model, quality, profile)
    fileio.atomic_write_bytes(dst, payload)
    return container.read_header(payload)


def _read_nic(path: Path) -> bytes:
    if not path.is_file():
        raise NicCliError(f"input {path} does not exist (or is not a file); check the path")
    size = path.stat().st_size
    # The largest sane file: 4 x the raw 8-bit pixels of the largest allowed image.
    if size > 12 * container.MAX_IMAGE_PIXELS:
        raise container.NicFormatError(f"{path} is {size} bytes, more than any .nic file of "
                                       "an allowed image holds; it is not a .nic file")
    return path.read_bytes()


def decompress_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    profile: str | None = None,
    force: bool = False,
    max_pixels: int = container.DEFAULT_MAX_PIXELS,
    max_memory: int | None = container.DEFAULT_MAX_MEMORY,
    checkpoint: str | os.PathLike | None = None,
) -> container.NicHeader:
    """Decompress a .nic file to an image file (format from its extension, e.g. PNG).

    Args:
        src: .nic file.
        dst: image file to write (atomically); PNG keeps every decoded pixel.
        profile: weights profile to load; ``None`` uses the one recorded in the file
            (``cpu`` if none is).
        force: overwrite ``dst`` if it exists.
        max_pixels, max_memory: the decode's budget (see
            :func:`nic_lib.container.decode_image`).
        checkpoint: decode with this checkpoint file (at the file's quality) instead of
            the model the file names; it must be the one that encoded it (checked).

    Returns:
        The file's header.

    Raises:
        NicCliError: missing input, output exists or is the input, unknown extension.
        NicError: bad file, model mismatch or beyond the budget (:mod:`nic_lib.container`).
        CheckpointError, PretrainedWeightsUnavailableError: the model cannot be loaded.
    """
    src, dst = Path(src), Path(dst)
    _check_paths(src, dst, force)
    if dst.suffix.lower() not in Image.registered_extensions():
        raise NicCliError(f"cannot tell the image format of {dst}; end it in .png")
    payload = _read_nic(src)
    header = container.read_header(payload)
    if checkpoint is not None:
        from nic_lib.models import hub  # here: `nic info` needs no torch models

        def loader(name, quality):
            return hub.model_from_checkpoint(checkpoint, quality)[0]
    else:
        loader = _model_loader(profile or header.profile or DEFAULT_PROFILE)
    img = container.decode_image(payload, loader, max_pixels=max_pixels, max_memory=max_memory)
    with fileio.atomic_path(dst) as tmp:
        Image.fromarray(img, "RGB").save(tmp, format=Image.registered_extensions()[
            dst.suffix.lower()])
    return header


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nic", description="Learned image compression "
                                     "to and from .nic files (nic-repro).")
    sub = parser.add_subparsers(dest="command", required=True)
    comp = sub.add_parser("compress", help="image -> .nic")
    comp.add_argument("input", type=Path, help="image file (PNG, JPEG, ...)")
    comp.add_argument("output", type=Path, help=".nic file to write")
    comp.add_argument("--model", default=DEFAULT_MODEL,
                      help=f"model key ({DEFAULT_MODEL}), or a PQ-MIM checkpoint's name "
                      "(pqmim-M4-K256: checkpoints/pqmim/M4-K256.pt)")
    comp.add_argument("--quality", type=int, default=None,
                      help=f"quality level ({DEFAULT_QUALITY}; 1 for PQ-MIM)")
    comp.add_argument("--checkpoint", type=Path, default=None,
                      help="code with this checkpoint file instead of --model/--profile")
    comp.add_argument("--profile", default=DEFAULT_PROFILE, choices=("cpu", "full"),
                      help="cpu: this project's checkpoints; full: CompressAI's weights")
    comp.add_argument("--force", action="store_true", help="overwrite the output")
    dec = sub.add_parser("decompress", help=".nic -> image")
    dec.add_argument("input", type=Path, help=".nic file")
    dec.add_argument("output", type=Path, help="image file to write (.png)")
    dec.add_argument("--profile", default=None, choices=("cpu", "full"),
                     help="weights to load (default: the profile recorded in the file)")
    dec.add_argument("--checkpoint", type=Path, default=None,
                     help="decode with this checkpoint file (the one that encoded it)")
    dec.add_argument("--force", action="store_true", help="overwrite the output")
    dec.add_argument("--max-pixels", type=_positive_int, default=container.DEFAULT_MAX_PIXELS,
                     help="refuse files announcing a larger image (default %(default)s, "
                     "the format's limit)")
    dec.add_argument("--max-memory-mb", type=_positive_int,
                     default=container.DEFAULT_MAX_MEMORY // 2**20,
                     help="refuse files whose decoding needs more working memory, MiB "
                     "(default %(default)s: the process stays under 2 GB)")
    info = sub.add_parser("info", help="print a .nic file's header and bpp")
    info.add_argument("input", type=Path, help=".nic file")
    kodak_c = sub.add_parser("kodak-c", add_help=False,
                             help="build Kodak-C (python -m nic_lib.corruptions build kodak ...)")
    kodak_c.add_argument("rest", nargs=argparse.REMAINDER,
                         help="options of `python -m nic_lib.corruptions build` (--help lists them)")
    return parser


def _run(args: argparse.Namespace) -> None:
    if args.command == "compress":
        h = compress_file(args.input, args.output, args.model, args.quality, args.profile,
                          args.force, args.checkpoint)
        print(f"{args.output}: {h.file_bytes} bytes, {h.bpp:.4f} bpp "
              f"({h.width}x{h.height}, {h.model} q{h.quality})")
    elif args.command == "decompress":
        h = decompress_file(args.input, args.output, args.profile, args.force,
                            args.max_pixels, args.max_memory_mb * 2**20, args.checkpoint)
        print(f"{args.output}: {h.width}x{h.height} from {h.model} q{h.quality}")
    else:
        header = container.read_header(_read_nic(args.input))
        for key, value in header.describe().items():
            print(f"{key}: {value}")


def _one_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(text.split())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Print a warning as one ``nic: warning: ...`` line (e.g. transparency composited)."""
    print(f"nic: warning: {_one_line(message)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``nic`` command line.

    Args:
        argv: arguments without the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
        :data:`EXIT_OK`, or :data:`EXIT_USER_ERROR` after printing one line to stderr
        (:data:`USER_ERRORS`). Bad arguments exit through argparse (status 2).

    Raises:
        Anything that is not a user error: a bug keeps its traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["kodak-c"]:
        # the corruption builder has its own options, progress bar and error messages
        return corruptions.main(["build", "kodak", *argv[1:]])
    args = _parser().parse_args(argv)
    with warnings.catch_warnings():
        # CompressAI's import emits torch.jit deprecation notices meant for developers.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.showwarning = _show_warning
        try:
            _run(args)
        except USER_ERRORS as exc:
            print(f"nic: error: {_one_line(exc)}", file=sys.stderr)
            return EXIT_USER_ERROR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
