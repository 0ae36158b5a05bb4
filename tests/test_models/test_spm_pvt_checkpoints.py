"""SPMPVT's loading: every checkpoint layout, dense/cls adaptation, and the
refusals of checkpoints that are not of this model."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

from mmspm import SPMPVT
from mmspm.models.spm_pvt import convert_reference
from mmspm.safe_load import CheckpointError
from tests.utils import ROOT, reference_model


@pytest.fixture(scope='module')
def ref_tiny():
    torch.manual_seed(0)
    return reference_model('tiny')


@pytest.fixture(scope='module')
def ref_file(ref_tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp('ref') / 'spm_pvt_tiny_ref.pth'
    torch.save({'model': ref_tiny.state_dict()}, path)
    return path


def dense_from(checkpoint) -> SPMPVT:
    model = SPMPVT('tiny', init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint)))
    model.init_weights()
    return model.eval()


def assert_dense_equals_reference(model: SPMPVT, ref, hw=(224, 224)):
    x = torch.randn(1, 3, *hw)
    with torch.no_grad():
        maps, _ = ref.forward_features(x)
        outs = model(x)
    for ours, theirs in zip(outs[:3], maps):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize('wrap', ['top', 'model', 'state_dict'])
def test_dense_init_from_reference_layout(ref_tiny, wrap, tmp_path):
    state = ref_tiny.state_dict()
    path = tmp_path / 'ref.pth'
    torch.save(state if wrap == 'top' else {wrap: state}, path)
    assert_dense_equals_reference(dense_from(path), ref_tiny)
    assert_dense_equals_reference(dense_from(path), ref_tiny, hw=(256, 192))


@pytest.mark.parametrize('config', [
    'mask_rcnn/mask-rcnn_spm-pvt-t_fpn_1x_coco.py',
    'semantic_fpn/fpn_spm-pvt-t_8xb2-40k_ade20k-512x512.py',
])
def test_dense_configs_init_with_no_missing_backbone_keys(config, ref_tiny, ref_file):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', config))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.init_cfg.checkpoint = str(ref_file)
    if cfg.default_scope == 'mmseg':
        model_cfg.decode_head.norm_cfg = dict(type='BN', requires_grad=True)
    init_default_scope(cfg.default_scope)
    registry = __import__(f'{cfg.default_scope}.registry', fromlist=['MODELS']).MODELS
    model = registry.build(model_cfg)
    model.init_weights()
    assert_dense_equals_reference(model.backbone.eval(), ref_tiny)
    missing, unexpected = SPMPVT('tiny').load_pretrained(str(ref_file))
    assert missing == [] and unexpected == []


def test_mmpretrain_classifier_into_dense(ref_tiny, ref_file, tmp_path):
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(osp.join(ROOT, 'configs/imagenet/spm-pvt-t_8xb128_in1k.py'))
    init_default_scope('mmpretrain')
    clf = MODELS.build(cfg.model)
    torch.save(convert_reference(ref_tiny.state_dict()), tmp_path / 'c.pth')
    load_checkpoint(clf, str(tmp_path / 'c.pth'), strict=True)
    path = tmp_path / 'mmpretrain_runner_style.pth'
    torch.save({'state_dict': clf.state_dict(), 'meta': {'epoch': 300}}, path)
    assert_dense_equals_reference(dense_from(path), ref_tiny)


def test_missing_extra_and_misshaped_keys(ref_tiny, tmp_path):
    """Dense init loads what is there and names the rest; a misshaped tensor
    is refused with its name and both shapes."""
    state = dict(ref_tiny.state_dict())
    missing = dict(state)
    del missing['block2.1.mlp.fc1.weight']
    torch.save(missing, tmp_path / 'missing.pth')
    missing_keys, _ = SPMPVT('tiny').load_pretrained(str(tmp_path / 'missing.pth'))
    assert missing_keys == ['stages.1.1.mlp.fc1.weight']

    extra = dict(state, **{'block1.0.attn.extra.weight': torch.zeros(2)})
    torch.save(extra, tmp_path / 'extra.pth')
    _, unexpected = SPMPVT('tiny').load_pretrained(str(tmp_path / 'extra.pth'))
    assert unexpected == ['stages.0.0.attn.extra.weight']

    shaped = dict(state, **{'block3.0.mlp.fc2.weight': torch.zeros(320, 10)})
    torch.save(shaped, tmp_path / 'shaped.pth')
    with pytest.raises(CheckpointError, match=r"stages\.2\.0\.mlp\.fc2\.weight.*\(320, 10\).*\(320, 1280\)"):
        dense_from(tmp_path / 'shaped.pth')


def test_missing_tensors_keep_the_models_own_init(ref_tiny, tmp_path):
    """What a partial checkpoint lacks is left at SPM-PVT's initialisation
    (e.g. LayerNorm weight 1), not at whatever the module held before."""
    state = dict(ref_tiny.state_dict())
    del state['block2.1.norm1.weight']
    torch.save(state, tmp_path / 'partial.pth')
    model = SPMPVT('tiny', init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'partial.pth')))
    model.stages[1][1].norm1.weight.data.fill_(7.0)
    model.init_weights()
    assert torch.equal(model.stages[1][1].norm1.weight, torch.ones(128))
    assert torch.equal(model.stages[1][0].norm1.weight, state['block2.0.norm1.weight'])


def test_other_arch_is_refused_with_key_and_shapes(tmp_path):
    small = reference_model('small')
    torch.save(small.state_dict(), tmp_path / 'small.pth')
    # SPM-PVT sizes share all shapes: the depths tell them apart
    with pytest.raises(CheckpointError, match=r'\(3, 4, 6, 3\) blocks per stage, the model '
                                              r'\(2, 2, 2, 2\).*SPM-PVT-small'):
        dense_from(tmp_path / 'small.pth')
    # a custom wider arch: the first mismatched tensor, with both shapes
    wide = dict(embed_dims=(64, 128, 320, 640), num_heads=(1, 2, 5, 8),
                mlp_ratios=(8, 8, 4, 4), depths=(3, 4, 6, 3), sr_ratios=(8, 4, 2, 1))
    model = SPMPVT(wide, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'small.pth')))
    with pytest.raises(CheckpointError, match=r"'pos_embeds\.3' has shape \(1, 49, 512\) "
                                              r"but the model expects \(1, 49, 640\)"):
        model.init_weights()


def test_unrelated_checkpoint_is_rejected(tmp_path):
    import torchvision
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / 'resnet.pth')
    with pytest.raises(CheckpointError, match='no layout mmspm knows'):
        dense_from(tmp_path / 'resnet.pth')
    # ResNet weights under backbone.* (an mmdet R50 detector, say)
    state = {f'backbone.{k}': v for k, v in torchvision.models.resnet18().state_dict().items()}
    torch.save({'state_dict': state}, tmp_path / 'det_resnet.pth')
    with pytest.raises(CheckpointError, match='not an SPM-PVT checkpoint'):
        dense_from(tmp_path / 'det_resnet.pth')


def test_position_embeddings_are_interpolated_on_load(ref_tiny, tmp_path):
    """A checkpoint trained at another size (here a 4x4 stage-4 grid plus the
    cls entry) loads with its grid bilinearly resized to the model's 7x7, the
    cls entry dropped in dense mode; equal to an explicit resize."""
    state = dict(ref_tiny.state_dict())
    grid = torch.randn(1, 16, 512)
    state['pos_embed4'] = torch.cat([torch.randn(1, 1, 512), grid], 1)
    torch.save(state, tmp_path / 'small_grid.pth')
    model = dense_from(tmp_path / 'small_grid.pth')
    expected = torch.nn.functional.interpolate(
        grid.reshape(1, 4, 4, 512).permute(0, 3, 1, 2), size=(7, 7), mode='bilinear',
        align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(model.pos_embeds[3].data, expected, rtol=0, atol=0)
