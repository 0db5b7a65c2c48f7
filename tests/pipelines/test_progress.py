"""Progress bars: tqdm's on a terminal, plain lines in a log file or a pipe."""

import io
import subprocess
import sys

import pytest

from pipelines import progress
from pipelines.progress import LineWriter, is_terminal, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_a_long_run_is_two_plain_lines():
    log = io.StringIO()
    for _ in progress_bar(range(5000), file=log, desc="clip", unit="frame"):
        pass
    lines = log.getvalue().split("\n")
    assert lines[-1] == ""  # every line ends with a newline
    assert len(lines) - 1 == 2, lines  # the start and the end: no redraw within 30 s
    assert lines[0].startswith("clip:   0%") and lines[1].startswith("clip: 100%")
    assert "5000/5000" in lines[1]
    assert "\r" not in log.getvalue() and "\x1b" not in log.getvalue()


def test_off_a_terminal_each_update_is_its_own_line_once_the_interval_has_passed(monkeypatch):
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)
    log = io.StringIO()
    with progress_bar(total=4, file=log, desc="scenes", miniters=1) as bar:
        for _ in range(4):
            bar.update(1)
    lines = log.getvalue().splitlines()
    counts = [line.split("|")[2].split()[0] for line in lines]
    assert counts == ["0/4", "1/4", "2/4", "3/4", "4/4"]  # no state written twice
    assert "\r" not in log.getvalue()


def test_off_a_terminal_a_bar_asked_not_to_stay_still_logs_its_end():
    # leave=False erases a finished bar on a terminal; in a log its final count would be lost.
    log = io.StringIO()
    with progress_bar(total=3, file=log, desc="video", leave=False) as bar:
        bar.update(3)
    assert log.getvalue().splitlines()[-1].startswith("video: 100%")


def test_on_a_terminal_the_bar_is_tqdm_redrawn_in_place():
    screen = Terminal()
    for _ in progress_bar(range(3), file=screen, desc="clip", mininterval=0):
        pass
    assert screen.getvalue().startswith("\r") and screen.getvalue().count("\r") >= 2


def test_line_writer_drops_escape_codes_blank_redraws_and_repeats():
    log = io.StringIO()
    writer = LineWriter(log)
    writer.write("\rclip:  10%|#   | 1/10 [00:00<00:09]")
    writer.write("\x1b[A\r" + " " * 40 + "\r")  # tqdm erasing a nested bar
    writer.write("\rclip:  10%|#   | 1/10 [00:01<00:09]   ")  # drawn again, new timings
    writer.write("\n")
    writer.write("\rclip:  20%|##  | 2/10\n")
    assert log.getvalue() == "clip:  10%|#   | 1/10 [00:00<00:09]\nclip:  20%|##  | 2/10\n"


def test_is_terminal_of_streams_that_cannot_say():
    closed = io.StringIO()
    closed.close()
    assert not is_terminal(closed)
    assert not is_terminal(object())
    assert is_terminal(Terminal())


@pytest.mark.parametrize("command", [["synth", "--frames", "12", "--size", "32x24"]])
def test_a_command_logging_to_a_file_writes_lines_not_carriage_returns(tmp_path, command):
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", *command,
                             str(tmp_path / "out")], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "\x1b" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("scene_000: 100%")
    assert "12/12" in result.stderr.splitlines()[-1]
