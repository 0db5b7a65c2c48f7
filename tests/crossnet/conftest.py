from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The real data folder beside the repo (../shared/data); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def shared_data_names(shared_data) -> set[str]:
    """Names of every real scene with ground truth in ../shared/data."""
    from pipelines.scenes import find_scenes

    return {scene.name for scene in find_scenes([shared_data])}
