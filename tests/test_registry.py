"""`import mmspm` registers the SPM backbones, StepwisePatchMerging and
TokenStepwisePatchMerging in the three codebases' MODELS registries."""
import pytest
import torch

import mmspm


@pytest.mark.parametrize('scope,registry_module', [
    ('mmdet', 'mmdet.registry'),
    ('mmseg', 'mmseg.registry'),
    ('mmpretrain', 'mmpretrain.registry'),
])
def test_build_from_each_registry(scope, registry_module):
    import importlib
    registry = importlib.import_module(registry_module).MODELS
    for type_name in ('SPMPVT', f'{scope}.SPMPVT'):
        backbone = registry.build(dict(type=type_name, arch='tiny'))
        assert isinstance(backbone, mmspm.SPMPVT)
        with torch.no_grad():
            outs = backbone.eval()(torch.randn(1, 3, 64, 64))
        assert [tuple(o.shape) for o in outs] == [
            (1, 64, 16, 16), (1, 128, 8, 8), (1, 320, 4, 4), (1, 512, 2, 2)]
    # SPM alone, for a user's own backbone: C -> C', half the resolution
    spm = registry.build(dict(type='StepwisePatchMerging', in_channels=64, out_channels=128))
    assert isinstance(spm, mmspm.StepwisePatchMerging)
    with torch.no_grad():
        assert tuple(spm.eval()(torch.randn(1, 64, 15, 20)).shape) == (1, 128, 8, 10)
    # and with the token interface of mmcv's PatchMerging
    spm = registry.build(dict(type='TokenStepwisePatchMerging', in_channels=64,
                              out_channels=128))
    with torch.no_grad():
        tokens, hw = spm.eval()(torch.randn(1, 15 * 20, 64), (15, 20))
    assert tuple(tokens.shape) == (1, 8 * 10, 128) and hw == (8, 10)
    assert scope in mmspm.REGISTERED_IN


def test_cross_scope_name_from_mmseg():
    """An mmseg config may name mmdet's registration explicitly."""
    from mmseg.registry import MODELS
    assert isinstance(MODELS.build(dict(type='mmdet.SPMPVT')), mmspm.SPMPVT)


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
def test_every_family_is_registered(scope):
    """Each family of mmspm.models.families is in each codebase's registry:
    SPM-Swin on that codebase's own Swin (mmpretrain's in mmpretrain)."""
    import importlib

    from mmspm.models.families import FAMILIES
    registry = importlib.import_module(f'{scope}.registry').MODELS
    expected = dict(SPMPVT='mmspm.models.spm_pvt', SPMPVTv2='mmspm.models.spm_pvtv2',
                    SPMSwinTransformer='mmspm.models.spm_swin_pretrain'
                    if scope == 'mmpretrain' else 'mmspm.models.spm_swin')
    assert {f.spm.__name__ for f in FAMILIES} == set(expected)
    for name, module in expected.items():
        assert registry.get(name).__module__ == module


def test_a_type_of_no_family_is_named_with_the_fix():
    from mmspm.models.families import family_of
    assert family_of('mmdet.PyramidVisionTransformer')[1] == 'baseline'
    assert family_of('SPMPVTv2')[1] == 'spm'
    with pytest.raises(KeyError, match="'ResNet' is in no SPM family.*mmspm/models/families.py"):
        family_of('ResNet')
