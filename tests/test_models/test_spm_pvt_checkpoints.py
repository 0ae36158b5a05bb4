"""SPMPVT's loading: every checkpoint layout, dense/cls adaptation, and the
refusals of checkpoints that are not of this model."""
import copy
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import load_checkpoint

from mmspm import SPMPVT
from mmspm.builder import build_model
from mmspm.models.spm_pvt_checkpoints import convert_reference
from mmspm.safe_load import CheckpointError
from tests.utils import (ROOT, assert_dense_equals_reference, dense_from, reference_model,
                         release_checkpoint)


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
    model = build_model(cfg, model_cfg, init_weights=True, pretrained=True)
    assert_dense_equals_reference(model.backbone.eval(), ref_tiny)
    missing, unexpected = SPMPVT('tiny').load_pretrained(str(ref_file))
    assert missing == [] and unexpected == []


def test_mmpretrain_classifier_into_dense(ref_tiny, ref_file, tmp_path):
    cfg = Config.fromfile(osp.join(ROOT, 'configs/imagenet/spm-pvt-t_8xb128_in1k.py'))
    clf = build_model(cfg)
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
    with pytest.raises(CheckpointError,
                       match=r"stages\.2\.0\.mlp\.fc2\.weight.*\(320, 10\).*\(320, 1280\)"):
        dense_from(tmp_path / 'shaped.pth')


def test_missing_tensors_keep_the_models_own_init(ref_tiny, tmp_path):
    """What a partial checkpoint lacks is left at SPM-PVT's initialisation
    (e.g. LayerNorm weight 1), not at whatever the module held before."""
    state = dict(ref_tiny.state_dict())
    del state['block2.1.norm1.weight']
    torch.save(state, tmp_path / 'partial.pth')
    model = SPMPVT('tiny', init_cfg=dict(type='Pretrained',
                                         checkpoint=str(tmp_path / 'partial.pth')))
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


# The keys of the SPM layers, the only tensors PVT v1 does not have.
SPM_PREFIXES = ('patch_embeds.1.', 'patch_embeds.2.', 'patch_embeds.3.')


def mmdet_pvt(num_layers=(2, 2, 2, 2)):
    """mmdet's own PVT v1 with every tensor drawn at random (no init value can
    coincide with SPM-PVT's)."""
    from mmdet.models.backbones import PyramidVisionTransformer
    pvt = PyramidVisionTransformer(num_layers=list(num_layers))
    for p in pvt.state_dict().values():
        if p.is_floating_point():
            p.normal_(0, 0.05)
    return pvt.eval()


def from_pvt(path, seed=5, arch='tiny', **kwargs) -> SPMPVT:
    torch.manual_seed(seed)
    model = SPMPVT(arch, init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                       from_pvt_v1=True), **kwargs)
    model.init_weights()
    return model.eval()


def assert_spm_layers_at_own_init(model: SPMPVT, seed=5, arch='tiny', **kwargs):
    torch.manual_seed(seed)
    fresh = SPMPVT(arch, **kwargs)
    fresh.init_weights()
    spm = {k: v for k, v in fresh.state_dict().items()
           if k.startswith(SPM_PREFIXES)}
    assert len(spm) == 90  # 3 SPM layers x 30 tensors (BN buffers included)
    ours = model.state_dict()
    for k, v in spm.items():
        assert torch.equal(ours[k], v), k


@pytest.mark.parametrize('wrap', ['backbone', 'detector'])
def test_pvt_v1_from_mmdet_initialises_all_but_spm(wrap, tmp_path):
    """A checkpoint written by mmdet's PyramidVisionTransformer (bare, or in a
    detector): the shared tensors arrive bitwise, every block computes what
    mmdet's block computes, the SPM layers are at SPM-PVT's own init."""
    pvt = mmdet_pvt()
    state = pvt.state_dict()
    path = tmp_path / 'pvt.pth'
    torch.save(state if wrap == 'backbone' else
               {'state_dict': {f'backbone.{k}': v for k, v in state.items()},
                'meta': {'epoch': 12}}, path)
    model = from_pvt(path)
    ours = model.state_dict()
    assert torch.equal(ours['patch_embeds.0.proj.weight'], state['layers.0.0.projection.weight'])
    for i in range(4):
        assert torch.equal(ours[f'pos_embeds.{i}'], state[f'layers.{i}.1.0.pos_embed'])
    in_proj = state['layers.2.1.2.attn.attn.in_proj_weight']
    assert torch.equal(ours['stages.2.1.attn.q.weight'], in_proj[:320])
    assert torch.equal(ours['stages.2.1.attn.kv.weight'], in_proj[320:])
    assert torch.equal(ours['stages.3.0.mlp.fc1.weight'],
                       state['layers.3.1.1.ffn.layers.0.weight'].flatten(1))
    # every block, run on the same tokens, gives what mmdet's block gives
    # (LayerNorm eps 1e-6 in PVT v1 vs mmdet's 1e-5: a tolerance, not a bug)
    with torch.no_grad():
        for i, (grid, dim) in enumerate(zip((56, 28, 14, 7), (64, 128, 320, 512))):
            x = torch.randn(1, grid * grid, dim)
            for j, block in enumerate(model.stages[i]):
                theirs = pvt.layers[i][1][j + 1](x, (grid, grid))
                torch.testing.assert_close(block(x, (grid, grid)), theirs, atol=2e-4, rtol=0)
        image = torch.randn(1, 3, 224, 224)
        torch.testing.assert_close(model(image)[0], pvt(image)[0], atol=2e-4, rtol=0)
    assert_spm_layers_at_own_init(model)


