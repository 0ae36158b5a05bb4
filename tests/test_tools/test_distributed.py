"""Multi-process training/testing through mmengine's 'pytorch' launcher (gloo
on a CPU), and a run killed with SIGKILL that resumes to the same weights."""
import os
import os.path as osp
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from tests.utils import DET_CONFIG, ROOT, SEG_CONFIG, det_options, metric, run, seg_options

pytestmark = pytest.mark.slow


def free_port() -> str:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


def dist(script: str, *args: str) -> str:
    env = dict(os.environ, PORT=free_port(), PYTHON=sys.executable)
    proc = subprocess.run(['bash', script, *args], cwd=ROOT, capture_output=True,
                          text=True, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{script} {" ".join(args)} failed:\n{out[-4000:]}'
    return out


def test_dist_train_detection_two_processes(demo_data, tmp_path):
    out = dist('tools/dist_train.sh', DET_CONFIG, '2', '--work-dir', str(tmp_path),
               *det_options(demo_data), 'train_dataloader.batch_size=2')
    assert 'world_size: 2' in out or "'world_size': 2" in out or 'Distributed launcher: pytorch' in out
    # 8 images, 2 processes x batch 2: 2 iterations per epoch instead of 4
    assert 'Epoch(train) [1][2/2]' in out
    assert osp.isfile(tmp_path / 'epoch_1.pth')
    state = torch.load(tmp_path / 'epoch_1.pth')['state_dict']
    assert not any(k.startswith('module.') for k in state)
    assert 0.0 <= metric(out, 'coco/bbox_mAP') <= 1.0


@pytest.fixture(scope='module')
def seg_checkpoint(demo_data, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('seg_dist')
    run(sys.executable, 'tools/train.py', SEG_CONFIG, '--work-dir', str(work_dir),
        *seg_options(demo_data, 20))
    return work_dir / 'iter_20.pth'


def test_dist_test_matches_single_process(seg_checkpoint, demo_data, tmp_path):
    single = run(sys.executable, 'tools/test.py', SEG_CONFIG, str(seg_checkpoint),
                 '--work-dir', str(tmp_path / 'one'), *seg_options(demo_data, 20))
    double = dist('tools/dist_test.sh', SEG_CONFIG, str(seg_checkpoint), '2',
                  '--work-dir', str(tmp_path / 'two'), *seg_options(demo_data, 20))
    for name in ('mIoU', 'aAcc', 'mAcc'):
        assert metric(double, name) == metric(single, name), name


def deterministic_options(demo_data, iters: int) -> list[str]:
    return seg_options(demo_data, iters) + [
        'randomness.seed=0', 'randomness.deterministic=True',
        'default_hooks.checkpoint.interval=4',
        'default_hooks.checkpoint.max_keep_ckpts=100', 'train_cfg.val_interval=1000']


def test_sigkill_then_resume_gives_the_uninterrupted_weights(demo_data, tmp_path):
    """With dropout (decode head) and drop path (backbone) active: bitwise
    equal thanks to RNGStateHook."""
    iters = 12
    straight = tmp_path / 'straight'
    run(sys.executable, 'tools/train.py', SEG_CONFIG, '--work-dir', str(straight),
        *deterministic_options(demo_data, iters))

    killed = tmp_path / 'killed'
    cmd = [sys.executable, 'tools/train.py', SEG_CONFIG, '--work-dir', str(killed),
           *deterministic_options(demo_data, iters)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not osp.isfile(killed / 'iter_4.pth') and time.time() < deadline:
        assert proc.poll() is None, 'training ended before it could be killed'
        time.sleep(0.2)
    time.sleep(1.0)  # let it write the checkpoint completely... and go on
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not osp.isfile(killed / f'iter_{iters}.pth'), 'killed too late'
    before = {p: os.path.getsize(killed / p) for p in os.listdir(killed)
              if p.endswith('.pth')}

    out = run(sys.executable, 'tools/train.py', SEG_CONFIG, '--work-dir', str(killed),
              '--resume', *deterministic_options(demo_data, iters))
    assert re.search(r'resumed|Load checkpoint from', out, re.IGNORECASE)
    for name, size in before.items():  # nothing written before is lost
        assert osp.isfile(killed / name), name
    expected = torch.load(straight / f'iter_{iters}.pth')['state_dict']
    resumed = torch.load(killed / f'iter_{iters}.pth')['state_dict']
    assert expected.keys() == resumed.keys()
    for k in expected:
        torch.testing.assert_close(resumed[k], expected[k], rtol=0, atol=0, msg=k)

