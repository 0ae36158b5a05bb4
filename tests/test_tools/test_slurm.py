"""tools/slurm_{train,test}.sh hand srun the partition, the task layout and
the tool's own arguments (a stand-in srun records what it was given)."""
import os
import subprocess

import pytest

from tests.utils import ROOT


@pytest.fixture
def srun(tmp_path):
    record = tmp_path / 'srun_args'
    fake = tmp_path / 'bin' / 'srun'
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f'{fake.parent}:{os.environ["PATH"]}', GPUS='16',
               SRUN_ARGS='--exclusive')

    def call(*args: str) -> list[str]:
        subprocess.run(['bash', *args], cwd=ROOT, env=env, check=True)
        return record.read_text().splitlines()
    return call


def test_slurm_train(srun):
    args = srun('tools/slurm_train.sh', 'gpu', 'job', 'CONFIG', 'WORK', '--resume')
    assert args[:8] == ['-p', 'gpu', '--job-name=job', '--gres=gpu:8', '--ntasks=16',
                        '--ntasks-per-node=8', '--cpus-per-task=5', '--kill-on-bad-exit=1']
    assert args[8] == '--exclusive'
    assert args[9:] == ['python', '-u', f'{ROOT}/tools/train.py', 'CONFIG', '--work-dir=WORK',
                        '--launcher=slurm', '--resume']


def test_slurm_test(srun):
    args = srun('tools/slurm_test.sh', 'gpu', 'job', 'CONFIG', 'CKPT', '--work-dir', 'W')
    assert args[4] == '--ntasks=16'
    assert args[9:] == ['python', '-u', f'{ROOT}/tools/test.py', 'CONFIG', 'CKPT',
                        '--launcher=slurm', '--work-dir', 'W']
