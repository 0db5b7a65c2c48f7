"""Benchmark scene folders: frames with ground-truth masks, ROI and temporal ROI.

A :class:`Scene` is a frame source (see :mod:`pipelines.sources`) whose frames carry GT
masks where the benchmark has them. Layouts recognised (``Scene.layout``):

- ``"cdnet"``: CDnet-2014 and SBI. ``input/`` with ``inNNNNNN.jpg|png`` or
  ``<name>_NNNNNN.png``, ``groundtruth/gtNNNNNN.png``, optional ``ROI.bmp`` and
  ``temporalROI.txt``. SBI GT is 3-channel with values 0/170/255 (and a few stray 1s); the
  raw labels are kept, the metrics decide what they mean.
- ``"ucsd"``: UCSD background subtraction. ``in/frame_N.jpg`` (grayscale),
  ``groundtruth/gtNNNN.png``, ``ROI.bmp``, ``temporalROI.txt``.
- ``"wallflower"``: Wallflower. A folder of ``bNNNNN.bmp`` frames with one or more
  ``hand_segmented_NNNNN.BMP`` GT frames; the GT is anti-aliased RGB and is binarised to
  0/255 at > 127, because intermediate values could read as CDnet labels (85, 170).
- ``"hofam_demo"``: the HOFAM / CrossNet demo data. ``demo_data/test_NNNNNN.png``, each
  [RGB frame | flow image | GT mask] panels side by side; the GT panel was resampled and is
  binarised at > 127. The files hold runs of frames from different scenes, so such a folder
  gives one Scene per contiguous run of frame numbers, named ``<folder>_<first:06d>``.

Frames and GT masks pair by the trailing integer of their file names. ``temporal_roi`` keeps
the values of ``temporalROI.txt`` even where they reach past the frames present (the staged
SBI and UCSD copies are cut to a window); :attr:`Scene.scored_numbers` intersects them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipelines.errors import InputError, one_line
from pipelines.imageio import read_image_rgb, read_label_mask
from pipelines.sources import (
    Frame,
    check_size,
    list_image_files,
    number_files,
    numbered_image_files,
    resize_labels,
    resize_rgb,
)

logger = logging.getLogger(__name__)

CDNET = "cdnet"
UCSD = "ucsd"
WALLFLOWER = "wallflower"
HOFAM_DEMO = "hofam_demo"

_WALLFLOWER_GT = re.compile(r"^hand_segmented_\d+\.bmp$", re.IGNORECASE)
_HOFAM_FILE = re.compile(r"^test_\d+\.png$", re.IGNORECASE)
_HOFAM_PANELS = 3
_EXPECTED_LAYOUTS = (
    "input/ + groundtruth/ (CDnet-2014, SBI), in/ + groundtruth/ (UCSD), "
    "hand_segmented_NNNNN.bmp beside the frames (Wallflower) or demo_data/test_NNNNNN.png "
    "(HOFAM demo)"
)


@dataclass(frozen=True)
class FrameFiles:
    """Where one scene frame is stored.

    Attributes:
        number: the frame number (trailing integer of the file name).
        image: the image file holding the frame.
        ground_truth: the file holding its GT mask, or None. For the HOFAM demo layout it is
            the same file as ``image`` (the GT is a panel of it).
    """

    number: int
    image: Path
    ground_truth: Path | None


@dataclass(frozen=True, eq=False)
class Scene:
    """A benchmark scene: a frame source whose frames carry GT masks where they exist.

    Attributes:
        name: the scene folder's name (made unique by :func:`find_scenes`).
        path: the scene folder.
        layout: one of ``"cdnet"``, ``"ucsd"``, ``"wallflower"``, ``"hofam_demo"``.
        files: the frames in order of number.
        native_size: (width, height) of the frames as stored.
        size: the (width, height) processing size, or None to keep ``native_size``.
        roi: the scored region, shape (height, width) of ``frame_size``, bool (True =
            scored), or None when the scene has no ROI.bmp.
        temporal_roi: the inclusive (first, last) frame-number range from temporalROI.txt,
            as written there, or None without the file.
        fps: None: benchmark folders do not record a frame rate.
    """

    name: str
    path: str
    layout: str
    files: tuple[FrameFiles, ...]
    native_size: tuple[int, int]
    size: tuple[int, int] | None
    roi: np.ndarray | None
    temporal_roi: tuple[int, int] | None
    fps: float | None = None

    @property
    def frame_size(self) -> tuple[int, int]:
        """(width, height) of the yielded frames, after resizing."""
        return self.size or self.native_size

    @property
    def num_frames(self) -> int:
        """The number of frames in the scene."""
        return len(self.files)

    @property
    def frame_numbers(self) -> tuple[int, ...]:
        """The frame numbers, sorted."""
        return tuple(entry.number for entry in self.files)

    @property
    def frame_files(self) -> tuple[Path, ...]:
        """The image files of the frames, in order."""
        return tuple(entry.image for entry in self.files)

    @property
    def input_files(self) -> tuple[Path, ...]:
        """Every file the scene is read from: frames, GT masks, ROI.bmp and temporalROI.txt
        where present. Outputs made from the scene (caches, mask folders) are identified by
        these, so another file added to the folder does not make them stale."""
        files = dict.fromkeys(self.frame_files)
        files.update(dict.fromkeys(entry.ground_truth for entry in self.files
                                   if entry.ground_truth is not None))
        for name in ("ROI.bmp", "temporalROI.txt"):
            if (Path(self.path) / name).is_file():
                files[Path(self.path) / name] = None
        return tuple(files)

    @property
    def gt_numbers(self) -> tuple[int, ...]:
        """The sorted numbers of the frames that have a GT mask."""
        return tuple(entry.number for entry in self.files if entry.ground_truth is not None)

    @property
    def scored_numbers(self) -> tuple[int, ...]:
        """GT frames inside ``temporal_roi`` (all GT frames when there is none)."""
        if self.temporal_roi is None:
            return self.gt_numbers
        first, last = self.temporal_roi
        return tuple(number for number in self.gt_numbers if first <= number <= last)

    def __iter__(self) -> Iterator[Frame]:
        for entry in self.files:
            yield self._load(entry)

    def read_frame(self, number: int) -> Frame:
        """Reads the frame with the given number (random access, e.g. first and last).

        Raises:
            KeyError: the scene has no frame with that number.
        """
        for entry in self.files:
            if entry.number == number:
                return self._load(entry)
        raise KeyError(f"{self.name}: no frame number {number} in {self.path}")

    def _load(self, entry: FrameFiles) -> Frame:
        if self.layout == HOFAM_DEMO:
            rgb, mask = _read_hofam_panels(entry.image)
        else:
            rgb = read_image_rgb(entry.image)
            mask = None
            if entry.ground_truth is not None:
                mask = read_label_mask(entry.ground_truth)
                if self.layout == WALLFLOWER:
                    mask = _binarise(mask)
        height, width = rgb.shape[:2]
        if self.size is None and (width, height) != self.native_size:
            raise InputError(
                f"{entry.image}: frame size {width}x{height} differs from the scene's "
                f"{self.native_size[0]}x{self.native_size[1]} (pass a processing size to "
                "resize all frames)"
            )
        if mask is not None and mask.shape != (height, width):
            raise InputError(
                f"{entry.ground_truth}: ground-truth size {mask.shape[1]}x{mask.shape[0]} "
                f"differs from the frame size {width}x{height} of {entry.image.name}"
            )
        return Frame(
            number=entry.number,
            rgb=resize_rgb(rgb, self.size),
            mask=None if mask is None else resize_labels(mask, self.size),
        )

    def __repr__(self) -> str:
        return (
            f"Scene(name={self.name!r}, layout={self.layout!r}, path={self.path!r}, "
            f"num_frames={self.num_frames}, frame_size={self.frame_size})"
        )


def _binarise(labels: np.ndarray) -> np.ndarray:
    """0/255 labels from a resampled or anti-aliased mask: foreground where > 127."""
    return np.where(labels > 127, 255, 0).astype(np.uint8)


def _read_hofam_panels(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """Splits a HOFAM demo image (H, 3W, 3) into its RGB frame and binarised GT panel."""
    panels = read_image_rgb(file)
    total_width = panels.shape[1]
    if total_width % _HOFAM_PANELS != 0:
        raise InputError(
            f"{file}: width {total_width} is not 3 panels [frame | flow | mask] of equal width"
        )
    width = total_width // _HOFAM_PANELS
    rgb = np.ascontiguousarray(panels[:, :width])
    mask = _binarise(cv2.cvtColor(panels[:, 2 * width :], cv2.COLOR_RGB2GRAY))
    return rgb, mask


def detect_layout(path: str | os.PathLike) -> str | None:
    """The benchmark layout of a scene folder, or None when it is not a scene folder."""
    path = Path(path)
    if not path.is_dir():
        return None
    if (path / "groundtruth").is_dir():
        if (path / "input").is_dir():
            return CDNET
        if (path / "in").is_dir():
            return UCSD
    if _hofam_data_folder(path) is not None:
        return HOFAM_DEMO
    if any(_WALLFLOWER_GT.match(file.name) for file in list_image_files(path)):
        return WALLFLOWER
    return None


def is_scene(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a benchmark scene folder of a recognised layout."""
    return detect_layout(path) is not None


