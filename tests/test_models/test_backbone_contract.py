"""The contract every SPM backbone keeps, tested once over every family and
registry (mmspm/models/spm_backbone.py): the init_cfg order as mmengine
documents it, frozen_stages and norm_eval, layer-wise depths, and loading
pretrained files. Every model is built from its codebase's registry, with
small arguments."""
import math
import re

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmspm.models.spm import StepwisePatchMerging
from mmspm.registry import REGISTERED_IN, models_for
from mmspm.safe_load import CheckpointError
from tests.test_models.test_checkpointing import ARGS, build, statistics
from tests.test_models.test_spm_plugin import randomized

CASES = [(scope, name) for scope in REGISTERED_IN for name in models_for(scope) if name in ARGS]
cases = pytest.mark.parametrize('scope,name', CASES, ids=lambda v: v)

LINEAR = dict(type='Constant', layer='Linear', val=0.5, bias=0.1)


def saved(tmp_path, checkpoint, name: str = 'checkpoint.pth') -> str:
    path = str(tmp_path / name)
    torch.save(checkpoint, path)
    return path


def whole_model(state: dict, prefix: str = 'backbone.') -> dict:
    """A detector's (classifier's, ...) checkpoint holding ``state`` under ``prefix``."""
    return {'state_dict': {prefix + k: v for k, v in state.items()}, 'meta': {'epoch': 1}}


def spm_layers(model) -> list:
    return [m for m in model.modules() if isinstance(m, StepwisePatchMerging)]


def under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + '.') for p in prefixes)


def assert_equal_states(model, expected: dict) -> None:
    state = model.state_dict()
    assert expected.keys() <= state.keys()
    for k, v in expected.items():
        assert torch.equal(state[k], v), k


def initialised(scope: str, name: str, init_cfg):
    """The model from random values (no value left by chance at an init's), then init_weights()."""
    torch.manual_seed(0)
    model = randomized(build(scope, name, init_cfg=init_cfg))
    model.init_weights()
    return model


def assert_spm_reference_init(model) -> None:
    """The SPM reference's initialisation of every SPM layer but its Linear
    layers (named by the user): norms weight 1 and bias 0, convolutions
    normal with std sqrt(2 / fan_out) and bias 0."""
    normed = []
    for spm in spm_layers(model):
        for n, m in spm.named_modules():
            if isinstance(m, (nn.LayerNorm, _BatchNorm)):
                assert (m.weight == 1).all() and (m.bias == 0).all(), n
            elif isinstance(m, nn.Conv2d):
                assert (m.bias == 0).all(), n
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                normed.append(m.weight.flatten() / math.sqrt(2 / fan_out))
    normed = torch.cat(normed)
    assert normed.numel() > 10000  # a tight estimate of the std
    assert abs(normed.std().item() - 1) < 0.05 and abs(normed.mean().item()) < 0.05


@cases
def test_init_cfg_entries_win_over_the_family_init_and_spm_keeps_the_reference_init(scope, name):
    """The family's initialisation first, then the entries on the layers they
    name (every Linear, SPM's included); the rest keeps the family's."""
    model = initialised(scope, name, LINEAR)
    assert any(isinstance(m, nn.Linear) for spm in spm_layers(model) for m in spm.modules())
    for m in (m for m in model.modules() if isinstance(m, nn.Linear)):
        assert (m.weight == 0.5).all() and (m.bias == 0.1).all()
    assert_spm_reference_init(model)
    plain = initialised(scope, name, None)
    named = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    untouched = {k: v for k, v in plain.state_dict().items() if k.rsplit('.', 1)[0] not in named}
    assert len(untouched) > 50
    assert_equal_states(model, untouched)


@cases
def test_init_cfg_pretrained_comes_last(scope, name, tmp_path):
    """A whole-model checkpoint read under ``prefix`` gives every tensor,
    also where a Constant entry named the layer."""
    source = randomized(build(scope, name)).state_dict()
    path = saved(tmp_path, whole_model(source))
    model = initialised(scope, name, [
        LINEAR, dict(type='Pretrained', checkpoint=path, prefix='backbone')])
    assert_equal_states(model, source)


