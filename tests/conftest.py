import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmspm.checkpoint import split_checkpoint
from tests.reference import RefSPMPVT


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randomize_norm_stats(model: torch.nn.Module) -> None:
    """BatchNorm running stats/affine away from identity so eval mode is tested."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
        if isinstance(m, torch.nn.LayerNorm):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def reference_model(arch: str = 'tiny') -> RefSPMPVT:
    ref = RefSPMPVT(arch)
    randomize_norm_stats(ref)
    return ref.eval()


def backbone_state(ref: RefSPMPVT) -> dict:
    return split_checkpoint(ref.state_dict())[0]


ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.fixture(scope='session')
def demo_data(tmp_path_factory):
    """A small copy of the embedded demo data, made by the real generator."""
    out = tmp_path_factory.mktemp('demo_data')
    subprocess.run([sys.executable, 'tools/make_demo_data.py', '--out', str(out),
                    '--num-train', '8', '--num-val', '4'], cwd=ROOT, check=True)
    return out
