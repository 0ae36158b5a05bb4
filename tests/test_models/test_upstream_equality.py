"""Every SPM backbone without an SPM merge (``spm_stages=()``) is its
upstream class, built from every registry that serves it: on the same
checkpoint file and the same arguments it gives upstream's map sizes and
values at even and odd sizes, sizes that are not multiples of a window and
maps smaller than one (where upstream takes them), and it refuses the
arguments upstream refuses, with an exception of upstream's type."""
import importlib

import pytest
import torch
from mmengine.registry import DefaultScope

from mmspm.registry import REGISTERED_IN, models_for
from tests.test_models.test_spm_plugin import SMALL, randomized
from tests.utils import FLOAT32

# norm_cfg: mmdet's default, given. SPMPVT's own default is the SPM and PVT
# v1 authors' (LayerNorm eps 1e-5 in the stage-1 embedding and after the
# spatial reduction, where mmdet has 1e-6), which their checkpoints were
# trained with; the map sizes are mmdet's either way (test below).
PVT_SMALL = dict(embed_dims=16, num_layers=[1, 1, 1, 1], norm_cfg=dict(type='LN', eps=1e-6))
# By our class's name: (the upstream class's name, the codebase it is
# taken from (None: the registry's own), the small arguments both get).
UPSTREAM = dict(
    SPMPVT=('PyramidVisionTransformer', 'mmdet', PVT_SMALL),
    SPMPVTv2=('PyramidVisionTransformerV2', 'mmdet', SMALL['pvtv2']),
    SPMSwinTransformer=('SwinTransformer', None, SMALL['swin']))
PRETRAIN_SWIN = dict(arch=SMALL['pswin']['arch'], out_indices=(0, 1, 2, 3))
# Input sizes upstream takes: PVT v1/v2 need a stage-1 map of at least their
# stride-8 spatial reduction (32 and 29 pixels), Swin pads any size.
SIZES = dict(SPMPVT=[(32, 32), (33, 47), (64, 96), (67, 97), (97, 131), (224, 224)],
             SPMPVTv2=[(29, 31), (33, 47), (64, 96), (67, 97), (97, 131), (224, 224)],
             SPMSwinTransformer=[(5, 3), (20, 28), (33, 47), (64, 96), (67, 97),
                                 (97, 131), (224, 224)])
CASES = [(scope, name) for scope in REGISTERED_IN for name in models_for(scope)
         if name in UPSTREAM]


def build(scope: str, name: str, **kwargs):
    registry = importlib.import_module(f'{scope}.registry').MODELS
    # In the scope's own registry: a default scope left in the process
    # (mmengine's DefaultScope) would redirect the build.
    with DefaultScope.overwrite_default_scope(scope):
        return registry.build(dict(type=name, **kwargs))


def small_args(scope: str, name: str) -> dict:
    if (scope, name) == ('mmpretrain', 'SPMSwinTransformer'):
        return PRETRAIN_SWIN
    return UPSTREAM[name][2]


def pair(scope: str, name: str, **kwargs):
    """The upstream model and ours (no SPM merge), from the same arguments."""
    upstream_name, upstream_scope, _ = UPSTREAM[name]
    args = dict(small_args(scope, name), **kwargs)
    return (build(upstream_scope or scope, upstream_name, **args),
            build(scope, name, **args, spm_stages=()))


@pytest.mark.parametrize('pretrain_size', [None, (64, 96)], ids=['default', 'rectangular'])
@pytest.mark.parametrize('scope,name', CASES, ids=lambda v: v)
def test_no_spm_is_the_upstream_model(scope, name, pretrain_size, tmp_path):
    """The upstream model's checkpoint file, loaded through init_cfg, gives
    our model upstream's outputs at every size, with upstream's default
    pretraining size and with a rectangular one."""
    torch.manual_seed(0)
    key = 'img_size' if scope == 'mmpretrain' and 'Swin' in name else 'pretrain_img_size'
    args = {key: pretrain_size} if pretrain_size else {}
    assert_upstream_outputs(scope, name, tmp_path, **args)