@cases
def test_init_cfg_with_two_pretrained_entries_is_refused(scope, name, tmp_path):
    path = saved(tmp_path, build(scope, name).state_dict())
    model = build(scope, name, init_cfg=[dict(type='Pretrained', checkpoint=path)] * 2)
    with pytest.raises(ValueError, match='Pretrained') as error:
        model.init_weights()
    assert not isinstance(error.value, CheckpointError)


def frozen_parts(scope: str, name: str, n: int) -> tuple[list[str], list[str]]:
    """What ``frozen_stages=n`` freezes, as each upstream class documents it:
    the parameters without gradients and the modules in eval mode."""
    if name == 'SPMPVT':  # stages 1..n (embeddings, blocks); 0: stage 1's embeddings
        embeds = [f'patch_embeds.{i}' for i in range(max(n, 1))]
        stages = embeds + [f'stages.{i}' for i in range(n)]
        return stages + [f'pos_embeds.{i}' for i in range(max(n, 1))], stages
    if name == 'SPMPVTv2':  # stages 1..n whole (layers[:n]); 0: the first patch embedding
        parts = [f'layers.{i}' for i in range(n)] if n else ['layers.0.0']
        return parts, parts
    if scope == 'mmpretrain':  # mmpretrain's Swin: the patch embedding and stages 0..n (their
        # output norms' parameters, not their mode)
        stages = ['patch_embed'] + [f'stages.{i}' for i in range(n + 1)]
        return stages + [f'norm{i}' for i in range(n + 1)], stages
    # mmdet's Swin: the patch embedding and stages 1..n with their output norms
    parts = ['patch_embed'] + [f'stages.{i}' for i in range(n)] + [f'norm{i}' for i in range(n)]
    return parts, parts + ['drop_after_pos']


@pytest.mark.parametrize('frozen_stages', [0, 1, 2])
@cases
def test_frozen_stages_hold_from_construction_and_after_train(scope, name, frozen_stages):
    """Frozen from construction on (DDP takes the parameters needing gradients
    before train() is called) and after train(); the rest trains."""
    model = build(scope, name, frozen_stages=frozen_stages)
    frozen, in_eval = frozen_parts(scope, name, frozen_stages)

    def assert_frozen(when: str) -> None:
        for n, p in model.named_parameters():
            assert p.requires_grad != under(n, frozen), f'{when}: {n}'

    assert_frozen('built')
    model.train()
    assert_frozen('train()')
    assert any(under(n, in_eval) for n, _ in model.named_modules())
    for n, m in model.named_modules():
        if n:
            assert m.training != under(n, in_eval), n


@pytest.mark.parametrize('norm_eval', [True, False])
@cases
def test_norm_eval_keeps_the_batchnorms_and_their_statistics(scope, name, norm_eval):
    model = build(scope, name, norm_eval=norm_eval)
    model.train()
    spm = spm_layers(model)
    norms = {n for n, m in model.named_modules() if isinstance(m, _BatchNorm)}
    # MSA's and GLE's in each of the three SPM layers, none elsewhere
    assert len(spm) == 3 and len(norms) == 6
    assert sum(isinstance(m, _BatchNorm) for s in spm for m in s.modules()) == 6
    for n, m in model.named_modules():
        assert m.training == (not norm_eval or n not in norms), n
    before = statistics(model)
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    for k, v in statistics(model).items():
        assert torch.equal(v, before[k]) == norm_eval, k


# The blocks of mmdet's and mmpretrain's Swin, mmdet's PVTv2 and PVT v1.
BLOCKS = ('SwinBlock', 'PVTEncoderLayer', 'PVTBlock')
# The output norms outside the stages (Swin's norm{i}, PVT's final norm):
# the rest, at the last depth.
OUTPUT_NORM = re.compile(r'^norm\d*\.')


