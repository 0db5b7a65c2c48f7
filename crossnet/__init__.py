"""crossnet: the segmentation side of cross-scene background subtraction.

Public API: CDnet-2014 metrics (:mod:`crossnet.metrics`). The HOFAM model, losses and datasets
arrive with later issues. This package never imports :mod:`pipelines`.
"""

__version__ = "0.1.0"
