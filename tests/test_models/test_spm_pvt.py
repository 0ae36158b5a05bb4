"""SPMPVT backbone: shapes, reference equality, freezing, parameter counts."""
import pytest
import torch

from mmspm.models import ARCH_SETTINGS, SPMPVT
from tests.utils import backbone_state, reference_model

# docs/reference_model.md: reference classification models with a 1000-class head.
PARAMS_M = dict(tiny=14.03, small=25.29, medium=45.01, large=62.17)


@pytest.mark.parametrize('arch', list(PARAMS_M))
def test_parameter_count(arch):
    model = SPMPVT(arch, with_cls_token=True)
    head = torch.nn.Linear(512, 1000)
    total = sum(p.numel() for p in [*model.parameters(), *head.parameters()])
    assert round(total / 1e6, 2) == PARAMS_M[arch]


@pytest.mark.parametrize('arch', list(ARCH_SETTINGS))
def test_dense_shapes_every_arch(arch):
    model = SPMPVT(arch).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [
        (1, 64, 16, 24), (1, 128, 8, 12), (1, 320, 4, 6), (1, 512, 2, 3)]


def test_dense_outputs_feed_roi_align_correctly():
    """mmcv's RoIAlign reads raw NCHW memory: from channels-last maps (which
    FPN's convolutions pass on) it pooled wrong features and Mask R-CNN did
    not learn. The outputs must be plain NCHW, and pool as their copies do."""
    from mmcv.ops import RoIAlign
    from mmdet.models.necks import FPN
    model = SPMPVT('tiny').eval()
    fpn = FPN([64, 128, 320, 512], 32, 4).eval()
    rois = torch.tensor([[0, 3., 5., 40., 30.], [0, 10., 2., 60., 44.]])
    roi_align = RoIAlign((7, 7), 0.25, 2)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 96))
        assert all(o.is_contiguous() for o in outs)
        feats = fpn(outs)[0]
        expected = roi_align(feats.clone(memory_format=torch.contiguous_format), rois)
        torch.testing.assert_close(roi_align(feats, rois), expected, rtol=0, atol=0)


@pytest.mark.parametrize('hw,expected', [
    ((33, 47), [(9, 12), (5, 6), (3, 3), (2, 2)]),
    ((31, 31), [(8, 8), (4, 4), (2, 2), (1, 1)]),
    ((7, 9), [(2, 3), (1, 2), (1, 1), (1, 1)]),
    ((1, 1), [(1, 1)] * 4),
])
def test_dense_shapes_odd_and_tiny(hw, expected):
    model = SPMPVT('tiny').eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *hw))
    assert [tuple(o.shape[-2:]) for o in outs] == expected
    assert [o.shape[1] for o in outs] == [64, 128, 320, 512]
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize('hw', [(224, 224), (160, 192)])
def test_equals_reference(hw):
    """Classification and dense mode reproduce the reference model, including
    position-embedding interpolation on a non-224 grid."""
    ref = reference_model('tiny')
    state = backbone_state(ref)
    cls_model = SPMPVT('tiny', with_cls_token=True, out_indices=(0, 1, 2, 3)).eval()
    cls_model.load_state_dict(state, strict=True)
    dense = SPMPVT('tiny').eval()
    dense.load_state_dict(state)
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        maps, cls = ref.forward_features(x)
        cls_outs = cls_model(x)
        dense_outs = dense(x)
    torch.testing.assert_close(cls_outs[3], cls, atol=1e-5, rtol=0)
    assert cls_outs[3].shape == (2, 512)
    for ours, theirs in zip(dense_outs[:3], maps):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert dense_outs[3].shape == (2, 512, hw[0] // 32, hw[1] // 32)


def test_gradients_reach_every_parameter():
    for with_cls in (False, True):
        model = SPMPVT('tiny', with_cls_token=with_cls, drop_path_rate=0.)
        model.init_weights()
        model.train()
        outs = model(torch.randn(2, 3, 64, 64))
        sum(o.square().mean() for o in outs).backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_out_indices():
    model = SPMPVT('tiny', out_indices=(1, 3)).eval()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [128, 512]


def test_frozen_stages_and_norm_eval():
    model = SPMPVT('tiny', frozen_stages=2, norm_eval=True)
    model.train()
    frozen = ('patch_embeds.0.', 'patch_embeds.1.', 'stages.0.', 'stages.1.',
              'pos_embeds.0', 'pos_embeds.1')
    for name, p in model.named_parameters():
        assert p.requires_grad != name.startswith(frozen), name
    assert not model.patch_embeds[1].training and not model.stages[1].training
    assert model.stages[2].training
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    # norm_eval: BN statistics stay put in a training step
    before = bns[-1].running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    torch.testing.assert_close(bns[-1].running_mean, before)

    stem_only = SPMPVT('tiny', frozen_stages=0)
    stem_only.train()
    trainable = {n for n, p in stem_only.named_parameters() if p.requires_grad}
    assert not any(n.startswith(('patch_embeds.0.', 'pos_embeds.0')) for n in trainable)
    assert any(n.startswith('stages.0.') for n in trainable)


def test_custom_arch_dict():
    arch = dict(embed_dims=(32, 64, 128, 256), num_heads=(1, 2, 4, 8),
                mlp_ratios=(4, 4, 4, 4), depths=(1, 1, 1, 1), sr_ratios=(8, 4, 2, 1))
    outs = SPMPVT(arch).eval()(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [32, 64, 128, 256]


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"unknown arch 'tinyy'.*'large'.*'tiny'"):
        SPMPVT('tinyy')
    with pytest.raises(ValueError, match='exactly the keys'):
        SPMPVT(dict(embed_dims=(64, 128, 320, 512)))
    with pytest.raises(ValueError, match='out_indices'):
        SPMPVT('tiny', out_indices=(4, ))
    with pytest.raises(ValueError, match='expects an NCHW image batch with 3 channels'):
        SPMPVT('tiny')(torch.randn(1, 4, 32, 32))
