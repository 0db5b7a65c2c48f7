"""The HOFAM weights shipped inside the package (see MODEL_CARD.md beside this file)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

BUNDLED_NAME = "hofam_default.pt"


def bundled_weights() -> Path:
    """Path of the bundled default HOFAM checkpoint.

    Raises:
        FileNotFoundError: the package was installed without its weights.
    """
    path = Path(str(resources.files(__package__).joinpath(BUNDLED_NAME)))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the bundled weights are missing from this install; "
                                "pass --weights PATH")
    return path
