"""One live training per work dir: a second one would overwrite the first's checkpoints.

The lock is an ``fcntl.flock`` on ``<work_dir>/train.lock``, held until the process
ends. The kernel drops it when the process dies, however it dies, so the lock of a
killed run never blocks its ``--resume``; the file only says who holds it.
"""
import datetime
import fcntl
import os
import os.path as osp
import shlex
import socket
import sys
from typing import IO, List, Optional

LOCK_NAME = 'train.lock'
_held: List[IO] = []  # open for the life of the process: closing the file drops the lock


def launch_rank() -> int:
    """This process's rank as the launcher set it (torchrun, Slurm, MPI); 0 alone."""
    for name in ('RANK', 'SLURM_PROCID', 'OMPI_COMM_WORLD_RANK'):
        if os.environ.get(name, '').isdigit():
            return int(os.environ[name])
    return 0


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
    path = osp.join(work_dir, LOCK_NAME)
    f = open(path, 'a+')
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or 'a process that has not written its name yet'
        f.close()
        raise RuntimeError(f'{work_dir} is in use by another training ({holder}); two runs '
                           'in one work dir overwrite each other\'s checkpoints. Wait for it '
                           'to end, stop it, or pass another --work-dir') from None
    f.seek(0)
    f.truncate()
    started = datetime.datetime.now().isoformat(timespec='seconds')
    f.write(f'pid {os.getpid()} on {socket.gethostname()}, started {started}: '
            f'{shlex.join([sys.executable] + sys.argv)}\n')
    f.flush()
    _held.append(f)
    return path
