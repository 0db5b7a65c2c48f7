"""flow: the optical-flow stage, usable on its own.

Flow convention (the one used everywhere in this project): a flow field ``flow`` of shape
(2, H, W) or (B, 2, H, W) holds (u, v) in pixels. For a pixel x = (x, y) of the FIRST image,
``x + flow[:, y, x]`` is where that scene point lies in the SECOND image (Middlebury convention).
The 3D-HOP stack of frame t holds, for each stride k, the flow from frame t (first) to frame
t - k (second); for t < k the earliest frame (frame 0) is used.

This package imports neither :mod:`crossnet` nor :mod:`pipelines`. Importing it is cheap: the
network and the cache live in submodules (``flow.raft``, ``flow.cache``...) imported on use.
"""

from flow.io import read_flo, read_kitti_flow, write_flo, write_kitti_flow
from flow.metrics import endpoint_error, fl_all

__all__ = ["endpoint_error", "fl_all", "read_flo", "read_kitti_flow", "write_flo",
           "write_kitti_flow"]
