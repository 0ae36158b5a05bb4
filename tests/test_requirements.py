"""requirements/check_torch.py, the gate of `make install OWN_TORCH=1`: it
pins the environment's torch/torchvision and refuses versions mmspm does not
support, naming the version it found (stand-in torch packages play the
environment's)."""
import os
import subprocess
import sys

import pytest
import torch
import torchvision

from tests.utils import ROOT


def check(pythonpath: str = '') -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=pythonpath)
    return subprocess.run([sys.executable, 'requirements/check_torch.py'], cwd=ROOT, env=env,
                          capture_output=True, text=True)


def fake_packages(tmp_path, torch_source: str):
    for name, source in (('torch', torch_source), ('torchvision', "__version__ = '0.1.0'")):
        (tmp_path / name).mkdir()
        (tmp_path / name / '__init__.py').write_text(source)
    return str(tmp_path)


def test_pins_the_installed_torch():
    proc = check()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [f'torch=={torch.__version__}',
                                   f'torchvision=={torchvision.__version__}']


@pytest.mark.parametrize('version', ['2.3.1', '2.14.0+cu130', '1.13.1'])
def test_refuses_unsupported_versions(tmp_path, version):
    proc = check(fake_packages(tmp_path, f'__version__ = {version!r}'))
    assert proc.returncode != 0 and proc.stdout == ''
    assert f'torch {version} is not supported' in proc.stderr
    assert '2.4 to 2.13' in proc.stderr


def test_accepts_the_oldest_supported(tmp_path):
    proc = check(fake_packages(tmp_path, "__version__ = '2.4.0+cu121'"))
    assert proc.returncode == 0 and 'torch==2.4.0+cu121' in proc.stdout


def test_names_a_missing_torch(tmp_path):
    proc = check(fake_packages(tmp_path, "raise ModuleNotFoundError('no torch', name='torch')"))
    assert proc.returncode != 0 and 'has no torch' in proc.stderr
