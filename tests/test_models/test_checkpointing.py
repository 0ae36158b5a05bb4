"""with_cp of every SPM backbone, built from every registry that serves it:
the BatchNorm statistics (SPM's) move as without it, once per step."""
import importlib

import pytest
import torch
from mmengine.registry import DefaultScope
from torch.nn.modules.batchnorm import _BatchNorm

from mmspm.registry import REGISTERED_IN, models_for
from tests.test_models.test_ablations import SMALL as PVT_SMALL
from tests.test_models.test_spm_plugin import SMALL
from tests.utils import FLOAT32

# Small arguments of each backbone, by its name in the registries (mmpretrain's
# SPM-Swin takes mmpretrain's Swin arguments).
ARGS = dict(SPMPVT=dict(arch=PVT_SMALL, pretrain_img_size=64),
            SPMPVTv2=SMALL['pvtv2'], SPMSwinTransformer=SMALL['swin'])
CASES = [(scope, name) for scope in REGISTERED_IN for name in models_for(scope) if name in ARGS]


def build(scope: str, name: str, **kwargs):
    registry = importlib.import_module(f'{scope}.registry').MODELS
    args = SMALL['pswin'] if (scope, name) == ('mmpretrain', 'SPMSwinTransformer') else ARGS[name]
    # In the scope's own registry: a default scope another test left in the
    # process (mmengine's DefaultScope) would redirect the build there.
    with DefaultScope.overwrite_default_scope(scope):
        return registry.build(dict(type=name, **args, drop_path_rate=0., **kwargs))


def statistics(model) -> dict:
    return {f'{n}.{b}': getattr(m, b).clone() for n, m in model.named_modules()
            if isinstance(m, _BatchNorm)
            for b in ('running_mean', 'running_var', 'num_batches_tracked')}


@pytest.mark.parametrize('scope,name', CASES, ids=lambda v: v)
def test_with_cp_updates_batchnorm_statistics_once(scope, name):
    torch.manual_seed(0)
    plain = build(scope, name)
    plain.init_weights()
    recomputed = build(scope, name, with_cp=True)
    recomputed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    for model in (plain, recomputed):
        model.train()
        sum(o.square().mean() for o in model(x)).backward()
    expected, got = statistics(plain), statistics(recomputed)
    assert expected and expected.keys() == got.keys()
    assert all(v == 1 for k, v in expected.items() if k.endswith('num_batches_tracked'))
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, **FLOAT32, msg=key)