class Named(torch.Tensor):
    """A parameter's value that reports each torch function it enters.

    A subclass, not a ``TorchFunctionMode``: torch 2.1's modes do not see
    indexing a ``Parameter`` (SPM's ``qkv.weight[...]``, Swin's bias table).
    """
    seen: list

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for value in torch.utils._pytree.tree_flatten((args, kwargs))[0]:
            if isinstance(value, Named) and value.param_name not in cls.seen:
                cls.seen.append(value.param_name)
        with torch._C.DisableTorchFunctionSubclass():  # results are plain tensors
            return func(*args, **kwargs)


def first_use(model: nn.Module, x: torch.Tensor) -> list:
    """The names of a model's parameters in the order its forward first uses them."""
    Named.seen = []
    params = {}
    for n, p in model.named_parameters():
        params[n] = p.detach().as_subclass(Named)
        params[n].param_name = n
    with torch.no_grad():
        torch.func.functional_call(model, params, (x, ))
    return Named.seen


@cases
def test_layer_depth_counts_the_blocks_before_each_parameter(scope, name):
    """Depth 0 the stem, block k (0-based, in forward order) k + 1, what runs
    between blocks (SPM, a stage's embeddings, norms) the depth of the block
    before it, the output norms and names outside the prefix (the head) the
    last; num_layers = the blocks + 2."""
    model = build(scope, name).eval()
    blocks = [n for n, m in model.named_modules() if type(m).__name__ in BLOCKS]
    stages = {}
    for n in blocks:
        stages.setdefault(n.rsplit('.', 1)[0], []).append(n)
    depths = [len(s) for s in stages.values()]
    assert len(depths) == 4
    num_layers = sum(depths) + 2
    order = first_use(model, torch.randn(1, 3, 64, 64))
    assert sorted(order) == sorted(n for n, _ in model.named_parameters())
    started, along = 0, []
    for n in order:
        depth, total = model.get_layer_depth('backbone.' + n, 'backbone.')
        assert total == num_layers and 0 <= depth < num_layers, n
        block = next((i for i, b in enumerate(blocks) if n.startswith(b + '.')), None)
        if block is not None:
            started = block + 1
            assert depth == started, n
        elif OUTPUT_NORM.match(n):
            assert depth == num_layers - 1, n
        else:
            assert depth == started, n
            along.append(depth)
    assert along[0] == 0 and along == sorted(along)  # the stem first; non-decreasing
    assert started == sum(depths)
    assert model.get_layer_depth('head.fc.weight', 'backbone.') == (num_layers - 1, num_layers)


@pytest.mark.parametrize('layout', ['bare', 'whole', 'prefixed'])
@cases
def test_load_pretrained_of_its_own_state(scope, name, layout, tmp_path):
    """The model's own state dict saved bare, as a whole model's
    (``backbone.``), or under a prefix given, beside another model's."""
    source = randomized(build(scope, name)).state_dict()
    prefix = None
    if layout == 'bare':
        checkpoint = source
    elif layout == 'whole':
        checkpoint = whole_model(source)
        checkpoint['state_dict']['head.fc.weight'] = torch.randn(10, 8)
    else:
        prefix = 'model.encoder'
        other = randomized(build(scope, name)).state_dict()
        checkpoint = whole_model(other)
        checkpoint['state_dict'].update(whole_model(source, 'model.encoder.')['state_dict'])
    model = build(scope, name)
    missing, unexpected = model.load_pretrained(saved(tmp_path, checkpoint), prefix)
    assert (missing, unexpected) == ([], [])
    assert_equal_states(model, source)


@cases
def test_a_prefix_the_file_lacks_is_named(scope, name, tmp_path):
    path = saved(tmp_path, whole_model(build(scope, name).state_dict()))
    message = r"prefix 'encoder\.'.*'backbone\.'"  # and what the file has
    with pytest.raises(CheckpointError, match=message):
        build(scope, name).load_pretrained(path, 'encoder')
    model = build(scope, name, init_cfg=dict(type='Pretrained', checkpoint=path, prefix='encoder'))
    with pytest.raises(CheckpointError, match=message):
        model.init_weights()
