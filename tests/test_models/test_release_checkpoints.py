"""The Swin and PVTv2 release files, in their exact layouts (keys, shapes and
wrapping from tests/data/manifests, read off the upstream authors' code),
initialise SPM-Swin and SPM-PVTv2 through ``init_cfg`` as they initialise
mmdet's and mmpretrain's own backbones: every tensor as the upstream backbone
loads it, the SPM layers at init, the buffers the model recomputes skipped
and named in the log."""
import pytest
import torch
from mmengine.config import ConfigDict
from mmdet.models.backbones import PyramidVisionTransformerV2, SwinTransformer

from mmspm import SPMPVTv2, SPMSwinTransformer
from mmspm.models import spm_swin_pretrain
from tests.test_models.test_spm_plugin import log_records
from tests.utils import manifest, release_checkpoint

# mmdet's arguments for each release (mmdet's configs/swin and configs/pvt).
SWIN = {
    'swin_tiny_patch4_window7_224': dict(),
    'swin_small_patch4_window7_224': dict(depths=(2, 2, 18, 2)),
    'swin_base_patch4_window7_224': dict(embed_dims=128, depths=(2, 2, 18, 2),
                                         num_heads=(4, 8, 16, 32)),
    'swin_base_patch4_window12_384': dict(embed_dims=128, depths=(2, 2, 18, 2),
                                          num_heads=(4, 8, 16, 32), window_size=12,
                                          pretrain_img_size=384),
}
PVTV2 = {
    'pvt_v2_b0': dict(embed_dims=32, num_layers=[2, 2, 2, 2]),
    'pvt_v2_b1': dict(embed_dims=64, num_layers=[2, 2, 2, 2]),
    'pvt_v2_b2': dict(embed_dims=64, num_layers=[3, 4, 6, 3]),
    'pvt_v2_b3': dict(embed_dims=64, num_layers=[3, 4, 18, 3]),
    'pvt_v2_b4': dict(embed_dims=64, num_layers=[3, 8, 27, 3]),
    'pvt_v2_b5': dict(embed_dims=64, num_layers=[3, 6, 40, 3], mlp_ratios=(4, 4, 4, 4)),
}
# The big ones take a few seconds each just to draw and save their tensors.
FAST = ('swin_tiny_patch4_window7_224', 'pvt_v2_b0', 'pvt_v2_b1')


def releases(table: dict, *extra) -> list:
    return [pytest.param(k, v, *extra, marks=() if k in FAST else pytest.mark.slow)
            for k, v in table.items()]


def pretrained(path) -> ConfigDict:
    # A ConfigDict, as configs give it: mmdet's backbones read init_cfg.checkpoint.
    return ConfigDict(type='Pretrained', checkpoint=str(path))


def initialised(cls, path, **kwargs):
    """``cls`` initialised from ``path`` through init_cfg; the log of it."""
    model = cls(**kwargs, init_cfg=pretrained(path))
    with log_records() as records:
        model.init_weights()
    return model, '\n'.join(r.getMessage() for r in records)


def assert_loaded_as_upstream(ours, upstream) -> None:
    """Every tensor the upstream backbone took from the file, ours has too,
    but in the slots SPM took and the buffers ours recomputes (mmdet loads
    them; here they are random). mmdet leaves its output norms at init (ours
    takes the final norm as mmpretrain does: checked by the callers)."""
    mine = ours.state_dict()
    compared = [k for k in upstream.state_dict() if not ours.spm_key.match(k)
                and not ours._recomputed(k) and not k.startswith('norm')]
    assert len(compared) > len(mine) // 2
    for k in compared:
        assert torch.equal(mine[k], upstream.state_dict()[k]), k


@pytest.mark.parametrize('name,kwargs', releases(SWIN))
def test_swin_release_loads_as_mmdet_loads_it(name, kwargs, tmp_path):
    path = tmp_path / f'{name}.pth'
    release = release_checkpoint(name, path)
    assert 'layers.0.blocks.1.attn_mask' in release and 'head.weight' in release
    torch.manual_seed(0)
    ours, log = initialised(SPMSwinTransformer, path, **kwargs)
    # mmdet's own Swin, told the file is in the authors' layout, is the oracle.
    upstream = SwinTransformer(**kwargs, convert_weights=True, init_cfg=pretrained(path))
    upstream.init_weights()
    assert_loaded_as_upstream(ours, upstream)
    # The final norm is the last stage's output norm.
    assert torch.equal(ours.norm3.weight, release['norm.weight'])
    masks = [k for k in release if k.endswith('attn_mask')]
    index = [k for k in release if k.endswith('relative_position_index')]
    assert masks and index
    skipped = log.split('recomputes, skipped: ')[1].split(';')[0].split(', ')
    assert len(skipped) == len(masks) + len(index)
    # The model's own index, not the file's (random here).
    fresh = SPMSwinTransformer(**kwargs).state_dict()
    for k, v in ours.state_dict().items():
        if k.endswith('relative_position_index'):
            assert torch.equal(v, fresh[k]), k


