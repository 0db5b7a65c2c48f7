"""`crossnet evaluate --report DIR`: a markdown report with error pictures per scene.

Layout of DIR::

    report.md                          scores per scene and method, the mean, the pictures
    <scene>/<method>_<NNNNNN>.png      frame | ground truth | prediction (see error_pictures)

Every file is written atomically; ``crossnet evaluate`` refuses a folder that holds a report
unless ``--overwrite`` is given (:func:`check_report_folder`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from pipelines.error_pictures import GREEN, RED
from pipelines.errors import InputError
from pipelines.evaluate import TABLE_COLUMNS, MethodReport
from pipelines.imageio import write_png_atomic
from pipelines.outputs import prepare_output_folder, write_text_atomic

REPORT_NAME = "report.md"


def _number(value: float, digits: int = 3) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _scores_table(reports: Sequence[MethodReport]) -> list[str]:
    lines = ["| scene | method | " + " | ".join(TABLE_COLUMNS) + " |",
             "|---|---|" + "---:|" * len(TABLE_COLUMNS)]
    for index, first in enumerate(reports[0].scenes):
        for report in reports:
            result = report.scenes[index]
            values = {**result.scores, "fps": result.fps}
            lines.append(f"| {first.scene} | {report.method} | "
                         + " | ".join(_number(values.get(c, math.nan), 1 if c == "fps" else 3)
                                    for c in TABLE_COLUMNS) + " |")
    for report in reports:
        mean = report.mean()
        lines.append(f"| **mean of {len(report.scenes)}** | {report.method} | "
                     + " | ".join(_number(mean.get(c, math.nan), 1 if c == "fps" else 3)
                                for c in TABLE_COLUMNS) + " |")
    return lines


def check_report_folder(out_dir: str | os.PathLike, *, overwrite: bool) -> Path:
    """Check, before any work, that a report may be written into ``out_dir``.

    Raises:
        InputError: the folder holds a report already (without ``overwrite``), or cannot be
            created or written.
    """
    out = prepare_output_folder(out_dir)
    if (out / REPORT_NAME).exists() and not overwrite:
        raise InputError(f"{out / REPORT_NAME}: exists; pass --overwrite to replace the report")
    return out


def write_report(reports: Sequence[MethodReport], out_dir: str | os.PathLike, *,
                 title: str = "crossnet evaluation") -> Path:
    """Write ``report.md`` and the error pictures the reports carry into ``out_dir``.

    Args:
        reports: from :func:`pipelines.evaluate.evaluate` with ``pictures_per_scene > 0``.
        out_dir: the report folder (created if missing).
        title: the report's heading.

    Returns:
        The path of ``report.md``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    legend = (f"Pictures: frame | ground truth | prediction. In the prediction, white is a true "
              f"positive, green {GREEN} a false positive, red {RED} a false negative; grey "
              "pixels are not scored (outside the ROI or labelled unknown).")
    lines = [f"# {title}", "", ("Scores by CDnet-2014 rules; fps counts reading frames plus the "
             "method."), "", *_scores_table(reports), "", legend, ""]
    for index, first in enumerate(reports[0].scenes):
        lines += [f"## {first.scene}", ""]
        scene_dir = out / first.scene
        for report in reports:
            result = report.scenes[index]
            if not result.pictures:
                continue
            scene_dir.mkdir(exist_ok=True)
            lines.append(f"**{report.method}** (F {_number(result.scores.get('F', math.nan))})")
            lines.append("")
            for number, picture in sorted(result.pictures.items()):
                name = f"{report.method}_{number:06d}.png"
                write_png_atomic(scene_dir / name, picture)
                lines.append(f"![{first.scene} {report.method} frame {number}]"
                             f"({first.scene}/{name})")
            lines.append("")
    return write_text_atomic(out / REPORT_NAME, "\n".join(lines) + "\n")
