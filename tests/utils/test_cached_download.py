"""Downloads of pretrained weights: local rank 0 first, the others from its cache."""
import json
import os
import subprocess
import sys

import pytest

from dinolora_mmseg.utils import weights
from tests.helpers import ROOT, free_port

WORKER = """
import json, os, sys, time
import torch
import torch.distributed as dist
from dinolora_mmseg.utils.weights import cached_download

log = sys.argv[1]

def download(url, dst, *args, **kwargs):  # slow, so that a rank not waiting would come too
    with open(log, 'a') as f:
        f.write(os.environ['RANK'] + '\\n')
    time.sleep(1)
    torch.save({'w': torch.ones(2)}, dst)

torch.hub.download_url_to_file = download
dist.init_process_group('gloo')
path = cached_download('https://example.com/weights/w.pth')
print(json.dumps(dict(path=path, exists=os.path.isfile(path))), flush=True)
dist.destroy_process_group()
"""


def test_only_local_rank_0_downloads_and_the_others_read_its_file(tmp_path):
    script, log = tmp_path / 'worker.py', tmp_path / 'downloads.log'
    script.write_text(WORKER)
    port = str(free_port())
    # rank 1 names its local rank the slurm way (no LOCAL_RANK under srun)
    local = [dict(LOCAL_RANK='0'), dict(SLURM_LOCALID='1')]
    env = {k: v for k, v in os.environ.items()
           if k not in weights.LOCAL_RANK_VARIABLES}
    workers = [subprocess.Popen(
        [sys.executable, str(script), str(log)], cwd=ROOT, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(env, **local[rank], PYTHONPATH=ROOT, RANK=str(rank), WORLD_SIZE='2',
                 MASTER_ADDR='127.0.0.1', MASTER_PORT=port, TORCH_HOME=str(tmp_path / 'hub'),
                 OMP_NUM_THREADS='1')) for rank in range(2)]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-3000:]
    assert log.read_text().split() == ['0']
    results = [json.loads(output.strip().splitlines()[-1]) for output in outputs]
    assert results[0] == results[1] and results[0]['exists'] is True


@pytest.mark.parametrize('name', weights.LOCAL_RANK_VARIABLES)
def test_local_rank_from_torchrun_slurm_or_mpi(monkeypatch, name):
    for other in weights.LOCAL_RANK_VARIABLES:
        monkeypatch.delenv(other, raising=False)
    assert weights.local_rank() == 0
    monkeypatch.setenv(name, '3')
    assert weights.local_rank() == 3