@pytest.mark.slow
def test_swin_window12_release_initialises_a_window7_model(tmp_path):
    """Bias tables of the 384/window-12 release are resized for window 7 as
    mmdet resizes them."""
    name = 'swin_base_patch4_window12_384'
    path = tmp_path / f'{name}.pth'
    kwargs = dict(SWIN['swin_base_patch4_window7_224'])
    release = release_checkpoint(name, path)
    ours, log = initialised(SPMSwinTransformer, path, **kwargs)
    # mmdet cannot load the window-12 index buffers into a window-7 model
    # (their shapes differ): it gets the file without them.
    torch.save({'model': {k: v for k, v in release.items() if 'attn_mask' not in k
                          and 'relative_position_index' not in k}}, tmp_path / 'mmdet.pth')
    upstream = SwinTransformer(**kwargs, convert_weights=True,
                               init_cfg=pretrained(tmp_path / 'mmdet.pth'))
    upstream.init_weights()
    table = 'stages.2.blocks.0.attn.w_msa.relative_position_bias_table'
    assert tuple(ours.state_dict()[table].shape) == (13 * 13, 16)
    assert not torch.equal(ours.state_dict()[table], torch.zeros(13 * 13, 16))
    assert_loaded_as_upstream(ours, upstream)
    assert table in log.split('window size: ')[1]
    assert release['layers.2.blocks.0.attn.relative_position_bias_table'].shape == (23 * 23, 16)


# The files are bare state dicts; `{'model': ...}` (as fine-tuned ones are
# saved) once, as the unwrapping is the same for every size.
@pytest.mark.parametrize('name,kwargs,wrap', releases(PVTV2, None) + [
    ('pvt_v2_b1', PVTV2['pvt_v2_b1'], 'model')])
def test_pvtv2_release_loads_as_mmdet_loads_it(name, kwargs, wrap, tmp_path):
    path = tmp_path / f'{name}.pth'
    release = release_checkpoint(name, path)
    if wrap:
        torch.save({wrap: release}, path)
    torch.manual_seed(0)
    ours, log = initialised(SPMPVTv2, path, **kwargs)
    upstream = PyramidVisionTransformerV2(**kwargs, init_cfg=pretrained(path))
    upstream.init_weights()
    assert_loaded_as_upstream(ours, upstream)
    assert torch.equal(ours.state_dict()['layers.0.0.projection.weight'],
                       release['patch_embed1.proj.weight'])
    assert 'recomputes, skipped: none' in log


MMPRETRAIN = {'mmpretrain_swin-tiny_16xb64_in1k': dict(arch='tiny'),
              'mmpretrain_swin-base_16xb64_in1k-384px': dict(arch='base', img_size=384,
                                                             window_size=12)}


@pytest.mark.parametrize('name,kwargs', [
    pytest.param(k, v, marks=() if 'tiny' in k else pytest.mark.slow)
    for k, v in MMPRETRAIN.items()])
def test_mmpretrain_classifier_checkpoint_initialises_both_spm_swins(name, kwargs, tmp_path):
    path = tmp_path / f'{name}.pth'
    release = release_checkpoint(name, path)
    assert manifest(name)['wrap'] == 'state_dict'
    ours, _ = initialised(spm_swin_pretrain.SPMSwinTransformer, path, **kwargs)
    mine = ours.state_dict()
    loaded = [k for k in mine if not ours.spm_key.match(k)
              and not k.endswith('relative_position_index')]
    for k in loaded:
        assert torch.equal(mine[k], release[f'backbone.{k}']), k
    # mmdet's SPM-Swin of the same size, as detection configs build it.
    dense = dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)) \
        if kwargs['arch'] == 'base' else {}
    det, log = initialised(SPMSwinTransformer, path, **dense,
                           window_size=kwargs.get('window_size', 7))
    for k in loaded:
        assert torch.equal(det.state_dict()[k], release[f'backbone.{k}']), k
    assert 'output norms not in the checkpoint (at init): norm0.weight' in log
