"""`import mmspm` registers SPMPVT and StepwisePatchMerging in the three
codebases' MODELS registries."""
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
    assert scope in mmspm.REGISTERED_IN


def test_cross_scope_name_from_mmseg():
    """An mmseg config may name mmdet's registration explicitly."""
    from mmseg.registry import MODELS
    assert isinstance(MODELS.build(dict(type='mmdet.SPMPVT')), mmspm.SPMPVT)