def _hofam_data_folder(path: Path) -> Path | None:
    """The folder of ``test_NNNNNN.png`` files: ``path/demo_data`` or ``path`` itself."""
    for folder in (path / "demo_data", path):
        if (
            folder.name == "demo_data"
            and folder.is_dir()
            and any(_HOFAM_FILE.match(file.name) for file in list_image_files(folder))
        ):
            return folder
    return None


def _read_temporal_roi(file: Path) -> tuple[int, int] | None:
    """The inclusive (first, last) range in temporalROI.txt, or None without the file."""
    if not file.is_file():
        return None
    fields = file.read_text(errors="replace").split()
    if len(fields) != 2 or not all(re.fullmatch(r"-?\d+", field) for field in fields):
        raise InputError(f"{file}: expected two frame numbers 'first last', got {fields[:4]}")
    first, last = int(fields[0]), int(fields[1])
    if first > last:
        raise InputError(f"{file}: first frame {first} is after last frame {last}")
    return first, last


def _read_roi(
    file: Path, *, native_size: tuple[int, int], size: tuple[int, int] | None
) -> np.ndarray | None:
    """ROI.bmp as a bool mask (True = scored) at the processing size, or None without it."""
    if not file.is_file():
        return None
    roi = read_label_mask(file) > 127
    if (roi.shape[1], roi.shape[0]) != native_size:
        raise InputError(
            f"{file}: ROI size {roi.shape[1]}x{roi.shape[0]} differs from the frame size "
            f"{native_size[0]}x{native_size[1]}"
        )
    return resize_labels(roi, size)


