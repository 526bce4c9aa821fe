"""One live training per work dir: an ``fcntl.flock``, which dies with its process, or an
``O_EXCL`` file where flock fails or holds within one node only (docs/reliability.md)."""
import atexit
import contextlib
import datetime
import fcntl
import logging
import os
import os.path as osp
import re
import shlex
import socket
import sys
from pathlib import Path
from typing import IO, List, Optional

from mmengine.logging import print_log

from ..utils.atomic_write import process_alive

LOCK_NAME = 'train.lock'
OWNER_NAME = 'train.lock.owner'
_held: List[IO] = []  # open for the life of the process: closing the file drops the lock
_NFS_LOCAL = ('local_lock=flock', 'local_lock=all')
# Mount options under which flock holds within one node only.
NODE_LOCAL_FLOCK = {'nfs': _NFS_LOCAL, 'nfs4': _NFS_LOCAL, 'lustre': ('localflock', )}


def launch_rank() -> int:
    """This process's rank as the launcher set it (torchrun, Slurm, MPI); 0 alone."""
    for name in ('RANK', 'SLURM_PROCID', 'OMPI_COMM_WORLD_RANK'):
        if os.environ.get(name, '').isdigit():
            return int(os.environ[name])
    return 0


def node_local_flock(path: str, mounts: str = '/proc/mounts') -> Optional[str]:
    """The mount of ``path``, as ``'<fs type> <options>'``, if ``flock`` there holds
    within this node only; None otherwise (or where ``mounts`` cannot be read)."""
    try:
        with open(mounts) as f:
            table = [line.split() for line in f]
    except OSError:
        return None
    path = osp.realpath(path).rstrip('/') + '/'
    holding = [fields for fields in table if len(fields) >= 4
               and path.startswith(fields[1].replace('\\040', ' ').rstrip('/') + '/')]
    if not holding:
        return None
    # the longest mount point; of one mounted twice, the later mount
    fs_type, options = max(reversed(holding), key=lambda fields: len(fields[1]))[2:4]
    if any(option in options.split(',') for option in NODE_LOCAL_FLOCK.get(fs_type, ())):
        return f'{fs_type} {options}'
    return None


def holder_line() -> str:
    """Who holds a lock: this process's id, host, start time and command line."""
    started = datetime.datetime.now().isoformat(timespec='seconds')
    return (f'pid {os.getpid()} on {socket.gethostname()}, started {started}: '
            f'{shlex.join([sys.executable] + sys.argv)}\n')


def in_use(work_dir: str, holder: str) -> RuntimeError:
    return RuntimeError(f'{work_dir} is in use by another training ({holder}); two runs '
                        'in one work dir overwrite each other\'s checkpoints. Wait for it '
                        'to end, stop it, or pass another --work-dir')


def lock_with_owner_file(work_dir: str) -> str:
    """Take the work dir's lock as a file created with ``O_EXCL`` (atomic across the nodes
    of NFS v3+ and Lustre), removed at exit. One of a dead process of this host is taken
    over; one of a live process, or of another host, is refused (``RuntimeError``)."""
    path = osp.join(work_dir, OWNER_NAME)
    line = holder_line()
    while True:
        try:
            with open(path, 'x') as f:  # O_EXCL
                f.write(line)
        except FileExistsError:
            try:
                holder = Path(path).read_text().strip()
            except FileNotFoundError:  # removed meanwhile by its owner: try again
                continue
            found = re.match(r'pid (\d+) on (\S+),', holder)
            if found is None:
                raise RuntimeError(f'{path} exists but does not name its owner ({holder!r}); '
                                   'if no training uses this work dir, delete it') from None
            pid, host = int(found.group(1)), found.group(2)
            if host != socket.gethostname():
                raise RuntimeError(
                    f'{work_dir} is locked by a training on host {host} ({holder}); two runs '
                    f'in one work dir overwrite each other\'s checkpoints. If it no longer '
                    f'runs there (killed, node lost), delete {path} and start again; or pass '
                    'another --work-dir') from None
            if process_alive(pid):
                raise in_use(work_dir, holder) from None
            print_log(f'{path}: its process {pid} on this host is gone (killed?); taking '
                      'the lock over', logger='current', level=logging.WARNING)
            os.remove(path)
            continue
        atexit.register(release_owner_file, path, line)
        return path


def release_owner_file(path: str, line: str) -> None:
    """Remove the lock file at ``path`` if it is still this process's (holds ``line``)."""
    with contextlib.suppress(FileNotFoundError):
        if Path(path).read_text() == line:
            os.remove(path)


def lock_work_dir(work_dir: str) -> Optional[str]:
    """Take the work dir's lock until the process ends and return the lock file's path, in
    rank 0 (the others return None); ``RuntimeError`` naming the holder if one lives.

    Args:
        work_dir (str): The run's work dir (created if missing).
    """
    if launch_rank() != 0:
        return None
    os.makedirs(work_dir, exist_ok=True)
    local = node_local_flock(work_dir)
    why = local and f'is on a mount whose flock holds within one node only ({local})'
    if not why:
        f = open(osp.join(work_dir, LOCK_NAME), 'a+')
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or 'a process that has not written its name yet'
            f.close()
            raise in_use(work_dir, holder) from None
        except OSError as error:  # e.g. ENOSYS: Lustre mounted without -o flock
            f.close()
            why = f'is on a file system that does not support flock ({error})'
        else:
            f.truncate(0)  # in append mode, the write goes to the (new) end
            f.write(holder_line())
            f.flush()
            _held.append(f)
            return f.name
    print_log(f'{work_dir} {why}: locking it with {OWNER_NAME} instead', logger='current',
              level=logging.WARNING)
    return lock_with_owner_file(work_dir)