@pytest.mark.parametrize('paddings', [('corner', ) * 4, ('same', ) * 4, (1, 0, 0, 0)],
                         ids=['corner', 'same', 'int'])
@pytest.mark.parametrize('scope', [s for s, n in CASES if n == 'SPMPVT'])
def test_spmpvt_pads_as_mmdet(scope, paddings, tmp_path):
    """mmdet's ``paddings`` (AdaptivePadding's modes, a conv padding) give
    mmdet's PVT v1 outputs at odd sizes."""
    torch.manual_seed(0)
    assert_upstream_outputs(scope, 'SPMPVT', tmp_path, paddings=paddings)


def assert_upstream_outputs(scope: str, name: str, tmp_path, **args) -> None:
    """Ours, built with ``args`` and loading the upstream model's checkpoint
    file through init_cfg, gives the upstream model's outputs at every size."""
    upstream, _ = pair(scope, name, **args)
    randomized(upstream)
    path = str(tmp_path / 'upstream.pth')
    torch.save({'state_dict': upstream.state_dict()}, path)
    _, ours = pair(scope, name, init_cfg=dict(type='Pretrained', checkpoint=path), **args)
    ours.init_weights()
    ours.eval()
    for hw in SIZES[name]:
        theirs, mine = outputs(upstream, ours, torch.randn(1, 3, *hw))
        for a, b in zip(mine, theirs):
            torch.testing.assert_close(a, b, **FLOAT32, msg=f'{hw}')


def outputs(upstream, ours, x):
    """Both models' outputs, of the same shapes; where upstream refuses the
    input, ours must refuse it with upstream's exception type."""
    with torch.no_grad():
        try:
            theirs = upstream(x)
        except Exception as e:
            with pytest.raises(type(e)):
                ours(x)
            return [], []
        mine = ours(x)
    assert [o.shape for o in mine] == [o.shape for o in theirs], tuple(x.shape)
    return theirs, mine


@pytest.mark.parametrize('scope,name', CASES, ids=lambda v: v)
def test_upstream_defaults_give_upstream_map_sizes(scope, name):
    """A config that only swaps the type keeps upstream's map sizes."""
    args = dict(out_indices=(0, 1, 2, 3)) if scope == 'mmpretrain' else {}
    upstream, ours = pair(scope, name, **args)
    if name == 'SPMPVT':
        ours = build(scope, name, **dict(PVT_SMALL, norm_cfg=None), spm_stages=())
    upstream.eval()
    ours.eval()
    for hw in SIZES[name]:
        outputs(upstream, ours, torch.randn(1, 3, *hw))


# Arguments upstream refuses, by our class's name (in upstream's spelling).
REFUSED = dict(
    SPMPVT=[dict(pretrain_img_size=(224, 224, 224)), dict(out_indices=(4, )),
            dict(num_layers=[1, 1, 1]), dict(pretrained=3),
            dict(pretrained='a.pth', init_cfg=dict(type='Pretrained', checkpoint='a.pth'))],
    SPMPVTv2=[dict(pretrain_img_size=(224, 224, 224)), dict(out_indices=(4, )),
              dict(num_layers=[1, 1, 1]), dict(pretrained=3)],
    SPMSwinTransformer=[dict(pretrain_img_size=(224, 224, 224)), dict(strides=(2, 2, 2, 2)),
                        dict(pretrained=3),
                        dict(pretrained='a.pth',
                             init_cfg=dict(type='Pretrained', checkpoint='a.pth'))])
PRETRAIN_REFUSED = [dict(arch='huge'), dict(out_indices=(5, )), dict(img_size=(224, 224, 224))]


@pytest.mark.parametrize('scope,name', CASES, ids=lambda v: v)
def test_refuses_what_upstream_refuses(scope, name):
    pretrain_swin = (scope, name) == ('mmpretrain', 'SPMSwinTransformer')
    for bad in PRETRAIN_REFUSED if pretrain_swin else REFUSED[name]:
        with pytest.raises(Exception) as theirs:
            pair(scope, name, **bad)
        with pytest.raises(type(theirs.value)):
            build(scope, name, **dict(small_args(scope, name), **bad), spm_stages=())
