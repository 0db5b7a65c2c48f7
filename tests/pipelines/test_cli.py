"""The CLI layer: version, help, one-line errors, and the small commands end to end."""

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import crossnet
from crossnet.split import bundled_split_names
from flow.io import read_flo
from pipelines.cli import main, parse_size, parse_strides


def test_version_and_help_list_the_commands(capsys):
    assert main(["--version"]) == 0
    version, where = capsys.readouterr().out.splitlines()
    assert version == f"crossnet {crossnet.__version__}"
    # It says where the files that --help texts cite are (site-packages in a pip install).
    root = Path(where.removeprefix("installed in ").split(":")[0])
    for cited in ("crossnet/weights/MODEL_CARD.md", "flow/weights/MODEL_CARD.md",
                  "crossnet/splits/cross_scene_v1.json"):
        assert cited.rsplit("/", 1)[0] in where and (root / cited).is_file(), cited
    assert main(["train", "--help"]) == 0
    train_help = " ".join(capsys.readouterr().out.split())
    named = set(re.findall(r"cross_scene_\w+", train_help.split("--split", 1)[1]))
    assert set(bundled_split_names()) <= named  # --split's help names every bundled split
    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    for command in ("preprocess", "train", "segment", "evaluate", "synth", "flow"):
        assert f"  {command}" in listed


def test_console_script_exits_non_zero_with_one_line_and_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "evaluate",
                             str(tmp_path / "absent")], check=False, capture_output=True,
                            text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == f"crossnet: error: {tmp_path / 'absent'}: no such file or folder"


def test_unknown_options_and_bad_values_are_usage_errors(capsys):
    assert main(["evaluate", "x", "--frobnicate"]) == 2
    assert "No such option" in capsys.readouterr().err
    assert main(["synth", "out", "--size", "320by240"]) == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err


def test_parsers():
    assert parse_size("320x240") == (320, 240)
    assert parse_size(None) is None
    assert parse_strides("1,4,8") == (1, 4, 8)
    for bad in ("0,1", "4,1", "1,1", "a"):
        with pytest.raises(Exception, match="strides|integers"):
            parse_strides(bad)


def test_flow_command_recovers_a_known_shift(tmp_path):
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (90, 120, 3)).astype(np.float32), (0, 0), 2)
    texture = np.clip((texture - 127) * 4 + 127, 0, 255).astype(np.uint8)
    shifted = np.roll(texture, shift=(-2, 3), axis=(0, 1))  # content moves +3 in x, -2 in y
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    cv2.imwrite(str(first), texture)
    cv2.imwrite(str(second), shifted)
    out = tmp_path / "ab.flo"
    assert main(["flow", str(first), str(second), "--backend", "dis-medium", "--out", str(out),
                 "--png", str(tmp_path / "ab.png")]) == 0
    flow = read_flo(out)[:, 15:-15, 15:-15]
    assert np.median(flow[0]) == pytest.approx(3.0, abs=0.1)
    assert np.median(flow[1]) == pytest.approx(-2.0, abs=0.1)
    assert cv2.imread(str(tmp_path / "ab.png")).shape == (90, 120, 3)


def test_flow_command_rejects_images_of_different_sizes(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((10, 12, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "b.png"), np.zeros((10, 14, 3), np.uint8))
    assert main(["flow", str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                 "--out", str(tmp_path / "x.flo")]) == 1
    assert "differs" in capsys.readouterr().err


def test_synth_then_evaluate_end_to_end(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["synth", str(out), "--scenes", "2", "--frames", "30", "--size", "80x60",
                 "--seed", "4", "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["scene_000", "scene_001"]
    assert main(["evaluate", str(out), "--method", "mog2", "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "scene_000" in table and "scene_001" in table and "mean of 2 scenes" in table


def test_threads_option_sets_torch_and_opencv_threads():
    import cv2
    import torch

    before = (torch.get_num_threads(), cv2.getNumThreads())
    try:
        assert main(["--threads", "1", "synth", "--help"]) == 0
        assert torch.get_num_threads() == 1 and cv2.getNumThreads() == 1
        assert main(["--threads", "0", "synth", "--help"]) == 2  # a usage error
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


def test_train_refuses_to_align_a_median_background_before_touching_anything(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path), "--split", str(tmp_path / "split.json"),
                 "--out", str(out), "--align-background", "--background-estimator",
                 "median"]) == 1
    assert "align_background needs" in capsys.readouterr().err
    assert not out.exists()
