"""The work-dir lock where flock fails or holds within one node only (Lustre, NFS).

The flock path itself, two real processes: tests/tools/test_reliability_e2e.py.
"""
import errno
import os
import socket
import subprocess
import sys

import pytest

from dinolora_mmseg.engine import work_dir_lock
from dinolora_mmseg.engine.work_dir_lock import OWNER_NAME, lock_work_dir


@pytest.fixture
def no_flock(monkeypatch):
    """A file system that refuses flock, as Lustre mounted without ``-o flock`` does."""
    def flock(f, operation):
        raise OSError(errno.ENOSYS, 'Function not implemented')
    monkeypatch.setattr(work_dir_lock.fcntl, 'flock', flock)
    monkeypatch.setattr(work_dir_lock, 'node_local_flock', lambda path: None)
    monkeypatch.delenv('RANK', raising=False)
    logged = []
    monkeypatch.setattr(work_dir_lock, 'print_log', lambda msg, **kwargs: logged.append(msg))
    released = []
    register = work_dir_lock.atexit.register
    monkeypatch.setattr(work_dir_lock.atexit, 'register', lambda f, *args: released.append(
        (f, *args)) if f is work_dir_lock.release_owner_file else register(f, *args))
    return logged, released


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, '-c', 'pass'])
    child.wait()
    return child.pid


def test_without_flock_an_owner_file_locks_the_work_dir(no_flock, tmp_path):
    logged, released = no_flock
    path = lock_work_dir(str(tmp_path))
    assert path == str(tmp_path / OWNER_NAME)
    assert 'does not support flock ([Errno 38] Function not implemented)' in logged[0]
    content = (tmp_path / OWNER_NAME).read_text()
    assert content.startswith(f'pid {os.getpid()} on {socket.gethostname()}, started ')
    with pytest.raises(RuntimeError, match=rf'is in use by another training \(pid '
                       rf'{os.getpid()} on {socket.gethostname()}'):
        lock_work_dir(str(tmp_path))  # this process is alive: the lock holds
    (release, *args), = released
    release(*args)  # what runs at exit
    assert not (tmp_path / OWNER_NAME).exists()


def test_the_owner_file_of_a_dead_process_of_this_host_is_taken_over(no_flock, tmp_path):
    logged, _ = no_flock
    pid = dead_pid()
    (tmp_path / OWNER_NAME).write_text(f'pid {pid} on {socket.gethostname()}, started x: y\n')
    lock_work_dir(str(tmp_path))
    assert f'its process {pid} on this host is gone' in logged[-1]
    assert (tmp_path / OWNER_NAME).read_text().startswith(f'pid {os.getpid()} on ')


def test_the_owner_file_of_another_host_is_refused_with_how_to_remove_it(no_flock, tmp_path):
    owner = tmp_path / OWNER_NAME
    owner.write_text('pid 4242 on gpu-node-17, started x: y\n')
    with pytest.raises(RuntimeError, match=rf'locked by a training on host gpu-node-17 .*delete '
                       rf'{owner} and start again'):
        lock_work_dir(str(tmp_path))
    assert owner.read_text().startswith('pid 4242 on gpu-node-17')


def test_release_leaves_a_file_another_process_took_over(tmp_path):
    path = tmp_path / OWNER_NAME
    path.write_text('pid 1 on other, started x: y\n')
    work_dir_lock.release_owner_file(str(path), 'pid 2 on here, started x: y\n')
    assert path.exists()


@pytest.mark.parametrize('options, node_local', [
    ('rw,vers=4.2,local_lock=none,addr=10.0.0.1', False),
    ('rw,vers=3,local_lock=flock,addr=10.0.0.1', True),
])
def test_nfs_with_node_local_flock_is_recognised(tmp_path, options, node_local):
    work = tmp_path / 'mnt' / 'work'
    work.mkdir(parents=True)
    mounts = tmp_path / 'mounts'
    mounts.write_text(f'/dev/sda1 / ext4 rw 0 0\nserver:/export {tmp_path / "mnt"} nfs '
                      f'{options} 0 0\n')
    found = work_dir_lock.node_local_flock(str(work), str(mounts))
    assert (found == f'nfs {options}') if node_local else found is None
    assert work_dir_lock.node_local_flock(str(tmp_path), str(mounts)) is None  # on ext4


def test_on_a_node_local_flock_mount_the_owner_file_is_used(no_flock, monkeypatch, tmp_path):
    logged, _ = no_flock
    monkeypatch.setattr(work_dir_lock, 'node_local_flock',
                        lambda path: 'nfs rw,local_lock=flock')
    assert lock_work_dir(str(tmp_path)) == str(tmp_path / OWNER_NAME)
    assert 'within one node only (nfs rw,local_lock=flock)' in logged[0]