def _native_size(file: Path) -> tuple[int, int]:
    """(width, height) of an image file, by decoding it."""
    rgb = read_image_rgb(file)
    return rgb.shape[1], rgb.shape[0]


def _pair_with_ground_truth(
    frames: list[tuple[int, Path]], ground_truth: list[tuple[int, Path]], *, scene: Path
) -> tuple[FrameFiles, ...]:
    """Pairs frames with GT files by number; GT without a frame is dropped with a warning."""
    by_number = dict(ground_truth)
    frame_numbers = {number for number, _ in frames}
    orphans = [file for number, file in ground_truth if number not in frame_numbers]
    if orphans:
        logger.warning(
            "%s: %d ground-truth file(s) have no frame and are ignored (e.g. %s)",
            scene, len(orphans), orphans[0].name,
        )
    return tuple(FrameFiles(number, file, by_number.get(number)) for number, file in frames)


def _load_folder_scene(
    path: Path, *, layout: str, size: tuple[int, int] | None
) -> Scene:
    """A CDnet/SBI, UCSD or Wallflower scene folder."""
    if layout == WALLFLOWER:
        images = list_image_files(path)
        frames = number_files(f for f in images if not _WALLFLOWER_GT.match(f.name))
        ground_truth = number_files(f for f in images if _WALLFLOWER_GT.match(f.name))
        frame_folder = path
    else:
        frame_folder = path / ("input" if layout == CDNET else "in")
        frames = numbered_image_files(frame_folder)
        ground_truth = numbered_image_files(path / "groundtruth")
    if not frames:
        raise InputError(f"{frame_folder}: no image files (the scene has no frames)")
    native_size = _native_size(frames[0][1])
    scene = Scene(
        name=path.resolve().name,
        path=str(path),
        layout=layout,
        files=_pair_with_ground_truth(frames, ground_truth, scene=path),
        native_size=native_size,
        size=size,
        roi=_read_roi(path / "ROI.bmp", native_size=native_size, size=size),
        temporal_roi=_read_temporal_roi(path / "temporalROI.txt"),
    )
    if layout in (CDNET, UCSD):
        _warn_missing_ground_truth(scene)
    return scene


