import subprocess
import sys

import pytest
import torch

from tests.utils import ROOT, reference_model


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


@pytest.fixture(scope='module')
def ref_tiny():
    """The naive reference SPM-PVT-T, norms away from identity, in eval mode."""
    torch.manual_seed(0)
    return reference_model('tiny')


@pytest.fixture(scope='module')
def ref_file(ref_tiny, tmp_path_factory):
    """ref_tiny saved as the authors save checkpoints (under 'model')."""
    path = tmp_path_factory.mktemp('ref') / 'spm_pvt_tiny_ref.pth'
    torch.save({'model': ref_tiny.state_dict()}, path)
    return path
