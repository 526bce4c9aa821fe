import os
import subprocess
import sys

import pytest

from dinolora_mmseg.utils.atomic_write import (atomic_output, atomic_write_bytes,
                                               remove_stale_temp_files)


def test_a_link_is_replaced_not_its_target(tmp_path):
    target, link = tmp_path / 'precious.txt', tmp_path / 'last_checkpoint'
    target.write_text('keep me')
    link.symlink_to(target)
    atomic_write_bytes(str(link), b'iter_8.pth')
    assert target.read_text() == 'keep me'
    assert not link.is_symlink() and link.read_text() == 'iter_8.pth'


def test_a_failing_writer_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / 'out.pth'
    path.write_bytes(b'old')
    with pytest.raises(ValueError, match='writer failed'):
        with atomic_output(str(path)) as tmp:
            with open(tmp, 'wb') as f:
                f.write(b'half')
            raise ValueError('writer failed')
    assert path.read_bytes() == b'old' and os.listdir(tmp_path) == ['out.pth']


def test_temp_files_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                          capture_output=True, text=True, check=True).stdout.strip()
    live = os.getppid()
    for name in (f'iter_4.pth.{dead}.tmp', f'last_checkpoint.{live}.tmp', 'notes.tmp',
                 'iter_2.pth'):
        (tmp_path / name).write_text('x')
    assert remove_stale_temp_files(str(tmp_path)) == [str(tmp_path / f'iter_4.pth.{dead}.tmp')]
    assert sorted(os.listdir(tmp_path)) == sorted(
        ['iter_2.pth', f'last_checkpoint.{live}.tmp', 'notes.tmp'])