# The PVT v1 release files (tests/data/manifests) and the SPM-PVT size of each.
PVT_V1_RELEASES = [pytest.param(name, arch, marks=() if arch == 'tiny' else pytest.mark.slow)
                   for name, arch in dict(pvt_tiny='t', pvt_small='s', pvt_medium='m',
                                          pvt_large='l').items()]


def release_key(key: str) -> str:
    """The PVT release's name of an mmspm key SPM-PVT shares with PVT v1."""
    key = re.sub(r'^patch_embeds\.0\.', 'patch_embed1.', key)
    key = re.sub(r'^stages\.(\d)', lambda m: f'block{int(m[1]) + 1}', key)
    return re.sub(r'^pos_embeds\.(\d)', lambda m: f'pos_embed{int(m[1]) + 1}', key)


@pytest.mark.parametrize('name,arch', PVT_V1_RELEASES)
def test_pvt_v1_release_into_a_classifier(name, arch, tmp_path):
    """A PVT v1 release file, in its exact layout: every tensor SPM-PVT shares
    with PVT v1 arrives bitwise (cls token, final norm and the cls entry of
    the last position embedding included), the SPM layers at init; its head
    is the classifier's, not the backbone's."""
    path = tmp_path / f'{name}.pth'
    release = release_checkpoint(name, path)
    model = from_pvt(path, arch=arch, with_cls_token=True)
    ours = model.state_dict()
    shared = [k for k in ours if not k.startswith(SPM_PREFIXES)]
    assert len(shared) == len(ours) - 90
    for k in shared:
        assert torch.equal(ours[k], release[release_key(k)]), k
    assert_spm_layers_at_own_init(model, arch=arch, with_cls_token=True)


def test_mmdet_retinanet_pvt_config_with_spm_pvt(tmp_path):
    """mmdet's own configs/pvt/retinanet_pvt-t_fpn_1x_coco.py with only
    ``backbone.type='SPMPVT'``: its init_cfg (mmdet's spelling, no type)
    names the PVT v1 release, refused until from_pvt_v1 says it is meant;
    then the detector trains a step and predicts."""
    import mmdet
    from mmdet.testing import demo_mm_inputs
    cfg = Config.fromfile(osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', 'pvt',
                                   'retinanet_pvt-t_fpn_1x_coco.py'))
    assert cfg.model.backbone.type == 'PyramidVisionTransformer'
    cfg.model.backbone.type = 'SPMPVT'
    release = tmp_path / 'pvt_tiny.pth'
    release_state = release_checkpoint('pvt_tiny', release)
    assert set(cfg.model.backbone.init_cfg) == {'checkpoint'}
    cfg.model.backbone.init_cfg.checkpoint = str(release)
    with pytest.raises(CheckpointError, match=r'PVT v1 checkpoint.*from_pvt_v1=True'):
        build_model(cfg, init_weights=True, pretrained=True)
    cfg.model.backbone.init_cfg.from_pvt_v1 = True
    torch.manual_seed(0)
    detector = build_model(cfg, init_weights=True, pretrained=True)
    backbone = detector.backbone
    assert torch.equal(backbone.stages[3][1].attn.kv.weight,
                       release_state['block4.1.attn.kv.weight'])
    detector.train()
    data = detector.data_preprocessor(demo_mm_inputs(1, [(3, 96, 128)], num_items=[3]), True)
    loss, _ = detector.parse_losses(detector(**data, mode='loss'))
    assert torch.isfinite(loss)
    loss.backward()
    spm = [p for m in backbone.patch_embeds[1:] for p in m.parameters()]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in spm)
    detector.eval()
    with torch.no_grad():
        outputs = detector.val_step(demo_mm_inputs(1, [(3, 96, 128)]))
    assert len(outputs) == 1 and 'pred_instances' in outputs[0]


def test_pvt_v1_without_the_opt_in_fails_loudly(ref_file, tmp_path):
    release_checkpoint('pvt_tiny', tmp_path / 'pvt_tiny.pth')
    torch.save(mmdet_pvt().state_dict(), tmp_path / 'mmdet_pvt.pth')
    for name in ('pvt_tiny.pth', 'mmdet_pvt.pth'):
        with pytest.raises(CheckpointError, match=r'PVT v1 checkpoint.*from_pvt_v1=True'):
            dense_from(tmp_path / name)
    # the opt-in is for PVT v1 only, and for its own size
    with pytest.raises(CheckpointError, match='not a PVT v1 checkpoint'):
        from_pvt(ref_file)
    torch.save(mmdet_pvt((3, 4, 6, 3)).state_dict(), tmp_path / 'pvt_small.pth')
    with pytest.raises(CheckpointError, match=r'\(3, 4, 6, 3\) blocks per stage'):
        from_pvt(tmp_path / 'pvt_small.pth')
