"""loopkit.atomic: a file is replaced whole or not at all, and a failed write leaves no trace."""

import os
import stat

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from loopkit import atomic


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_write_text_and_bytes(tmp_path):
    atomic.write_text(tmp_path / "a.txt", "héllo\n")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    atomic.write_text(tmp_path / "a.txt", "second", fsync=True)  # replaces an existing file
    assert (tmp_path / "a.txt").read_text() == "second"
    atomic.write_bytes(str(tmp_path / "b.bin"), b"\x00\xff")  # a str path too
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"
    assert names(tmp_path) == ["a.txt", "b.bin"]  # no temporary file left


@pytest.mark.parametrize("existing", [True, False])
def test_a_failed_write_leaves_the_target_and_no_temporary_file(tmp_path, existing):
    target = tmp_path / "out.json"
    if existing:
        target.write_text("old")

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with atomic.replacing(target) as tmp:
            assert tmp.parent == tmp_path and tmp != target and tmp.exists()
            tmp.write_text("half of the new")
            raise Boom
    assert names(tmp_path) == (["out.json"] if existing else [])
    if existing:
        assert target.read_text() == "old"


def test_an_interrupt_inside_the_block_is_cleaned_up_too(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic.replacing(tmp_path / "x.txt"):
            raise KeyboardInterrupt
    assert names(tmp_path) == []


def test_np_savez_to_the_temporary_path_keeps_the_name(tmp_path):
    """np.savez appends '.npz' to a path without it: the temporary path keeps the target's suffix."""
    target = tmp_path / "cache-v1.npz"
    with atomic.replacing(target) as tmp:
        assert tmp.suffix == ".npz"
        np.savez(tmp, x=np.arange(5))
    with np.load(target) as z:
        assert z["x"].tolist() == [0, 1, 2, 3, 4]
    assert names(tmp_path) == ["cache-v1.npz"]


def test_safetensors_to_the_temporary_path(tmp_path):
    target = tmp_path / "model.safetensors"
    with atomic.replacing(target, fsync=True) as tmp:
        save_file({"w": torch.ones(2, 3)}, tmp)
    assert load_file(target)["w"].shape == (2, 3)
    assert names(tmp_path) == ["model.safetensors"]


def test_temporary_files_are_unique_and_hidden(tmp_path):
    with atomic.replacing(tmp_path / "f.txt") as a, atomic.replacing(tmp_path / "f.txt") as b:
        assert a != b and a.name.startswith(".") and b.name.startswith(".")
        a.write_text("a")
        b.write_text("b")
    assert (tmp_path / "f.txt").read_text() == "a"  # the last to finish (the outer block) wins, whole
    assert names(tmp_path) == ["f.txt"]


def test_permissions_are_those_of_a_plain_open(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "a.txt", "x")
        (tmp_path / "b.txt").write_text("x")
    finally:
        os.umask(umask)
    mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o644


def test_files_that_belong_together_are_replaced_together_or_not_at_all(tmp_path, monkeypatch):
    """claims.json and claims.md: when the second cannot be written, the first keeps its old text too."""
    first, second = tmp_path / "a.json", tmp_path / "a.md"
    first.write_text("old json")
    second.write_text("old md")
    real_open = open

    def full_disk(file, mode="r", *args, **kwargs):
        if str(file).endswith(".md") and "w" in mode:
            raise OSError(28, "No space left on device")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full_disk)
    with pytest.raises(atomic.WriteError, match=r"cannot write .*a\.md: No space left on device"):
        atomic.write_texts({first: "new json", second: "new md"})
    monkeypatch.undo()
    assert (first.read_text(), second.read_text()) == ("old json", "old md")
    assert names(tmp_path) == ["a.json", "a.md"]
    atomic.write_texts({first: "new json", second: "new md"})
    assert (first.read_text(), second.read_text()) == ("new json", "new md")


@pytest.mark.parametrize("kind", ["fifo", "link", "folder"])
def test_a_target_that_is_not_a_regular_file_is_refused_and_kept(tmp_path, kind):
    target = tmp_path / "out.html"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "link":
        (tmp_path / "mine.html").write_text("mine")
        target.symlink_to(tmp_path / "mine.html")
    else:
        target.mkdir()
    with pytest.raises(atomic.WriteError, match=r"out\.html is a (pipe or socket|symbolic link|folder), not a regular"):
        atomic.write_text(target, "report")
    assert (target.is_symlink() if kind == "link" else target.is_dir() if kind == "folder" else stat.S_ISFIFO(
        os.lstat(target).st_mode))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary file left
