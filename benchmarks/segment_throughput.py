"""`crossnet segment` throughput, stage by stage, next to MOG2 and KNN on the same clip, one run.

Measured on the first ``--frames`` frames of ``--video`` (default
``<repo>/../shared/data/videos/highway2_320x240.avi``) at ``--size`` (default 320x240), with the
bundled weights (or ``--weights``), strides from the checkpoint:

1. decode only (:class:`pipelines.sources.VideoSource`): the floor of anything reading the clip;
2. MOG2 and KNN end to end (decode + subtractor), what a user of the baselines gets;
3. 3D-HOP alone (frames in memory) per flow backend, and the camera-motion fit and its check
   against the frames (:func:`crossnet.camera_motion.camera_flows`, every stride's field), which
   ``segment`` runs by default (``--camera-motion affine+background``,
   :data:`pipelines.segment.DEFAULT_CAMERA_MOTION`);
4. HOFAM forward alone (3D-HOP stacks and frames in memory), fp32 at batch 1 and
   ``--batch-size``, and bf16 autocast at ``--batch-size``;
5. ``segment`` end to end (:func:`pipelines.segment.segment_frames` from the video file: decode,
   running background, 3D-HOP, HOFAM, threshold, resize back): the default path (the
   checkpoint's backend and ``segment``'s default for the device: on a CPU every stage in one
   thread, on a GPU the 3D-HOP in a background thread while HOFAM runs, ``--overlap``), the
   same with the other thread setting, with bf16 autocast, without the camera-motion fit
   (``--camera-motion none``), with the fit removed from the flow only (``--camera-motion
   affine``: the background is not moved), and with each other backend;
6. ``segment`` to a folder (:func:`pipelines.segment_folder.segment_to_folder`, what the command runs:
   the above plus writing every mask as a PNG), the default backend;
7. peak resident memory of this process (ru_maxrss) and the resident memory of the end-to-end
   run at its first and last frame, which shows whether memory grows with the video's length;
8. the speed-ups that decide ``segment``'s defaults on a CPU (the background thread, bf16, the
   camera-motion fit) once more side by side: ``--rounds`` rounds, each running the default,
   the other thread setting, bf16 and ``--camera-motion none`` in an order rotated per round, the speed-up taken within each round
   (:func:`_report.paired_speedups`), since this VM's speed drifts between runs.

Each timing of 1-7 is the median of ``--repeats`` runs after a warm-up. Ratios are frames/s
over MOG2's end-to-end frames/s measured in the same run.

``--device cuda`` runs HOFAM and the RAFT backends on the GPU (the classical flow, decoding,
the baselines and the camera fit stay on the CPU), synchronising before each clock stops, and
reports the GPU's peak allocated memory; with ``--backends raft-small`` (or a checkpoint trained
on RAFT-small flow) it times ``segment`` with RAFT-small flow, streaming, against issue #7's
GPU target of 300 frames/s.

Usage (from the repository root)::

    python benchmarks/segment_throughput.py
    python benchmarks/segment_throughput.py --video clip.mp4 --frames 100 --no-record
    python benchmarks/segment_throughput.py --device cuda --backends raft-small,dis-ultrafast
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import resource
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from _report import (
    DEFAULT_VIDEO,
    add_record_argument,
    environment,
    markdown_table,
    median_seconds,
    paired_speedups,
    ratio,
    report,
    synchronize,
)

from crossnet.background import RunningBackground, to_uint8
from crossnet.camera_motion import camera_flows
from crossnet.weights import bundled_weights
from flow.backends import make_hop_backend, resolve_device
from flow.hop import build_hops, earlier_frame
from pipelines.baselines import OpenCVSubtractor
from pipelines.cli import parse_size
from pipelines.segment import (
    DEFAULT_CAMERA_MOTION,
    load_segmentation_model,
    overlap_by_default,
    segment_frames,
    with_camera_mode,
)
from pipelines.segment_folder import segment_to_folder
from pipelines.sources import VideoSource

TARGET_FPS = 25.0
GPU_TARGET_FPS = 300.0  # segment with RAFT-small flow on one H100 (issue #7)


class FirstFrames:
    """The first ``count`` frames of a source, as a source (for a fixed-length timing)."""

    def __init__(self, source, count: int) -> None:
        self._source, self._count = source, count
        self.name, self.path, self.fps = source.name, source.path, source.fps
        self.frame_size = source.frame_size
        self.num_frames = min(count, source.num_frames or count)

    def __iter__(self):
        return itertools.islice(iter(self._source), self._count)


def resident_mb() -> float:
    """This process's resident memory now, MB (from /proc; NaN where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def gpu_verdict(fps: float | None, device: torch.device) -> str:
    """Issue #7's GPU target for ``segment`` with RAFT-small flow (300 frames/s, streaming),
    given that row's frames/s; "" where this run did not measure it on a GPU."""
    if device.type != "cuda" or fps is None:
        return ""
    verdict = "met" if fps >= GPU_TARGET_FPS else (
        f"missed by {GPU_TARGET_FPS - fps:.0f} frames/s (x{fps / GPU_TARGET_FPS:.2f})")
    return (f" With RAFT-small flow on `{device}`: {fps:.1f} frames/s streaming; target "
            f"{GPU_TARGET_FPS:.0f} frames/s: **{verdict}**.")


