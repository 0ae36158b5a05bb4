import subprocess
import sys

import pytest
import torch

from tests.utils import ROOT


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope='session')
def demo_data(tmp_path_factory):
    """A small copy of the embedded demo data, made by the real generator."""
    out = tmp_path_factory.mktemp('demo_data')
    subprocess.run([sys.executable, 'tools/make_demo_data.py', '--out', str(out),
                    '--num-train', '8', '--num-val', '4'], cwd=ROOT, check=True)
    return out
