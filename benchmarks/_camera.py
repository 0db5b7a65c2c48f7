"""How fast a scene's camera moves, as :mod:`crossnet.camera_motion` sees it.

Imported as ``_camera`` by the benchmark scripts (a script's own folder is first on
``sys.path``, as for ``_report``).
"""

from __future__ import annotations

import numpy as np
import torch

from crossnet.camera_motion import explains_frames, fit_camera_flow
from flow.classical import make_classical_backend
from pipelines.scenes import Scene

# A scene counts as filmed by a moving camera when its median camera speed is above this many
# pixels per frame (the still-camera scenes of the split measure 0, the moving ones 6 to 12).
MOVING_CAMERA = 0.5


def camera_speed(scene: Scene, frames: int = 90, every: int = 3) -> tuple[float, float, float]:
    """Median length of the camera flow (stride 1, DIS-fast) in pixels per frame, 0 where the
    fit was dropped, and the share of frames where it was kept, over every ``every``-th frame
    of the first ``frames``; then the share of those frames where the fit passes the check
    that ``segment`` applies (:func:`crossnet.camera_motion.explains_frames` with its block
    consensus).

    The first two describe the scene and group scenes into still and moving cameras: they use
    the whole-frame check alone (``consensus=0``), as every record did before the block check
    came (2026-11-25), which keeps scenes where a drifting cloud or water fools the fit among
    the moving ones rather than letting the grouping follow the method.
    """
    dis = make_classical_backend("dis-fast")
    previous, speeds, passed = None, [], []
    for index, frame in enumerate(scene):
        if index > frames:
            break
        if previous is not None and index % every == 0:
            flow = torch.from_numpy(dis.compute_flow(frame.rgb, previous))  # t -> t - 1
            # One fit, judged by both checks.
            fit = fit_camera_flow(flow[None], (1,))  # (1, 2, H, W)
            now = torch.from_numpy(frame.rgb.transpose(2, 0, 1))[None]
            before = torch.from_numpy(previous.transpose(2, 0, 1))[None]
            whole = bool(explains_frames(fit, now, before, consensus=0.0))
            speeds.append(float(fit[0].norm(dim=0).median()) if whole else 0.0)
            passed.append(bool(explains_frames(fit, now, before)))
        previous = frame.rgb
    if not speeds:
        return float("nan"), float("nan"), float("nan")
    return (float(np.median(speeds)), float(np.mean(np.asarray(speeds) > 0)),
            float(np.mean(passed)))
