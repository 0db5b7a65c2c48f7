"""The `crossnet` command line: a thin click layer over the pipeline functions.

Each subcommand parses its options, then calls one pipeline function. Errors a user can cause
(bad paths, unreadable files, bad option values) print one line, ``crossnet: error: ...``, and
exit non-zero; ``crossnet --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import click
import numpy as np

import crossnet
from pipelines.errors import InputError, Terminated, TrainingDiverged, one_line

logger = logging.getLogger(__name__)

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``"320x240"`` -> ``(320, 240)`` (width, height); None stays None."""
    if text is None:
        return None
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise click.BadParameter(f"{text!r} is not WIDTHxHEIGHT with positive integers, e.g. 320x240")
    return int(parts[0]), int(parts[1])


def parse_strides(text: str) -> tuple[int, ...]:
    """``"1,4,8"`` -> ``(1, 4, 8)``: positive, strictly increasing integers."""
    try:
        strides = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers, e.g. 1,4,8")
    if not strides or any(s < 1 for s in strides) or list(strides) != sorted(set(strides)):
        raise click.BadParameter(f"{text!r}: strides must be positive and strictly increasing")
    return strides


def _size_option(ctx, param, value):
    return parse_size(value)


def _synth_size_option(ctx, param, value):
    width, height = parse_size(value)
    if min(width, height) < 8:
        raise click.BadParameter(f"{value!r}: synthetic scenes need at least 8x8 pixels")
    return width, height


def _device_option(ctx, param, value):
    if not _DEVICE.fullmatch(value):
        raise click.BadParameter(f"{value!r} is not auto, cpu, cuda or cuda:N")
    return value


