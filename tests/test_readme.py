"""The README's Python example runs as printed (on a small video in place of clip.mp4)."""

from __future__ import annotations

import contextlib
import io
import re

from tests.pipelines.reliability_inputs import REPO, write_video


def _python_block(section: str) -> str:
    text = (REPO / "README.md").read_text()
    body = text.split(f"### {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", body, flags=re.DOTALL)
    assert len(blocks) == 1, f"one python block expected under {section!r}"
    return blocks[0]


def test_the_python_example_segments_a_video(tmp_path, monkeypatch):
    code = _python_block("From Python")
    assert '"clip.mp4"' in code
    write_video(tmp_path / "clip.mp4", 6)
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own code
    lines = printed.getvalue().splitlines()
    assert [int(line.split()[0]) for line in lines] == [1, 2, 3, 4, 5, 6]  # frame numbers
    assert all(0.0 <= float(line.split()[1]) <= 1.0 for line in lines)  # foreground shares
