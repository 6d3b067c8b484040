"""Output files: one check before any work (that creates a file, as root's os.access does not),
then written whole or not at all."""

import os
from pathlib import Path

import pytest

from skh2t.output_files import check_output_file, written_whole

UNCREATABLE = Path("/proc/skh2t-output-probe")  # no file can be created there, even by root


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_folder_where_no_file_can_be_created_fails_even_for_root():
    with pytest.raises(ValueError, match=rf"^Cannot write '{UNCREATABLE}': "):
        check_output_file(UNCREATABLE)


def test_the_checks_and_their_messages(tmp_path):
    assert check_output_file(tmp_path / "model.joblib") == tmp_path / "model.joblib"
    with pytest.raises(ValueError, match="is a directory; give a file name to write"):
        check_output_file(tmp_path)
    with pytest.raises(ValueError, match=r"The folder .* does not exist; create it first"):
        check_output_file(tmp_path / "missing" / "model.joblib")
    assert list(tmp_path.iterdir()) == []  # the probe is gone


def test_a_failed_write_leaves_no_file_and_the_old_one_as_it_was(tmp_path):
    target = tmp_path / "model.joblib"
    target.write_text("old")

    def half_write():
        with written_whole(target) as part:
            part.write_text("half")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        half_write()
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]
    with written_whole(target) as part:
        assert part.parent.parent == tmp_path
        assert part.name == target.name  # writers that read the format from it see the same
        part.write_text("new")
    assert target.read_text() == "new"
    assert list(tmp_path.iterdir()) == [target]


def test_a_written_file_has_the_permissions_of_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        with written_whole(tmp_path / "shared.npz") as part:
            part.write_bytes(b"x")
    finally:
        os.umask(previous)
    assert (tmp_path / "shared.npz").stat().st_mode & 0o777 == 0o644
