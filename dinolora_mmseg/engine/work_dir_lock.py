"""One live training per work dir: a second one would overwrite the first's checkpoints.

The lock is an ``fcntl.flock`` on ``<work_dir>/train.lock``, held until the process
ends. The kernel drops it when the process dies, however it dies, so the lock of a
killed run never blocks its ``--resume``; the file only says who holds it.

Cluster file systems do not always keep that promise: Lustre mounted without
``-o flock`` refuses ``flock`` (``ENOSYS``), and NFS mounted with ``local_lock=flock``
(or Lustre with ``-o localflock``) grants it within one node only. There the lock is
``<work_dir>/train.lock.owner`` instead, created with ``O_EXCL`` (which NFS v3+ and
Lustre make atomic across nodes), naming the host and process id, and removed at exit.
One left behind by a killed run is taken over when its process is gone from this host;
one of another host is refused, naming the host and the file to delete.
"""
import atexit
import datetime
import fcntl
import logging
import os
import os.path as osp
import re
import shlex
import socket
import sys
from typing import IO, List, Optional

from mmengine.logging import print_log

LOCK_NAME = 'train.lock'
OWNER_NAME = 'train.lock.owner'
_held: List[IO] = []  # open for the life of the process: closing the file drops the lock
# Mount options under which flock holds within one node only.
NODE_LOCAL_FLOCK = {'nfs': ('local_lock=flock', 'local_lock=all'),
                    'nfs4': ('local_lock=flock', 'local_lock=all'),
                    'lustre': ('localflock', )}


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
    path = osp.realpath(path)
    best = None
    for fields in table:
        if len(fields) < 4:
            continue
        point = fields[1].replace('\\040', ' ')
        if (path == point or path.startswith(point.rstrip('/') + '/')) and (
                best is None or len(point) >= len(best[1])):
            best = fields
    if best is None:
        return None
    fs_type, options = best[2], best[3].split(',')
    if any(option in options for option in NODE_LOCAL_FLOCK.get(fs_type, ())):
        return f'{fs_type} {best[3]}'
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


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_with_owner_file(work_dir: str) -> str:
    """Take the work dir's lock as a file created with ``O_EXCL``, removed at exit.

    Raises:
        RuntimeError: The file names a live process of this host, or a process of
            another host (whose liveness cannot be checked from here).
    """
    path = osp.join(work_dir, OWNER_NAME)
    line = holder_line()
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                with open(path) as f:
                    holder = f.read().strip()
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
        with os.fdopen(fd, 'w') as f:
            f.write(line)
        atexit.register(release_owner_file, path, line)
        return path


def release_owner_file(path: str, line: str) -> None:
    """Remove the lock file at ``path`` if it is still this process's (holds ``line``)."""
    try:
        with open(path) as f:
            if f.read() != line:
                return
        os.remove(path)
    except FileNotFoundError:
        pass


def lock_work_dir(work_dir: str) -> Optional[str]:
    """Take the work dir's lock in rank 0; other ranks leave it to rank 0.

    Args:
        work_dir (str): The run's work dir (created if missing).

    Returns:
        str | None: The lock file's path, or None in ranks other than 0.

    Raises:
        RuntimeError: Another live process holds the lock; the message says which
            (process id, host, start time and command line).
    """
    if launch_rank() != 0:
        return None
    os.makedirs(work_dir, exist_ok=True)
    local = node_local_flock(work_dir)
    if local is not None:
        print_log(f'{work_dir} is on a mount whose flock holds within one node only '
                  f'({local}): locking it with {OWNER_NAME} instead', logger='current',
                  level=logging.WARNING)
        return lock_with_owner_file(work_dir)
    path = osp.join(work_dir, LOCK_NAME)
    f = open(path, 'a+')
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or 'a process that has not written its name yet'
        f.close()
        raise in_use(work_dir, holder) from None
    except OSError as error:  # e.g. ENOSYS: Lustre mounted without -o flock
        f.close()
        print_log(f'{work_dir}: this file system does not support flock ({error}); locking '
                  f'it with {OWNER_NAME} instead', logger='current', level=logging.WARNING)
        return lock_with_owner_file(work_dir)
    f.seek(0)
    f.truncate()
    f.write(holder_line())
    f.flush()
    _held.append(f)
    return path