def _zoom_option(ctx, param, value):
    try:
        low, high = (float(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not LOW,HIGH, e.g. 0.67,1.5") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0.0 < low <= high):
        raise click.BadParameter(f"{value!r}: need 0 < LOW <= HIGH, both finite")
    return low, high


def _flow_crop_option(ctx, param, value):
    size = parse_size(value)
    if min(size) < 16:
        raise click.BadParameter(f"{value!r}: the flow network needs crops of at least 16x16")
    return size


class FiniteFloatRange(click.FloatRange):
    """A FloatRange that also refuses nan and inf (which pass click's range comparisons)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def _strides_option(ctx, param, value):
    return parse_strides(value)


FLOW_CHOICES = ("dis-ultrafast", "dis-fast", "dis-medium", "farneback", "raft-small", "raft-large")
FLOW_HELP = ("Flow backend. raft-small without --weights loads the bundled network, trained on a "
             "CPU and less accurate than dis-medium (flow/weights/MODEL_CARD.md).")
# segment, evaluate and pseudo-label: the same inference, the same option.
_FLOW_WEIGHTS_OPTION = click.option(
    "--flow-weights", type=click.Path(dir_okay=False),
    help="RAFT checkpoint for a model trained on RAFT flow: the network its training caches "
         "were made with (default: the bundled weights, raft-small only; checked against the "
         "model's record).")
_FLIP_AVERAGE_OPTION = click.option(
    "--flip-average/--no-flip-average", default=True, show_default=True,
    help="Average the model's answers on each frame and on its mirror image (higher F on "
         "validation and test scenes; a second model pass per frame).")
_CAMERA_MOTION_OPTION = click.option(
    "--camera-motion", default="affine+background", show_default=True,
    type=click.Choice(["none", "affine", "affine+background"]),
    help="How to handle a moving camera. affine: fit the camera's own motion in the flow and "
         "remove it before the model; affine+background: also move the running background "
         "along with the camera; none: the flow and background as they are (a few ms per "
         "frame faster). Frames where the fit does not explain the motion better than a still "
         "camera, across the frame, are left as they are, so still-camera video is unchanged.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    crossnet.__version__, prog_name="crossnet",
    # Where the installed package keeps what --help texts cite (model cards, weights, splits):
    # in a pip install, site-packages, not a checkout's folders.
    message=("%(prog)s %(version)s\ninstalled in "
             + str(Path(crossnet.__file__).parent.parent).replace("%", "%%")
             + ": bundled weights and model cards in crossnet/weights and flow/weights, "
             "splits in crossnet/splits"))
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details (INFO level).")
@click.option("--threads", type=click.IntRange(min=1),
              help="CPU threads for torch and OpenCV in every command (default: their own "
                   "choice, one per core). On a machine other jobs share, set 1 (or the "
                   "environment variable OMP_WAIT_POLICY=PASSIVE): threads that wait for a "
                   "busy core made segment 2.3x slower beside one busy process "
                   "(benchmarks/RESULTS.md).")
def cli(debug: bool, verbose: bool, threads: int | None) -> None:
    """Cross-scene background subtraction: from raw video to foreground masks."""
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not (debug or verbose):
        quiet_opencv()
    if threads is not None:
        set_threads(threads)


def quiet_opencv() -> None:
    """Silence OpenCV's and FFmpeg's own warnings (a damaged container's "moov atom not found",
    a camera that is not there): the command prints its own one-line error naming the file,
    and their lines before it broke that promise. ``-v`` and ``--debug`` keep them; a user's
    own ``OPENCV_FFMPEG_LOGLEVEL`` is respected. FFmpeg reads the variable when OpenCV first
    opens a video, which is after this."""
    import cv2

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def set_threads(count: int) -> None:
    """Use ``count`` CPU threads in torch (intra-op) and OpenCV from now on."""
    import cv2
    import torch

    torch.set_num_threads(count)
    cv2.setNumThreads(count)


@cli.command()
@click.argument("scenes", nargs=-1, required=True, type=click.Path())
@click.option("--method", "methods", multiple=True, default=("mog2",), show_default=True,
              type=click.Choice(["crossnet", "mog2", "knn"]),
              help="Method to score; repeat to compare methods side by side on the same frames.")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Segmentation checkpoint for --method crossnet (default: the bundled one).")
@click.option("--flow", "flow_name", default=None, type=click.Choice(FLOW_CHOICES),
              help="Flow backend for crossnet (default: the one the model was trained with).")
@_FLOW_WEIGHTS_OPTION
@click.option("--size", default=None, callback=_size_option,
              help="crossnet processing size WIDTHxHEIGHT (default: each scene's own size).")
@click.option("--device", default="auto", show_default=True, callback=_device_option,
              help="auto, cpu or cuda[:N].")
@_FLIP_AVERAGE_OPTION
@_CAMERA_MOTION_OPTION
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Also write the scores to this JSON file.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False),
              help="Also write a markdown report with error pictures per scene to this folder.")
@click.option("--pictures", default=3, show_default=True, type=click.IntRange(min=0),
              help="Error pictures per scene and method in --report (0: the scores only).")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing --json file or --report.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def evaluate(scenes: tuple[str, ...], methods: tuple[str, ...], weights: str | None,
             flow_name: str | None, flow_weights: str | None, size: tuple[int, int] | None,
             device: str,
             flip_average: bool, camera_motion: str | None, json_path: str | None,
             report_dir: str | None, pictures: int, overwrite: bool, no_progress: bool) -> None:
    """Score methods on benchmark SCENES (CDnet-2014 rules) and print a per-scene table.

    Each SCENE is a scene folder (CDnet/SBI, UCSD, Wallflower, HOFAM demo layouts) or a folder
    holding scene folders at any depth. A scene that cannot be read or scored is reported and
    the others still finish (exit status 1 if any failed).
    """
    from pipelines.evaluate import ModelMethod, format_table, write_json
    from pipelines.evaluate import evaluate as run_evaluation
    from pipelines.outputs import check_output_file
    from pipelines.report import check_report_folder

    _drop_if_left_empty(report_dir, json_path and os.path.dirname(json_path) or None)
    if json_path:  # before any work: a wrong path must not cost the whole evaluation
        check_output_file(json_path, overwrite=overwrite, option="--json")
    if report_dir:
        check_report_folder(report_dir, overwrite=overwrite)
    if flow_weights is not None and "crossnet" not in methods:
        raise InputError("--flow-weights applies to --method crossnet")
    model = None
    if "crossnet" in methods:
        from flow.backends import resolve_device
        from pipelines.segment import load_segmentation_model

        run_device = resolve_device(device)
        segmentation = load_segmentation_model(weights or _bundled_weights(), device=run_device,
                                               flip_average=flip_average,
                                               camera_motion=camera_motion)
        backend = _model_flow_backend(segmentation, flow_name, flow_weights, run_device)
        model = ModelMethod(segmentation=segmentation, backend=backend, size=size,
                            device=str(run_device))
    failed: list[tuple[str, str]] = []
    reports = run_evaluation(scenes, list(dict.fromkeys(methods)), model=model,
                             progress=not no_progress,
                             pictures_per_scene=pictures if report_dir else 0, failed=failed)
    scored = len(reports[0].scenes) if reports else 0
    if scored:
        click.echo(format_table(reports))
        if json_path:
            write_json(reports, json_path, failed=failed)
            click.echo(f"wrote {json_path}")
        if report_dir:
            from pipelines.report import write_report

            click.echo(f"wrote {write_report(reports, report_dir)}")
    if failed:
        for _, reason in failed:
            click.echo(f"crossnet: error: {reason}", err=True)
        click.echo(f"{scored} scene(s) scored, {len(failed)} failed")
        raise click.exceptions.Exit(EXIT_ERROR)


@cli.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--scenes", "num_scenes", default=1, show_default=True, type=click.IntRange(min=1),
              help="Number of scenes to generate.")
@click.option("--frames", "num_frames", default=100, show_default=True,
              type=click.IntRange(min=2),
              help="Frames per scene (at least 2: segmentation needs motion between frames).")
@click.option("--size", default="320x240", show_default=True, callback=_synth_size_option,
              help="Frame size WIDTHxHEIGHT, at least 8x8.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed (deterministic).")
@click.option("--strides", default="1,4,8", show_default=True, callback=_strides_option,
              help="Strides k of the ground-truth flow from frame t to frame t-k.")
@click.option("--fps", default=25.0, show_default=True,
              type=FiniteFloatRange(min=0, min_open=True), help="Frame rate of the written .mp4.")
@click.option("--dynamic-background/--no-dynamic-background", default=True, show_default=True,
              help="Add rippling background regions (background, with exact flow).")
@click.option("--jitter", default=0.0, show_default=True, type=FiniteFloatRange(min=0),
              help="Camera jitter amplitude in pixels (0 = static camera).")
@click.option("--pan", default=0.0, show_default=True, type=FiniteFloatRange(min=0),
              help="Peak speed in pixels per frame of a slow back-and-forth camera pan "
                   "(0 = no pan); jitter adds on top.")
@click.option("--overwrite", is_flag=True,
              help="Regenerate scenes that already exist in OUT (by default a complete scene "
                   "made with the same settings is kept, one made with others is refused).")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def synth(out: str, num_scenes: int, num_frames: int, size: tuple[int, int], seed: int,
          strides: tuple[int, ...], fps: float, dynamic_background: bool, jitter: float,
          pan: float, overwrite: bool, no_progress: bool) -> None:
    """Generate synthetic scenes with exact ground truth into OUT.

    Each scene is written in the CDnet-2014 layout (input/, groundtruth/, ROI.bmp,
    temporalROI.txt) with an .mp4 of it, the exact flow from frame t to t-k for each stride
    (flow.h5) and its settings (scene.json).
    """
    from pipelines.synth import SynthConfig, generate_scenes

    config = SynthConfig(size=size, num_frames=num_frames, strides=strides, fps=fps,
                         dynamic_background=dynamic_background, camera_jitter=jitter,
                         camera_pan=pan)
    paths = generate_scenes(out, num_scenes=num_scenes, config=config, seed=seed,
                            overwrite=overwrite, progress=not no_progress)
    for path in paths:
        click.echo(str(path))


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the caches, one <name>.h5 per video.")
@click.option("--strides", default="1,4,8", show_default=True, callback=_strides_option,
              help="3D-HOP strides k: flow from frame t to frame t-k for each.")
@click.option("--flow", "flow_name", default="dis-fast", show_default=True,
              type=click.Choice(FLOW_CHOICES), help=FLOW_HELP)
@click.option("--weights", type=click.Path(dir_okay=False),
              help="RAFT checkpoint (torchvision or princeton-vl layout, or a train-flow "
                   "weights.pt) for raft-* backends; default: the bundled weights.")
@click.option("--size", default=None, callback=_size_option,
              help="Stored size WIDTHxHEIGHT (default: each video's own size).")
@click.option("--max-frames", type=click.IntRange(min=2),
              help="Stop each video after N frames (at least 2).")
@click.option("--device", default="auto", show_default=True, callback=_device_option,
              help="auto, cpu or cuda[:N] (classical backends always run on the CPU).")
@click.option("--batch-frames", default=8, show_default=True, type=click.IntRange(min=1),
              help="Frames whose flow pairs are estimated in one batch.")
@click.option("--preview", is_flag=True, help="Also write <name>_preview.png: frame | flow per stride.")
@click.option("--overwrite", is_flag=True,
              help="Rebuild caches that are already complete (also those made with other "
                   "settings, which are otherwise refused).")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def preprocess(inputs: tuple[str, ...], out_dir: str, strides: tuple[int, ...], flow_name: str,
               weights: str | None, size: tuple[int, int] | None, max_frames: int | None,
               device: str, batch_frames: int, preview: bool, overwrite: bool,
               no_progress: bool) -> None:
    """Cache frames + multi-stride flow stacks (3D-HOP) of each input to HDF5.

    INPUTS are video files, frame folders, scene folders, or folders holding any of them.
    Complete caches are skipped, interrupted ones resume; a failed video is reported and the
    others still finish (exit status 1 if any failed).
    """
    from flow.backends import make_hop_backend
    from pipelines.preprocess import preprocess as run_preprocess

    _drop_if_left_empty(out_dir)
    backend = make_hop_backend(flow_name, weights=weights, device=device)
    summary = run_preprocess(inputs, out_dir, backend=backend, strides=strides, size=size,
                             max_frames=max_frames, batch_frames=batch_frames, preview=preview,
                             overwrite=overwrite, progress=not no_progress,
                             on_result=_echo_preprocessed)
    click.echo(f"{len(summary.written)} written, {len(summary.skipped)} skipped, "
               f"{len(summary.failed)} failed")
    if summary.failed:
        raise click.exceptions.Exit(EXIT_ERROR)


def _drop_if_left_empty(*folders: str | os.PathLike | None) -> None:
    """Create each of ``folders`` (None: none) now, with the parents it needs, and when the
    command ends, however it ends, remove again what was created here if the run wrote nothing
    into it (:func:`pipelines.outputs.remove_unused_folders`): an output folder made before any
    work, to fail fast on a wrong path, must not stay behind after a run that wrote nothing.

    Under ``torchrun`` nothing is created or removed here: another process may be about to
    write into a folder that this one left empty.
    """
    from pipelines.outputs import create_missing_folder, remove_unused_folders

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return
    made = [create_missing_folder(folder) for folder in folders if folder is not None]

    def drop() -> None:
        for created in reversed(made):  # the last made first: it may sit in an earlier one
            remove_unused_folders(created)

    click.get_current_context().call_on_close(drop)


def _echo_preprocessed(kind: str, text: str) -> None:
    """One line per input as it is done (above the progress bars, which tqdm redraws)."""
    from tqdm import tqdm

    if kind == "failed":
        tqdm.write(f"crossnet: error: {text}", file=sys.stderr)
    else:
        tqdm.write(f"{kind} {text}" + (" (already complete)" if kind == "skipped" else ""),
                   file=sys.stdout)


@cli.command(name="pseudo-label")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the scene folders, pseudo_<name>/ each (CDnet layout).")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="The labelling model's checkpoint; default: the bundled weights.")
@click.option("--flow", "flow_name", default=None, type=click.Choice(FLOW_CHOICES),
              help="Flow backend (default: the one the model was trained with).")
@_FLOW_WEIGHTS_OPTION
@click.option("--max-frames", default=300, show_default=True, type=click.IntRange(min=2),
              help="Label the first this many frames of each input (held in memory).")
@click.option("--confidence", default=0.7, show_default=True,
              type=FiniteFloatRange(0.5, 1, min_open=True, max_open=True),
              help="Label a pixel foreground at p >= this, background at p <= 1 - this; "
                   "between, 170 (unknown: not trained on).")
@click.option("--device", default="auto", show_default=True, callback=_device_option,
              help="auto, cpu or cuda[:N].")
@_FLIP_AVERAGE_OPTION
@_CAMERA_MOTION_OPTION
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def pseudo_label(inputs: tuple[str, ...], out_dir: str, weights: str | None,
                 flow_name: str | None, flow_weights: str | None, max_frames: int,
                 confidence: float, device: str,
                 flip_average: bool, camera_motion: str, no_progress: bool) -> None:
    """Label unlabeled videos or frame folders with a trained model, for training.

    Each INPUT (a video, frame folder or scene folder; not a live stream) becomes
    OUT/pseudo_<name>/, a CDnet-layout scene whose ground truth is the model's confident pixels
    (forward and reversed runs averaged; the rest 170, not trained on); `crossnet preprocess`
    caches it and `crossnet train` trains on it when the split names it. The model runs as
    `segment` runs it (same --flip-average and --camera-motion). Finished scenes are skipped;
    a failed input is reported and the others still finish (exit status 1 if any failed), and
    of two inputs with one name the second fails.
    """
    from flow.backends import resolve_device
    from pipelines.errors import failure_line
    from pipelines.outputs import prepare_output_folder
    from pipelines.pseudo_label import STREAM_REFUSED, scene_name
    from pipelines.pseudo_label import pseudo_label as label
    from pipelines.segment import load_segmentation_model
    from pipelines.sources import is_stream_spec, open_source

    _drop_if_left_empty(out_dir)
    prepare_output_folder(out_dir)  # before any work: a wrong --out must not cost a model run
    failed: list[str] = []
    sources, names = [], {}
    for spec in inputs:
        if is_stream_spec(spec):  # refused before it is opened (a camera, a connection)
            failed.append(f"{spec}: {STREAM_REFUSED}")
            continue
        try:
            source = open_source(spec)
        except Exception as error:  # noqa: BLE001 - one input fails, the others go on
            failed.append(failure_line(error, spec))
            continue
        name = scene_name(source)
        if name in names:  # two inputs of one name would overwrite each other's scene
            failed.append(f"{spec}: its scene would be {name}, as {names[name]}'s; rename "
                          "one of them")
            continue
        names[name] = spec
        sources.append(source)
    run_device = resolve_device(device)
    segmentation = load_segmentation_model(weights or _bundled_weights(), device=run_device,
                                           flip_average=flip_average,
                                           camera_motion=camera_motion)
    backend = _model_flow_backend(segmentation, flow_name, flow_weights, run_device)
    written = skipped = 0
    for source in sources:
        try:
            folder, new = label(source, out_dir, segmentation, backend=backend,
                                max_frames=max_frames,
                                confidence=confidence, device=str(run_device),
                                progress=not no_progress)
        except Exception as error:  # noqa: BLE001 - one input fails, the others go on
            failed.append(failure_line(error, source.path))
            continue
        written += new
        skipped += not new
        click.echo(f"wrote {folder}" if new else f"skipped {folder} (already complete)")
    for reason in failed:
        click.echo(f"crossnet: error: {reason}", err=True)
    click.echo(f"{written} written, {skipped} skipped, {len(failed)} failed")
    if failed:
        raise click.exceptions.Exit(EXIT_ERROR)


@cli.command(name="flow")
@click.argument("image1", type=click.Path())
@click.argument("image2", type=click.Path())
@click.option("--backend", "backend_name", default="dis-medium", show_default=True,
              type=click.Choice(FLOW_CHOICES), help=FLOW_HELP)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Output .flo file (Middlebury format).")
@click.option("--png", "png_path", type=click.Path(dir_okay=False),
              help="Also write the flow colour-coded (Middlebury wheel) to this PNG.")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="RAFT checkpoint for raft-* (default: the bundled weights).")
@click.option("--device", default="auto", show_default=True, callback=_device_option,
              help="auto, cpu or cuda[:N].")
@click.option("--overwrite", is_flag=True, help="Replace --out and --png if they exist.")
def flow_command(image1: str, image2: str, backend_name: str, out_path: str,
                 png_path: str | None, weights: str | None, device: str,
                 overwrite: bool) -> None:
    """Optical flow from IMAGE1 to IMAGE2, written as .flo.

    Convention: pixel x of IMAGE1 lies at x + flow(x) in IMAGE2.
    """
    from pathlib import Path

    import torch

    from flow.backends import make_hop_backend
    from flow.colour import flow_to_colour
    from flow.io import write_flo
    from pipelines.imageio import read_image_rgb, write_png_atomic
    from pipelines.memory import check_fits, flow_bytes, format_size
    from pipelines.outputs import check_output_file

    check_output_file(out_path, overwrite=overwrite, option="--out")
    if png_path:
        if Path(png_path).resolve() == Path(out_path).resolve():
            raise click.BadParameter("names the same file as --out", param_hint="--png")
        check_output_file(png_path, overwrite=overwrite, option="--png")
    first, second = read_image_rgb(image1), read_image_rgb(image2)
    if first.shape != second.shape:
        raise InputError(f"{image2}: size {second.shape[1]}x{second.shape[0]} differs from "
                         f"{image1}: {first.shape[1]}x{first.shape[0]}")
    size = (first.shape[1], first.shape[0])
    check_fits(flow_bytes(size, strides=(1,), batch_frames=1, backend=backend_name),
               what=f"flow at {format_size(size)} with {backend_name}",
               hint="use smaller images or a classical backend")
    backend = make_hop_backend(backend_name, weights=weights, device=device)
    frames = torch.from_numpy(np.stack([first, second])).permute(0, 3, 1, 2)
    encoded = backend.encode(frames)
    flow = backend.estimate(encoded[:1], encoded[1:])[0].numpy()
    write_flo(out_path, flow)
    click.echo(f"wrote {out_path}")
    if png_path:
        write_png_atomic(png_path, flow_to_colour(flow))
        click.echo(f"wrote {png_path}")


@cli.command()
@click.option("--data", "data_dirs", multiple=True, required=True, type=click.Path(),
              help="Folder of caches from `crossnet preprocess` (repeatable; searched recursively).")
@click.option("--split", "split_path", required=True, metavar="NAME|FILE",
              help="Cross-scene split: a split JSON file, or a bundled split by name "
                   "(cross_scene_v1, the bundled model's; cross_scene_v1_pseudo).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder: last.pt, best.pt, log.jsonl, config.json.")
@click.option("--epochs", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1),
              help="Samples per step and process.")
@click.option("--lr", default=2e-3, show_default=True, type=FiniteFloatRange(min=0, min_open=True),
              help="Peak learning rate (one-cycle schedule, AdamW).")
@click.option("--samples-per-epoch", default=2000, show_default=True,
              type=click.IntRange(min=1), help="Scene-balanced samples drawn per epoch.")
@click.option("--crop", default="320x240", show_default=True, callback=_size_option,
              help="Training crop WIDTHxHEIGHT (default: a whole frame at 320x240; smaller "
                   "frames are padded, and the padding is left out of the loss).")
@click.option("--composite-fraction", default=0.3, show_default=True,
              type=FiniteFloatRange(0, 1), help="Share of composited samples.")
@click.option("--camera-pan", default=0.5, show_default=True, type=FiniteFloatRange(0, 1),
              help="Share of composites seen by a camera panning at 1-12 pixels per frame "
                   "(0: all still, like the real training scenes).")
@click.option("--flow-encoding", default="uvm", show_default=True,
              type=click.Choice(["uvm", "magnitude"]), help="How the 3D-HOP enters the model.")
@click.option("--background/--no-background", default=True, show_default=True,
              help="Feed a running background estimate to the appearance branch.")
@click.option("--background-estimator", default="ema", show_default=True,
              type=click.Choice(["ema", "median"]),
              help="How the running background is made: moving average, or the median of 9 "
                   "frames sampled every 6.")
@click.option("--appearance-norm", default="imagenet", show_default=True,
              type=click.Choice(["imagenet", "scene"]),
              help="Normalise frames with fixed ImageNet statistics, or with the scene's own "
                   "(the background's mean and contrast).")
@click.option("--camera-motion", default="none", show_default=True,
              type=click.Choice(["none", "affine"]),
              help="Subtract the camera's own motion (a robust affine fit per flow field) from "
                   "the 3D-HOP, for panning, shaking or tracking cameras.")
@click.option("--align-background/--no-align-background", default=False, show_default=True,
              help="Move the running background with the camera's fitted motion (needs the "
                   "ema estimator and stride 1).")
@click.option("--cmdff/--no-cmdff", default=True, show_default=True,
              help="Cross-modal dynamic feature filter (off: plain concatenation).")
@click.option("--dynamic-filter/--no-dynamic-filter", default=True, show_default=True,
              help="CmDFF's dynamic filters, predicted from features averaged over the whole "
                   "input (off: CmDFF gates only).")
@click.option("--attention/--no-attention", default=True, show_default=True,
              help="Attention-gated skip connections (off: plain skips).")
@click.option("--size-balanced/--no-size-balanced", default=True, show_default=True,
              help="Size-balanced pixel weights in the loss.")
@click.option("--haze", default=0.0, show_default=True, type=FiniteFloatRange(0, 1, max_open=True),
              help="Augmentation: lay a flat veil of strength up to this over frame and "
                   "background (fog, glare; 0: off).")
@click.option("--zoom", default="1,1", show_default=True, callback=_zoom_option,
              help="Augmentation: zoom each sample by a factor drawn log-uniformly in LOW,HIGH "
                   "(above 1 a resized crop, below 1 the frame shrunk into padding left out of "
                   "the loss; the 3D-HOP's flow scaled with it; 1,1: off).")
@click.option("--weight-average", default=0.0, show_default=True,
              type=FiniteFloatRange(0, 1, max_open=True),
              help="Validate and save a moving average of the weights with this decay, e.g. "
                   "0.99 (0: the raw weights).")
@click.option("--validation-flip-average/--no-validation-flip-average", default=False,
              show_default=True,
              help="Choose the epoch and threshold on the mean of each validation frame's "
                   "logits and its mirror image's, as segment does by default.")
@click.option("--amp", is_flag=True, help="bf16 autocast.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=0),
              help="Data-loading worker processes per training process.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--resume", is_flag=True, help="Continue the run in --out from last.pt.")
@click.option("--overwrite", is_flag=True,
              help="Discard the run in --out (last.pt, best.pt, log) and start a new one.")
@click.option("--device", default="auto", show_default=True, callback=_device_option,
              help="auto, cpu or cuda[:N].")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def train(data_dirs, split_path, out_dir, epochs, batch_size, lr, samples_per_epoch, crop,
          composite_fraction, camera_pan, flow_encoding, background, background_estimator,
          appearance_norm, camera_motion, align_background, cmdff, dynamic_filter, attention,
          size_balanced, haze, zoom, weight_average, validation_flip_average, amp, workers, seed,
          resume, overwrite, device, no_progress) -> None:
    """Train the HOFAM segmentation model on cached 3D-HOP stacks and masks.

    Trains on the split's training scenes (plus composites), reports validation F per epoch on
    its validation scenes, never touches its test scenes. Works under
    `torchrun --nproc_per_node=N crossnet train ...`.

    The model learns the flow of the caches: all must come from one `preprocess --flow`, which
    also recomputes the composites' 3D-HOP and is what `segment` feeds the trained model.
    """
    from crossnet.augment import AugmentConfig
    from crossnet.hofam import HofamConfig
    from crossnet.losses import LossConfig
    from pipelines.train import TrainConfig
    from pipelines.train import train as run_training

    if resume and overwrite:
        raise click.UsageError("--resume continues the run in --out, --overwrite discards it: "
                               "give one of them")
    config = TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, samples_per_epoch=samples_per_epoch,
        crop_size=(crop[1], crop[0]), composite_fraction=composite_fraction, amp=amp,
        camera_pan=camera_pan, validation_flip_average=validation_flip_average,
        seed=seed, num_workers=workers, weight_average=weight_average,
        augment=AugmentConfig(haze=haze, scale_range=zoom),
        model=HofamConfig(flow_encoding=flow_encoding, use_background=background,
                          background_estimator=background_estimator,
                          appearance_norm=appearance_norm, camera_motion=camera_motion,
                          align_background=align_background, cmdff=cmdff,
                          dynamic_filter=dynamic_filter, attention=attention),
        loss=LossConfig(size_balanced=size_balanced))
    best = run_training(data_dirs, split_path, out_dir, config, device=device, resume=resume,
                        overwrite=overwrite, progress=not no_progress)
    click.echo(f"best checkpoint: {best}")


@cli.command(name="train-flow")
@click.option("--stage", required=True, type=click.Choice(["synthetic", "video"]),
              help="synthetic: supervised on generated pairs with exact flow; video: "
                   "self-supervised (census/SSIM, occlusion masks, smoothness) on --data.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder: last.pt, weights.pt, log.jsonl, config.json.")
@click.option("--data", "data_dirs", multiple=True, type=click.Path(),
              help="Videos / frame folders (repeatable; searched recursively). Required by "
                   "--stage video; for synthetic, real frames to crop textures from.")
@click.option("--config", "model_config", default="small", show_default=True,
              type=click.Choice(["small", "large"]), help="RAFT configuration.")
@click.option("--steps", default=2000, show_default=True, type=click.IntRange(min=1),
              help="Optimiser steps of the whole run (the one-cycle schedule spans them).")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(min=1),
              help="Pairs per step.")
@click.option("--lr", default=4e-4, show_default=True,
              type=FiniteFloatRange(min=0, min_open=True), help="Peak learning rate (AdamW).")
@click.option("--crop", default="192x192", show_default=True, callback=_flow_crop_option,
              help="Training pair size WIDTHxHEIGHT (at least 16x16).")
@click.option("--iters", "num_flow_updates", default=12, show_default=True,
              type=click.IntRange(min=1), help="Recurrent flow updates per pair.")
@click.option("--checkpoint-every", default=200, show_default=True, type=click.IntRange(min=1),
              help="Steps between validation, log line and checkpoint.")
@click.option("--init", "init_path", metavar="FILE|raft-small",
              help="Start from this RAFT checkpoint (e.g. the synthetic run's weights.pt), or "
                   "from the bundled network: raft-small.")
@click.option("--distill", "distillation_weight", default=0.0, show_default=True,
              type=FiniteFloatRange(min=0),
              help="Video stage: weight of an L1 pull towards the frozen --init network.")
@click.option("--validate-middlebury", "middlebury", type=click.Path(file_okay=False),
              help="Also report EPE on these Middlebury pairs at each checkpoint (reporting "
                   "only; nothing is selected by it).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", type=click.IntRange(min=1),
              help="CPU threads for torch (default: torch's own choice).")
@click.option("--workers", default=0, show_default=True, type=click.IntRange(min=0),
              help="Synthetic stage: processes that make the next steps' pairs while the "
                   "network trains (the run is the same with any number; use them on a GPU, "
                   "which one core cannot feed).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from last.pt.")
@click.option("--overwrite", is_flag=True,
              help="Discard the run in --out (last.pt, weights.pt, log, config) and start a "
                   "new one.")
@click.option("--device", default="auto", show_default=True, callback=_device_option,
              help="auto, cpu or cuda[:N].")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def train_flow(stage, out_dir, data_dirs, model_config, steps, batch_size, lr, crop,
               num_flow_updates, checkpoint_every, init_path, distillation_weight, middlebury,
               seed, threads, workers, resume, overwrite, device, no_progress) -> None:
    """Train the RAFT-style flow network (one stage per run) and write RUN/weights.pt.

    Use the result with `--flow raft-small --weights RUN/weights.pt`, or as --init of the next
    stage. Resumable (--resume continues the same schedule); a NaN loss stops the run and leaves
    the last checkpoint intact.
    """
    import torch

    from flow.self_supervised_loss import SelfSupervisedLossConfig
    from pipelines.train_flow import FlowTrainConfig
    from pipelines.train_flow import train_flow as run_training

    if resume and overwrite:
        raise click.UsageError("--resume continues the run in --out, --overwrite discards it: "
                               "give one of them")
    if stage == "video" and not data_dirs:
        raise click.UsageError("--stage video needs --data: folders of videos or frame folders")
    if threads is not None:
        torch.set_num_threads(threads)
    config = FlowTrainConfig(
        stage=stage, model=f"raft-{model_config}", steps=steps, batch_size=batch_size, lr=lr,
        crop_size=(crop[1], crop[0]), num_flow_updates=num_flow_updates,
        checkpoint_every=checkpoint_every, seed=seed,
        loss=SelfSupervisedLossConfig(distillation_weight=distillation_weight))
    weights = run_training(out_dir, config, data_dirs=data_dirs, init=init_path,
                           middlebury=middlebury, device=device, resume=resume,
                           overwrite=overwrite, progress=not no_progress, workers=workers)
    click.echo(f"weights: {weights}")


@cli.command()
@click.argument("members", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="The ensemble checkpoint to write.")
@click.option("--threshold", default=None,
              type=FiniteFloatRange(0, 1, min_open=True, max_open=True),
              help="Foreground probability threshold of the ensemble (default: the mean of the "
                   "members' own).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
def ensemble(members: tuple[str, ...], out_path: str, threshold: float | None,
             overwrite: bool) -> None:
    """Write MEMBERS (segmentation checkpoints, e.g. best.pt of runs with different seeds) as
    one checkpoint whose answer is the mean of their logits.

    The members must read the same inputs (strides, background, camera motion) and come from
    the same flow backend and split. Use the file as --weights of segment and evaluate; each
    member costs one model pass per frame.
    """
    from pipelines.ensemble import make_ensemble

    if len(members) < 2:
        raise click.BadParameter(f"an ensemble needs at least two checkpoints, got "
                                 f"{len(members)}", param_hint="MEMBERS")
    path = make_ensemble(members, out_path, threshold=threshold, overwrite=overwrite)
    click.echo(f"wrote {path} ({len(members)} members)")


@cli.command()
@click.argument("source")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the masks, binNNNNNN.png (0/255) by the frame's own number.")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Segmentation checkpoint (best.pt from `crossnet train`); default: the "
                   "bundled weights (see crossnet/weights/MODEL_CARD.md).")
@click.option("--flow", "flow_name", default=None, type=click.Choice(FLOW_CHOICES),
              help="Flow backend (default: the one the model was trained with).")
@_FLOW_WEIGHTS_OPTION
@click.option("--size", default=None, callback=_size_option,
              help="Processing size WIDTHxHEIGHT; masks are written at the input's size.")
@click.option("--threshold", default=None,
              type=FiniteFloatRange(0, 1, min_open=True, max_open=True),
              help="Foreground probability threshold (default: the model's, picked on "
                   "validation scenes in training).")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(min=1),
              help="Frames per flow/model batch.")
@click.option("--device", default="auto", show_default=True, callback=_device_option,
              help="auto, cpu or cuda[:N].")
@click.option("--precision", default="fp32", show_default=True,
              type=click.Choice(["fp32", "bf16"]),
              help="bf16: run the model under bfloat16 autocast, for CPUs with AVX512-BF16/AMX "
                   "and for GPUs (the gain varies; see the README); masks differ from fp32 at "
                   "a few edge pixels.")
@click.option("--overlap/--no-overlap", default=None,
              help="Build the flow of the next frames in a background thread while the model "
                   "runs (default: on when the model runs on a GPU, off on a CPU, where both "
                   "compete for the same cores). The masks are the same either way.")
@click.option("--compile", "compile_model", is_flag=True,
              help="Run the model through torch.compile: on a CPU about 1.1x faster end to "
                   "end after compiling for 15-30 s on the first run at a new size (a few "
                   "seconds later on, from inductor's cache); needs a C++ compiler there. In "
                   "fp32 the masks equal the default path's up to float rounding.")
@_FLIP_AVERAGE_OPTION
@_CAMERA_MOTION_OPTION
@click.option("--video", "video_path", type=click.Path(dir_okay=False),
              help="Also write the masks as an mp4.")
@click.option("--overlay", "overlay_path", type=click.Path(dir_okay=False),
              help="Also write an mp4 of the frames with the foreground tinted red.")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False),
              help="Reuse the source's 3D-HOP cache in this folder (as `crossnet preprocess` "
                   "writes it), or write it while segmenting, so a second run skips the flow. "
                   "Not for a camera or stream.")
@click.option("--overwrite", is_flag=True,
              help="Delete the masks in --out and replace --video/--overlay. Without it, a "
                   "rerun of the same command continues an interrupted one, and masks of "
                   "another source or other settings are refused.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def segment(source: str, out_dir: str, weights: str, flow_name: str | None,
            flow_weights: str | None, size: tuple[int, int] | None, threshold: float | None,
            batch_size: int, device: str,
            precision: str, overlap: bool | None, compile_model: bool, flip_average: bool,
            camera_motion: str | None, video_path: str | None, overlay_path: str | None,
            cache_dir: str | None, overwrite: bool, no_progress: bool) -> None:
    """Foreground masks for SOURCE: a video file, a frame folder, a scene folder, a camera
    index or a stream URL.
    """
    from pathlib import Path

    from flow.backends import resolve_device
    from pipelines.segment import load_segmentation_model
    from pipelines.segment_cache import STREAM_CACHE_REFUSED
    from pipelines.segment_folder import segment_to_folder
    from pipelines.sources import is_stream_spec

    if cache_dir and is_stream_spec(source):
        raise click.UsageError(STREAM_CACHE_REFUSED.format(source=source))
    run_device = resolve_device(device)
    if compile_model and run_device.type == "cpu" and not _cxx_compiler():
        raise click.UsageError("--compile on a CPU needs a C++ compiler (none of c++, g++, "
                               "clang++ or $CXX found on PATH); install one or leave --compile "
                               "out")
    segmentation = load_segmentation_model(weights or _bundled_weights(), device=run_device,
                                           flip_average=flip_average, camera_motion=camera_motion)
    backend = _model_flow_backend(segmentation, flow_name, flow_weights, run_device)
    # With a processing size every frame is resized anyway, so a folder or video whose
    # frames differ in size is segmented, each mask at its own frame's size.
    sources = _segment_sources(source, mixed_sizes=size is not None)
    several = len(sources) > 1
    if several:
        click.echo(f"{source}: {len(sources)} scenes, one mask folder each under {out_dir}")
    for job in sources:
        summary = segment_to_folder(
            job, segmentation, Path(out_dir) / job.name if several else Path(out_dir),
            backend=backend, size=size, threshold=threshold, batch_frames=batch_size,
            device=run_device,
            video=_per_scene(video_path, job.name if several else None),
            overlay=_per_scene(overlay_path, job.name if several else None),
            overwrite=overwrite, progress=not no_progress,
            cache_dir=Path(cache_dir) if cache_dir else None, precision=precision,
            overlap=overlap, compile_model=compile_model)
        _echo_segment_summary(summary)


def _cxx_compiler() -> str | None:
    """The C++ compiler torch.compile's inductor would use on a CPU, or None."""
    import shutil

    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else []
    for name in [*candidates, "c++", "g++", "clang++"]:
        if shutil.which(name):
            return name
    return None


def _segment_sources(source: str, *, mixed_sizes: bool = False) -> list:
    """What ``segment SOURCE`` runs over: the scenes of a scene folder (several for the HOFAM
    demo layout, one per run of consecutive frame numbers), else the one source."""
    from pathlib import Path

    from pipelines.scenes import is_scene, open_scenes
    from pipelines.sources import open_source

    if Path(source).is_dir() and is_scene(source):
        return open_scenes(source)
    return [open_source(source, mixed_sizes=mixed_sizes)]


def _per_scene(path: str | None, name: str | None):
    """``overlay.mp4`` -> ``overlay_<name>.mp4`` (one video per scene); None stays None."""
    from pathlib import Path

    if path is None:
        return None
    path_ = Path(path)
    return path_ if name is None else path_.with_name(f"{path_.stem}_{name}{path_.suffix}")


def _echo_segment_summary(summary) -> None:
    videos = [path for path in (summary.video, summary.overlay) if path is not None]
    if summary.complete_before:
        click.echo(f"{summary.frames} masks in {summary.mask_dir} (already complete)")
        for path in videos:
            click.echo(f"{path} (already complete)")
        return
    if summary.written == 0:  # every mask was there; only the videos were missing
        click.echo(f"{summary.frames} masks in {summary.mask_dir} (all kept from the earlier "
                   "run)")
    elif summary.kept:
        click.echo(f"{summary.frames} masks in {summary.mask_dir} ({summary.written} new, "
                   f"{summary.kept} kept from the interrupted run; {summary.fps:.1f} frames/s)")
    else:
        click.echo(f"{summary.frames} masks in {summary.mask_dir} ({summary.fps:.1f} frames/s)")
    for path in videos:
        click.echo(f"wrote {path}")


def _model_flow_backend(segmentation, flow_name: str | None, flow_weights: str | None,
                        device):
    """The flow backend that feeds a segmentation model: ``--flow`` or the model's own, run by
    ``--flow-weights`` or the bundled network, checked against the model's record
    (:func:`pipelines.segment.check_flow_weights`); a warning where ``--flow`` is another
    backend than the model was trained on."""
    from flow.backends import make_hop_backend
    from flow.classical import CLASSICAL_BACKEND_NAMES
    from flow.weights import bundled_weights_path
    from pipelines.segment import check_flow_weights

    name = flow_name or segmentation.flow_backend
    chosen = "--flow" if flow_name else f"the flow of {segmentation.source}"
    if flow_weights is not None and name in CLASSICAL_BACKEND_NAMES:
        raise InputError(f"--flow-weights applies to the RAFT backends, not to {name} "
                         f"({chosen})")
    if (flow_weights is None and name not in CLASSICAL_BACKEND_NAMES
            and not bundled_weights_path(name).is_file()):
        raise InputError(f"no trained weights are bundled for {name} ({chosen}); pass "
                         "--flow-weights PATH")
    backend = make_hop_backend(name, weights=flow_weights, device=str(device))
    check_flow_weights(segmentation, backend, weights_named=flow_weights is not None)
    if name != segmentation.flow_backend:
        # The user's call (it runs), but one a model card calls untested: say so once.
        logger.warning("%s was trained on %s flow, not on the %s flow it gets now: how well "
                       "it does on that is not measured", segmentation.source,
                       segmentation.flow_backend, name)
    return backend


def _bundled_weights():
    from crossnet.weights import bundled_weights

    return bundled_weights()


_HANDLER_PID: int | None = None


def _raise_terminated(signum, frame) -> None:
    if os.getpid() != _HANDLER_PID:
        # A forked child (a DataLoader worker) inherits the handler; it should die of the
        # signal as it would have, not print the traceback of an exception.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated


def _raise_on_sigterm():
    """Make SIGTERM (``kill PID``) raise :class:`Terminated`, so that writers clean up as they
    do for Ctrl-C; returns the previous handler (None where signals cannot be set here)."""
    global _HANDLER_PID
    if threading.current_thread() is not threading.main_thread():
        return None
    _HANDLER_PID = os.getpid()
    return signal.signal(signal.SIGTERM, _raise_terminated)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (also the console script's entry point).

    Args:
        argv: arguments without the program name; ``None`` reads ``sys.argv[1:]``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    previous_handler = _raise_on_sigterm()
    try:
        code = cli.main(args=args, prog_name="crossnet", standalone_mode=False)
    except click.exceptions.Exit as stop:
        return stop.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        # Everything written so far is whole (atomic renames, committed cache frames), so
        # the same command run again continues where this one stopped.
        click.echo("crossnet: interrupted", err=True)
        return EXIT_INTERRUPTED
    except Terminated:
        click.echo("crossnet: terminated", err=True)
        return EXIT_TERMINATED
    except click.ClickException as error:
        if debug:
            raise
        error.show()
        return error.exit_code
    except (InputError, OSError, ValueError, TrainingDiverged) as error:
        if debug:
            raise
        click.echo(f"crossnet: error: {one_line(error)}", err=True)
        return EXIT_ERROR
    except Exception as error:  # the last line of defence for a CLI user
        if debug:
            raise
        click.echo(f"crossnet: internal error: {type(error).__name__}: {one_line(error)} "
                   "(rerun with --debug for the traceback)", err=True)
        return EXIT_ERROR
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    # Without standalone mode click returns the code of a command that exits early, else the
    # command's own return value (None).
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
