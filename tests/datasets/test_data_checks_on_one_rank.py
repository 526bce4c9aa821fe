"""The data checks of a launched job run on global rank 0 only; every rank gets the
verdict (2 gloo processes on loopback, as tools/train.py and tools/test.py make them)."""
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from tests.helpers import ROOT, free_port, make_demo_voc

RANK_SCRIPT = """
import builtins, json, sys
from mmengine.config import Config
from dinolora_mmseg.datasets.data_checks import check_dataloaders
from dinolora_mmseg.engine.launch import prepare_launch

opened = []
real_open = builtins.open
def spy(file, *args, **kwargs):
    if 'SegmentationClass' in str(file):
        opened.append(str(file))
    return real_open(file, *args, **kwargs)
builtins.open = spy

cfg = Config.fromfile('configs/dinov2_lora_voc.py')
cfg.train_dataloader.dataset.data_root = sys.argv[1]
prepare_launch(cfg, 'pytorch')
try:
    verdict = check_dataloaders(cfg, ['train_dataloader'])
except ValueError as error:
    verdict = f'ValueError: {error}'
print('VERDICT ' + json.dumps(dict(verdict=verdict, label_opens=len(opened))), flush=True)
"""


def run_two_ranks(data_root):
    """(verdict, label files opened) of each of 2 processes checking ``data_root``."""
    port = str(free_port())
    ranks = [subprocess.Popen(
        [sys.executable, '-c', RANK_SCRIPT, str(data_root)], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE='2',
                 MASTER_ADDR='127.0.0.1', MASTER_PORT=port, OMP_NUM_THREADS='1'))
        for rank in range(2)]
    results = []
    for process in ranks:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        line = [line for line in out.splitlines() if line.startswith('VERDICT ')][-1]
        results.append(json.loads(line[len('VERDICT '):]))
    return results


@pytest.fixture(scope='module')
def voc(tmp_path_factory):
    return make_demo_voc(tmp_path_factory.mktemp('ranks'), num_train=3, num_val=1)


def test_only_rank_0_opens_the_label_files_and_both_get_the_counts(voc):
    first, second = run_two_ranks(voc)
    assert first['label_opens'] >= 3  # every label map of the train split, on rank 0
    assert second['label_opens'] == 0
    assert first['verdict'] == second['verdict'] == {'train_dataloader': 3}


def test_a_bad_label_stops_every_rank_with_the_same_message(voc):
    name = (voc / 'ImageSets/Segmentation/train.txt').read_text().split()[0]
    label = voc / 'SegmentationClass' / f'{name}.png'
    bad = Image.open(label).copy()
    bad.paste(30, box=(0, 0, 2, 2))  # palette index 30: no VOC class
    original = label.read_bytes()
    bad.save(label)
    try:
        first, second = run_two_ranks(voc)
    finally:
        label.write_bytes(original)
    assert first['verdict'].startswith('ValueError: train_dataloader.dataset: 1 of 3 samples')
    assert f'{label}: label values [30]' in first['verdict']
    assert second['verdict'] == first['verdict']
    assert second['label_opens'] == 0