def _warn_missing_ground_truth(scene: Scene) -> None:
    """Warn when some (not all) frames inside the temporal ROI lack a GT file.

    CDnet and UCSD give every frame of the temporal ROI a mask, so a gap is most likely a lost
    file. Those frames are still read, just not scored (and not trained on); the warning says
    which, so a user can tell a gap from a scene cut to a window on purpose. Wallflower and
    the HOFAM demo have sparse GT by design and are not checked.
    """
    if not scene.gt_numbers:
        return
    first, last = scene.temporal_roi or (-math.inf, math.inf)
    missing = [entry for entry in scene.files
               if entry.ground_truth is None and first <= entry.number <= last]
    if missing:
        logger.warning(
            "%s: %d frame(s) inside the temporal ROI have no ground-truth file (first: %s); "
            "they are read but not scored", scene.path, len(missing), missing[0].image.name,
        )


def _load_hofam_scenes(path: Path, *, size: tuple[int, int] | None) -> list[Scene]:
    """One Scene per contiguous run of frame numbers in a HOFAM demo folder."""
    data_folder = _hofam_data_folder(path)
    if data_folder is None:
        raise InputError(f"{path}: no demo_data/test_NNNNNN.png files")
    numbered = number_files(
        file for file in list_image_files(data_folder) if _HOFAM_FILE.match(file.name)
    )
    runs: list[list[tuple[int, Path]]] = []
    for number, file in numbered:
        if runs and number == runs[-1][-1][0] + 1:
            runs[-1].append((number, file))
        else:
            runs.append([(number, file)])
    # Name the scenes after the folder holding demo_data, not "demo_data" itself.
    container = data_folder.resolve().parent if data_folder.name == "demo_data" else path
    scenes = []
    for run in runs:
        rgb, _ = _read_hofam_panels(run[0][1])
        scenes.append(
            Scene(
                name=f"{container.name}_{run[0][0]:06d}",
                path=str(path),
                layout=HOFAM_DEMO,
                files=tuple(FrameFiles(number, file, file) for number, file in run),
                native_size=(rgb.shape[1], rgb.shape[0]),
                size=size,
                roi=None,
                temporal_roi=None,
            )
        )
    return scenes


def _load_scenes(path: Path, *, size: tuple[int, int] | None) -> list[Scene]:
    layout = detect_layout(path)
    if layout is None:
        raise InputError(f"{path}: not a benchmark scene folder (expected {_EXPECTED_LAYOUTS})")
    if layout == HOFAM_DEMO:
        return _load_hofam_scenes(path, size=size)
    return [_load_folder_scene(path, layout=layout, size=size)]


