"""The files of each sample checked as its pipeline will read them, and their sizes."""
import multiprocessing
import os
from typing import List, NamedTuple, Optional, Sequence, Tuple

from .image_file import ImageLoader, UnreadableFile, file_problem, image_size
from .label_file import LabelRules, label_stats

PARALLEL_FROM = 500  # samples; fewer are checked faster than worker processes start


class SampleReport(NamedTuple):
    problems: Tuple[str, ...]  # '<path>: what is wrong'
    labelled: Optional[int]  # labelled pixels; None if the label map was not read


def check_sample(img_path: str, seg_path: Optional[str], loader: Optional[ImageLoader],
                 rules: Optional[LabelRules]) -> SampleReport:
    """Check an image and its label map (if any); without ``loader`` an image is checked
    for being empty or truncated only, without ``rules`` the label map is not read."""
    problems, size, stats = [], None, None
    try:
        if loader is None:
            problem = file_problem(img_path)
            if problem:
                raise UnreadableFile(problem)
        else:
            size = image_size(img_path, loader)
    except UnreadableFile as problem:
        problems.append(f'{img_path}: {problem}')
    if rules is not None and seg_path:
        try:
            stats = label_stats(seg_path, rules)
        except UnreadableFile as problem:
            problems.append(f'{seg_path}: {problem}')
    if size and stats and (size.height, size.width) != (stats.height, stats.width):
        turned = ' after its EXIF orientation' if size.exif_turned else ''
        problems.append(f'{img_path}: image is {size.width}x{size.height}{turned} but its '
                        f'label {seg_path} is {stats.width}x{stats.height}')
    return SampleReport(tuple(problems), None if stats is None else stats.labelled)


def check_samples(paths: Sequence[Tuple[str, Optional[str]]], loader: Optional[ImageLoader],
                  rules: Optional[LabelRules], workers: Optional[int] = None
                  ) -> List[SampleReport]:
    """:func:`check_sample` for each ``(img_path, seg_path)`` in ``paths``, in order.

    Args:
        workers (int, optional): Processes to check in from :data:`PARALLEL_FROM` samples
            on; default the CPUs this process may use.
    """
    args = [(img, seg, loader, rules) for img, seg in paths]
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (
            os.cpu_count() or 1)
    if workers < 2 or len(args) < PARALLEL_FROM:
        return [check_sample(*arg) for arg in args]
    with multiprocessing.get_context('fork').Pool(workers) as pool:
        return pool.starmap(check_sample, args,
                            chunksize=max(1, min(64, len(args) // (4 * workers))))