def gpu_memory(device: torch.device) -> str:
    """", peak GPU memory allocated N MB" on CUDA, "" elsewhere."""
    if device.type != "cuda":
        return ""
    return f", peak GPU memory allocated {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MB"


def peak_resident_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default=str(DEFAULT_VIDEO))
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--size", default="320x240", help="processing size WIDTHxHEIGHT")
    parser.add_argument("--weights", help="segmentation checkpoint (default: the bundled one)")
    parser.add_argument("--backends", default="", help="comma-separated flow backends to time "
                        "besides the checkpoint's (default: dis-ultrafast)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu",
                        help="where HOFAM and RAFT run: cpu, cuda[:N] or auto")
    parser.add_argument("--rounds", type=int, default=6,
                        help="rounds of the side-by-side comparison of the segment variants "
                             "that decide defaults (thread, precision)")
    add_record_argument(parser)
    args = parser.parse_args()
    env = environment()
    size = parse_size(args.size)
    width, height = size
    video = Path(args.video)
    if not video.is_file():
        raise SystemExit(f"{video}: no such video")
    weights = Path(args.weights) if args.weights else bundled_weights()
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        parser.error(f"--device: {error}")
    segmentation = load_segmentation_model(weights, camera_motion=DEFAULT_CAMERA_MOTION,
                                           device=device)
    config = segmentation.config
    backends = list(dict.fromkeys([segmentation.flow_backend,
                                   *(args.backends.split(",") if args.backends
                                     else ["dis-ultrafast"])]))
    n = args.frames

    def clip():
        return itertools.islice(VideoSource(video, size=size), n)

    frames = [frame.rgb for frame in clip()]
    n = len(frames)
    tensors = [torch.from_numpy(f).permute(2, 0, 1).contiguous() for f in frames]
    rows = []

    def add(stage: str, seconds: float, note: str = "") -> float:
        fps = n / seconds
        rows.append([stage, fps, 1000 * seconds / n, note])
        return fps

    add("decode only (+ resize)", median_seconds(lambda: sum(1 for _ in clip()),
                                                   repeats=args.repeats))
    baseline_fps = {}
    for name in ("mog2", "knn"):
        def run_baseline(name=name):
            subtract = OpenCVSubtractor(name)
            for frame in clip():
                subtract(frame.rgb)
        baseline_fps[name] = add(f"{name.upper()} end to end (decode + subtractor)",
                                 median_seconds(run_baseline, repeats=args.repeats))

    stacks = {}
    for name in backends:
        backend = make_hop_backend(name, device=str(device))

        def run_hop(backend=backend, keep=False):
            out = [stack for _, stack in build_hops(tensors, backend, config.strides,
                                                    batch_frames=args.batch_size)]
            return out if keep else None

        stacks[name] = run_hop(keep=True)
        add(f"3D-HOP only, {name}, strides {','.join(map(str, config.strides))}",
            median_seconds(run_hop, repeats=args.repeats, warmup=0), "frames in memory")

    def run_camera_fit():
        for index, stack in enumerate(stacks[segmentation.flow_backend]):
            earlier = torch.stack([tensors[earlier_frame(index, k)] for k in config.strides])
            camera_flows(stack, config.strides, tensors[index], earlier)

    add(f"camera fit + check only, strides {','.join(map(str, config.strides))}",
        median_seconds(run_camera_fit, repeats=args.repeats),
        f"3D-HOP in memory; part of the default (`--camera-motion {DEFAULT_CAMERA_MOTION}`)")

    background = RunningBackground(rate=0.05)
    images = (torch.stack(tensors).float() / 255.0).to(device)
    estimates = (torch.stack([torch.from_numpy(np.ascontiguousarray(
        to_uint8(background.advance(f)))).permute(2, 0, 1) for f in frames]).float()
        / 255.0).to(device)
    hops = torch.stack(stacks[segmentation.flow_backend]).to(device)
    model = segmentation.model

    def forward(batch: int, bf16: bool = False):
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            for start in range(0, n, batch):
                part = slice(start, start + batch)
                model(images[part], hops[part],
                      estimates[part] if config.use_background else None)
        synchronize(device)

    for batch, bf16 in ((1, False), (args.batch_size, False), (args.batch_size, True)):
        add(f"HOFAM forward only, batch {batch}, {'bf16 autocast' if bf16 else 'fp32'}",
            median_seconds(lambda b=batch, h=bf16: forward(b, h), repeats=args.repeats),
            "inputs in memory")

    memory = {}
    segment_fps = {}
    # (label, backend, overlap, precision): the default path first, then what each speed-up
    # adds or takes away, each against the same reference in this one run.
    default = segmentation.flow_backend
    still = dataclasses.replace(segmentation, config=with_camera_mode(config, "none"))
    flow_only = dataclasses.replace(segmentation, config=with_camera_mode(config, "affine"))
    default_overlap = overlap_by_default(device)
    modes = {True: "flow in a background thread (`--overlap`)",
             False: "one thread, stage after stage (`--no-overlap`)"}
    where = "CPU" if device.type == "cpu" else "GPU"
    variants = [(f"**segment end to end, {default}** ({where} default: {modes[default_overlap]})",
                 default, default_overlap, "fp32", segmentation),
                (f"segment end to end, {default}, {modes[not default_overlap]}", default,
                 not default_overlap, "fp32", segmentation),
                (f"segment end to end, {default}, bf16 autocast (`--precision bf16`)", default,
                 default_overlap, "bf16", segmentation),
                (f"segment end to end, {default}, no camera-motion fit (`--camera-motion none`)",
                 default, default_overlap, "fp32", still),
                (f"segment end to end, {default}, the flow's camera motion only "
                 + "(`--camera-motion affine`)", default, default_overlap, "fp32", flow_only),
                *((f"segment end to end, {name}", name, default_overlap, "fp32", segmentation)
                  for name in backends if name != default)]
    runs = {}
    for label, name, overlap, precision, model_inputs in variants:
        backend = make_hop_backend(name, device=str(device))

        def run_segment(backend=backend, label=label, overlap=overlap, precision=precision,
                        model_inputs=model_inputs):
            first = None
            for index, _ in enumerate(segment_frames(
                    VideoSource(video), model_inputs, backend=backend, size=size,
                    batch_frames=args.batch_size, overlap=overlap, precision=precision,
                    device=device)):
                if index == 0:
                    first = resident_mb()
                if index + 1 >= n:
                    break
            memory[label] = (first, resident_mb())

        runs[label] = run_segment
        segment_fps[label] = add(label, median_seconds(run_segment, repeats=args.repeats),
                                 f"batch {args.batch_size}; RSS {memory[label][0]:.0f} MB at "
                                 f"frame 1, {memory[label][1]:.0f} MB at frame {n}")
    default_label, other_label, bf16_label, still_label = (v[0] for v in variants[:4])
    # The RAFT-small row with the default settings: the checkpoint's own backend's row, or the
    # one --backends added.
    raft_fps = next((segment_fps[v[0]] for v in variants if v[1] == "raft-small"
                     and v[2] == default_overlap and v[3] == "fp32" and v[4] is segmentation),
                    None)
    # The speed-ups that decide defaults, once more side by side (rotated order per round).
    paired = paired_speedups({label: runs[label] for label in
                              (default_label, other_label, bf16_label, still_label)},
                             rounds=args.rounds)

    default_backend = make_hop_backend(segmentation.flow_backend, device=str(device))
    with tempfile.TemporaryDirectory() as work:
        def run_to_folder():
            segment_to_folder(FirstFrames(VideoSource(video), n), segmentation,
                              Path(work) / "masks", backend=default_backend, size=size,
                              batch_frames=args.batch_size, overwrite=True, progress=False,
                              device=device)
        to_folder_fps = add("`crossnet segment` to a folder (+ PNG mask writing), "
                            f"{segmentation.flow_backend}",
                            median_seconds(run_to_folder, repeats=args.repeats),
                            f"batch {args.batch_size}; what the command does, minus start-up")

    mog2 = baseline_fps["mog2"]
    table_rows = [[stage, fps, ms, ratio(fps, mog2), note] for stage, fps, ms, note in rows]
    table = markdown_table(["stage", "frames/s", "ms/frame", "vs MOG2", "note"], table_rows)
    default = to_folder_fps
    verdict = ("met" if default >= TARGET_FPS else
               f"missed by {TARGET_FPS - default:.1f} frames/s (x{default / TARGET_FPS:.2f} "
               "of the target)")
    body = "\n\n".join([
        (f"Clip: `{video.name}`, first {n} frames at {width}x{height}; weights `{weights.name}`, "
        f"strides {','.join(map(str, config.strides))}, torch threads "
        f"{torch.get_num_threads()}, HOFAM and RAFT on `{device}`. Median of {args.repeats} "
        f"runs."),
        table,
        (f"`crossnet segment` with the default backend ({segmentation.flow_backend}), masks "
        f"written: {default:.1f} frames/s, x{default / mog2:.2f} MOG2's {mog2:.0f} frames/s "
        f"(streaming, no writing: {segment_fps[default_label]:.1f} frames/s, "
        f"{modes[default_overlap]}; {modes[not default_overlap]} instead: "
        f"{segment_fps[other_label]:.1f} frames/s, "
        f"x{segment_fps[other_label] / segment_fps[default_label]:.2f}). "
        f"Target 25 frames/s: **{verdict}**. Peak RSS of the benchmark process "
        f"{peak_resident_mb():.0f} MB{gpu_memory(device)}."
        + gpu_verdict(raft_fps, device)),
        (f"Side by side ({args.rounds} rounds, each running the four in an order rotated "
         f"per round; speed-up = the default's time / the variant's in the same round, so a "
         f"drift of the VM's speed between rounds cancels out):\n\n"
         + markdown_table(["segment end to end", "median speed-up over the default",
                           "lowest", "highest", "per round"],
                          [[label, statistics.median(values), min(values), max(values),
                            " ".join(f"{value:.2f}" for value in values)]
                           for label, values in paired.items()])),
    ])
    report("segment throughput on one clip, stage by stage, next to MOG2/KNN", body,
           record=not args.no_record, env=env)


if __name__ == "__main__":
    main()