def open_scenes(path: str | os.PathLike, *, size: tuple[int, int] | None = None) -> list[Scene]:
    """Opens every scene one benchmark scene folder holds: one for most layouts, one per run of
    consecutive frame numbers for a HOFAM demo folder.

    Args:
        path: the scene folder.
        size: optional (width, height) processing size for frames, masks and ROI.

    Raises:
        InputError: the folder is missing, is not a scene of a known layout, or is malformed.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    return _load_scenes(path, size=check_size(size))


def open_scene(path: str | os.PathLike, *, size: tuple[int, int] | None = None) -> Scene:
    """Opens one benchmark scene folder.

    Args:
        path: the scene folder.
        size: optional (width, height) processing size for frames, masks and ROI.

    Returns:
        The scene.

    Raises:
        InputError: the folder is missing, is not a scene of a known layout, holds several
            scenes (a HOFAM demo folder; use :func:`open_scenes`), or is malformed.
    """
    scenes = open_scenes(path, size=size)
    if len(scenes) != 1:
        names = ", ".join(scene.name for scene in scenes)
        raise InputError(
            f"{path}: holds {len(scenes)} scenes ({names}); open them with open_scenes"
        )
    return scenes[0]


def _scene_folders(path: Path, *, seen: set[Path]) -> list[Path]:
    """Scene folders at or under ``path`` in name order; ``seen`` guards symlink loops."""
    resolved = path.resolve()
    if resolved in seen:
        return []
    seen.add(resolved)
    if is_scene(path):
        return [path]
    folders = []
    for child in sorted(path.iterdir(), key=lambda child: child.name):
        if child.is_dir() and not child.name.startswith("."):
            folders.extend(_scene_folders(child, seen=seen))
    return folders


def _unique_names(scenes: list[Scene]) -> list[Scene]:
    """Prefixes colliding names with parent folder names until all names differ."""
    names = [scene.name for scene in scenes]
    ancestors = [list(Path(scene.path).resolve().parents) for scene in scenes]
    # A HOFAM scene opened at its demo_data folder is named after that folder's parent.
    depth = [
        1 if scene.layout == HOFAM_DEMO and Path(scene.path).name == "demo_data" else 0
        for scene in scenes
    ]
    while True:
        counts = Counter(names)
        colliding = [index for index, name in enumerate(names) if counts[name] > 1]
        if not colliding:
            break
        progressed = False
        for index in colliding:
            parents = ancestors[index]
            if depth[index] < len(parents) and parents[depth[index]].name:
                names[index] = f"{parents[depth[index]].name}_{names[index]}"
                depth[index] += 1
                progressed = True
        if not progressed:
            raise InputError(f"scene name {names[colliding[0]]!r} is not unique")
    return [
        scene if scene.name == name else dataclasses.replace(scene, name=name)
        for scene, name in zip(scenes, names, strict=True)
    ]


def find_scenes(
    paths: Iterable[str | os.PathLike], *, size: tuple[int, int] | None = None,
    failed: list[tuple[str, str]] | None = None,
) -> list[Scene]:
    """All benchmark scenes in the given folders.

    Each path is a scene folder or a folder holding scene folders at any depth; folders are
    visited in name order, hidden folders skipped, a folder given twice loaded once. Scene
    names are their folder names; where two collide (two ``birds``) the parent folder's
    name is prefixed (``UCSD_BGS_birds``), going further up until they differ.

    Args:
        paths: scene folders or folders of scene folders.
        size: optional (width, height) processing size for frames, masks and ROI.
        failed: where given, a path or scene folder that cannot be read is appended to it as
            ``(path, one-line reason)`` and the others are still loaded (a batch); without
            it, the first such error is raised.

    Returns:
        The scenes, in the order found.

    Raises:
        InputError: a path is missing, is not a folder, or has no scene under it, or a scene
            folder is malformed (only without ``failed``).
    """
    size = check_size(size)
    loaded: set[Path] = set()
    scenes: list[Scene] = []
    for spec in paths:
        path = Path(spec)
        try:
            folders = _scene_folders_under(path)
        except (InputError, OSError) as error:
            if failed is None:
                raise
            failed.append((str(path), one_line(error)))
            continue
        for folder in folders:
            if folder.resolve() in loaded:
                logger.warning("%s: already included by an earlier path; loaded once", folder)
                continue
            loaded.add(folder.resolve())
            try:
                scenes.extend(_load_scenes(folder, size=size))
            except (InputError, OSError) as error:
                if failed is None:
                    raise
                failed.append((str(folder), one_line(error)))
    return _unique_names(scenes)


def _scene_folders_under(path: Path) -> list[Path]:
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if not path.is_dir():
        raise InputError(f"{path}: not a folder (expected a scene folder or a folder of them)")
    folders = _scene_folders(path, seen=set())
    if not folders:
        raise InputError(
            f"{path}: no benchmark scene folder under it (expected {_EXPECTED_LAYOUTS})"
        )
    return folders
