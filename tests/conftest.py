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
