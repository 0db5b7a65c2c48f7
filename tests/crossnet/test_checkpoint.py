import pickle

import pytest
import torch

from crossnet.checkpoint import load_checkpoint, save_checkpoint


def test_round_trip_and_atomic_write(tmp_path):
    path = tmp_path / "model.pt"
    state = {"weight": torch.arange(4.0)}
    save_checkpoint(path, {"model": state, "model_config": {"widths": [8, 16]}, "epoch": 3})
    loaded = load_checkpoint(path)
    torch.testing.assert_close(loaded["model"]["weight"], state["weight"])
    assert loaded["epoch"] == 3 and loaded["format"] == "crossnet-hofam"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary left behind


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_foreign_and_unsafe_files_are_rejected(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="notes.pt: not a readable checkpoint"):
        load_checkpoint(text)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(ValueError, match="not a crossnet segmentation checkpoint"):
        load_checkpoint(other)
    unsafe = tmp_path / "unsafe.pt"
    with open(unsafe, "wb") as handle:
        pickle.dump({"format": "crossnet-hofam", "payload": _Payload()}, handle, protocol=2)
    with pytest.raises(ValueError, match="unsafe.pt: refused: the file would call print on loading"):
        load_checkpoint(unsafe)
    assert "this must never run" not in capsys.readouterr().out
    old = tmp_path / "old.pt"
    torch.save({"format": "crossnet-hofam", "format_version": 99, "model": {},
                "model_config": {}}, old)
    with pytest.raises(ValueError, match="format version 99"):
        load_checkpoint(old)
