"""nd_det.utils.atomic_file: all-or-nothing writes, the permissions of a plain open(), and a
check on the complete file before it takes its name."""

import os
import stat

import pytest
import torch

from nd_det.utils.atomic_file import atomic_torch_save, atomic_write, atomic_write_json


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_mode_a_plain_open_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_torch_save({"w": torch.ones(2)}, str(tmp_path / "a.pth"))
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.pth") == _mode(tmp_path / "plain") == 0o666 & ~umask
    assert torch.equal(torch.load(tmp_path / "a.pth", weights_only=True)["w"], torch.ones(2))


def test_a_failing_check_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "r.json"
    atomic_write_json({"v": 1}, str(path))
    seen = []

    def reject(staged):
        seen.append(open(staged, "rb").read())
        raise ValueError("round trip differs")

    with pytest.raises(ValueError, match="round trip differs"):
        atomic_write(str(path), lambda f: f.write(b"new content"), verify=reject)
    assert seen == [b"new content"]  # the check saw the whole new file
    assert path.read_text() == '{\n "v": 1\n}\n'
    assert sorted(os.listdir(tmp_path)) == ["r.json"]


def test_a_passing_check_lets_the_file_take_its_name(tmp_path):
    path = tmp_path / "sub" / "m.bin"
    atomic_write(str(path), lambda f: f.write(b"abc"), verify=lambda staged: None)
    assert path.read_bytes() == b"abc"
    assert os.listdir(tmp_path / "sub") == ["m.bin"]
