"""Writing files so that a reader sees the old file or the complete new one, never a part:
written to ``<path>.<pid>.tmp``, flushed and renamed onto ``path`` (a link is replaced)."""
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

    ``with atomic_output('out.pth') as tmp: torch.save(obj, tmp)``. A failed write leaves
    ``path`` as it was and raises an ``OSError`` (its errno kept) naming ``path``.

    Args:
        path (str): The file to write; its folder is created if missing.
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
    """Write ``data``, the complete new content of ``path``, through :func:`atomic_output`."""
    atomic_write_files({path: data})


def atomic_write_files(contents: Mapping[str, bytes]) -> None:
    """Write several files (path -> complete new content) through :func:`atomic_output`
    together: a failed write leaves every one of them as it was."""
    with contextlib.ExitStack() as stack:
        temps = {path: stack.enter_context(atomic_output(path)) for path in contents}
        for path, tmp in temps.items():
            with open(tmp, 'wb') as f:
                f.write(contents[path])


def atomic_write_image(path: str, rgb: np.ndarray) -> None:
    """Encode an ``(H, W, 3)`` uint8 RGB image in the format of ``path``'s extension
    (``OSError`` if it has none) and write it atomically."""
    ok, encoded = cv2.imencode(osp.splitext(path)[1], np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise OSError(f'Could not encode an image for {path} (unknown extension?)')
    atomic_write_bytes(path, encoded.tobytes())


def remove_stale_temp_files(folder: str) -> List[str]:
    """Remove (and return) the temporary files that killed writers left in ``folder`` (not
    its subfolders); a file whose writer, the process id in its name, still runs stays."""
    removed = []
    for name in sorted(os.listdir(folder)) if osp.isdir(folder) else []:
        match, path = TEMP_NAME.match(name), osp.join(folder, name)
        if match is None or not osp.isfile(path):
            continue
        if int(match['pid']) == os.getpid() or not process_alive(int(match['pid'])):
            os.remove(path)
            removed.append(path)
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True
