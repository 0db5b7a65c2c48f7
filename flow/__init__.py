"""flow: the optical-flow stage, usable on its own.

Flow convention (the one used everywhere in this project): a flow field ``flow`` of shape
(2, H, W) or (B, 2, H, W) holds (u, v) in pixels. For a pixel x = (x, y) of the FIRST image,
``x + flow[:, y, x]`` is where that scene point lies in the SECOND image (Middlebury convention).
The 3D-HOP stack of frame t holds, for each stride k, the flow from frame t (first) to frame
t - k (second).

This package imports neither :mod:`crossnet` nor :mod:`pipelines`.
"""

from flow.io import read_flo, write_flo

__all__ = ["read_flo", "write_flo"]
