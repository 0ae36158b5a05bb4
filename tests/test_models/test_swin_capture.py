"""SPM-Swin's branch-free padding and window attention against mmdet's own
modules, which they stand in for."""
import copy

import pytest
import torch
from mmdet.models.backbones.swin import ShiftWindowMSA
from mmdet.models.layers.transformer.utils import AdaptivePadding

from mmspm import SPMSwinTransformer
from mmspm.models.swin_capture import BranchFreeShiftWindowMSA, CornerPadding
from tests.utils import FLOAT32

# Multiples of the window (7) and of the patch (4), odd sizes, a map smaller
# than one window, and one of several windows with padding.
SIZES = [(7, 7), (14, 21), (9, 13), (3, 5), (25, 33)]


@pytest.mark.parametrize('shift', [0, 3])
@pytest.mark.parametrize('hw', SIZES)
def test_window_attention_equals_mmdets(shift, hw):
    torch.manual_seed(0)
    theirs = ShiftWindowMSA(embed_dims=32, num_heads=2, window_size=7, shift_size=shift)
    torch.nn.init.normal_(theirs.w_msa.relative_position_bias_table)  # zeros at construction
    ours = copy.deepcopy(theirs)
    ours.__class__ = BranchFreeShiftWindowMSA
    query = torch.randn(2, hw[0] * hw[1], 32)
    torch.testing.assert_close(ours(query, hw), theirs(query, hw), **FLOAT32)


@pytest.mark.parametrize('hw', [(8, 12), (9, 13), (1, 3), (224, 225)])
def test_corner_padding_equals_mmdets(hw):
    x = torch.randn(1, 3, *hw)
    theirs = AdaptivePadding(kernel_size=4, stride=4, padding='corner')
    assert torch.equal(CornerPadding((4, 4))(x), theirs(x))


def test_spm_swin_equals_itself_with_mmdets_layers():
    """The whole backbone, with the branch-free layers and with mmdet's put
    back: same parameter names and outputs at sizes with and without
    padding."""
    torch.manual_seed(0)
    ours = SPMSwinTransformer(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
                              drop_path_rate=0.)
    ours.init_weights()
    ours.eval()
    assert isinstance(ours.patch_embed.adap_padding, CornerPadding)
    theirs = copy.deepcopy(ours)
    theirs.patch_embed.adap_padding = AdaptivePadding(kernel_size=4, stride=4, padding='corner')
    for stage in theirs.stages:
        for block in stage.blocks:
            assert type(block.attn) is BranchFreeShiftWindowMSA
            block.attn.__class__ = ShiftWindowMSA
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for hw in [(64, 96), (97, 65), (231, 229)]:
        x = torch.randn(1, 3, *hw)
        with torch.no_grad():
            for o, t in zip(ours(x), theirs(x)):
                torch.testing.assert_close(o, t, **FLOAT32)
