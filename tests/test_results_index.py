"""benchmarks/RESULTS.md's introduction names every benchmark script, so a reader can find
the script behind each section."""

from __future__ import annotations

from tests.pipelines.reliability_inputs import REPO


def test_every_benchmark_script_is_named_in_the_results_introduction():
    text = (REPO / "benchmarks" / "RESULTS.md").read_text()
    introduction = text.split("\n## ", 1)[0]
    scripts = sorted(path.name for path in (REPO / "benchmarks").glob("*.py")
                     if not path.name.startswith("_"))
    assert len(scripts) > 20
    missing = [name for name in scripts if f"`{name}`" not in introduction]
    assert missing == []
