"""Writing files so that a reader sees the old file or the complete new one, never a part.

Every file is written to a temporary file next to it (``<path>.<pid>.tmp``), flushed
to the disk and renamed onto ``path``. A rename replaces a symbolic link at ``path``
itself, never the file it points to. A failed write (a full disk, a quota, an
interrupt) removes its temporary file and leaves ``path`` as it was; a temporary file
of a killed process is left behind and removed by :func:`remove_stale_temp_files`.
"""
import contextlib
import os
import os.path as osp
import re
from typing import Iterator, List, Mapping

import cv2
import numpy as np

TEMP_NAME = re.compile(r'^(?P<name>.+)\.(?P<pid>\d+)\.tmp$')


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[str]:
    """Give a temporary path to write ``path``'s new content to; move it onto ``path``.

    Usage::

        with atomic_output('out.pth') as tmp:
            torch.save(obj, tmp)

    Args:
        path (str): The file to write; its folder is created if missing.

    Raises:
        OSError: Writing failed; the message names ``path`` (the errno, e.g. ENOSPC,
            is kept) and ``path`` is unchanged.
    """
    path = os.fspath(path)
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tmp = f'{path}.{os.getpid()}.tmp'
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(error, OSError) and error.errno is not None:
            raise OSError(error.errno, f'{error.strerror} while writing {path} '
                          f'({path} was left as it was)', path) from error
        raise
    with contextlib.suppress(OSError):  # the rename itself reaches the disk
        _fsync(osp.dirname(osp.abspath(path)))


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_output`.

    Args:
        path (str): The file to write.
        data (bytes): Its complete new content.
    """
    with atomic_output(path) as tmp, open(tmp, 'wb') as f:
        f.write(data)


def atomic_write_files(contents: Mapping[str, bytes]) -> None:
    """Write several files through :func:`atomic_output` together: a failed write
    leaves every one of them as it was.

    Args:
        contents (Mapping[str, bytes]): The complete new content of each path.
    """
    with contextlib.ExitStack() as stack:
        temps = {path: stack.enter_context(atomic_output(path)) for path in contents}
        for path, tmp in temps.items():
            with open(tmp, 'wb') as f:
                f.write(contents[path])


def atomic_write_image(path: str, rgb: np.ndarray) -> None:
    """Encode an RGB image in the format of ``path``'s extension and write it atomically.

    Args:
        path (str): The image file, e.g. ``out.png``.
        rgb (np.ndarray): ``(H, W, 3)`` uint8 RGB image.

    Raises:
        OSError: The image cannot be encoded in that format.
    """
    ok, encoded = cv2.imencode(osp.splitext(path)[1], np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise OSError(f'Could not encode an image for {path} (unknown extension?)')
    atomic_write_bytes(path, encoded.tobytes())


def remove_stale_temp_files(folder: str) -> List[str]:
    """Remove the temporary files that killed writers left in ``folder``.

    A file is left alone while its writer (the process id in its name) still runs.

    Args:
        folder (str): The folder to clean (not its subfolders).

    Returns:
        list[str]: The paths removed.
    """
    removed = []
    for name in sorted(os.listdir(folder)) if osp.isdir(folder) else []:
        match = TEMP_NAME.match(name)
        if match is None or not osp.isfile(osp.join(folder, name)):
            continue
        pid = int(match['pid'])
        if pid != os.getpid() and _is_running(pid):
            continue
        os.remove(osp.join(folder, name))
        removed.append(osp.join(folder, name))
    return removed


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True
