"""SPM-Swin and SPM-PVTv2: mmdet's Swin and PVTv2 with SPM in place of their
downsampling, equal to the upstream models everywhere else, initialised from
upstream checkpoints with only the SPM layers left at init (what every SPM
backbone keeps is in test_backbone_contract.py)."""
import copy
import logging
import math
import re
from contextlib import contextmanager

import pytest
import torch
from mmdet.models.layers import PatchEmbed, PatchMerging
from mmdet.models.backbones import PyramidVisionTransformerV2, SwinTransformer
from mmengine.logging import MMLogger

from mmpretrain.models.backbones import SwinTransformer as PretrainSwinTransformer

from mmspm import SPMPVTv2, SPMSwinTransformer
from mmspm.models import spm_swin_pretrain
from mmspm.models.spm import TokenStepwisePatchMerging, reference_init
from mmspm.safe_load import CheckpointError

SWIN = dict(t=dict(), s=dict(depths=(2, 2, 18, 2)),
            b=dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)))
PVTV2 = dict(b0=dict(embed_dims=32, num_layers=[2, 2, 2, 2]),
             b1=dict(embed_dims=64, num_layers=[2, 2, 2, 2]),
             b2=dict(embed_dims=64, num_layers=[3, 4, 6, 3]),
             b3=dict(embed_dims=64, num_layers=[3, 4, 18, 3]),
             b4=dict(embed_dims=64, num_layers=[3, 8, 27, 3]),
             b5=dict(embed_dims=64, num_layers=[3, 6, 40, 3], mlp_ratios=(4, 4, 4, 4)))
VARIANTS = [('swin', k, v) for k, v in SWIN.items()] + [('pvtv2', k, v) for k, v in PVTV2.items()]
# pswin: the SPM-Swin built on mmpretrain's Swin (mmpretrain's registry).
CLASSES = dict(swin=(SPMSwinTransformer, SwinTransformer),
               pvtv2=(SPMPVTv2, PyramidVisionTransformerV2),
               pswin=(spm_swin_pretrain.SPMSwinTransformer, PretrainSwinTransformer))
# Small members of each family for the tests that build several models.
SMALL = dict(swin=dict(embed_dims=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8)),
             pvtv2=dict(embed_dims=32, num_layers=[1, 1, 2, 1]),
             # pad_small_map: mmpretrain's Swin refuses maps below the window
             # size otherwise (the tests' inputs are small).
             pswin=dict(arch=dict(embed_dims=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8]),
                        out_indices=(0, 1, 2, 3), pad_small_map=True))
FAMILIES = list(CLASSES)


def channels(family: str, kwargs: dict) -> list[int]:
    if family == 'swin':
        return [kwargs.get('embed_dims', 96) * 2**i for i in range(4)]
    return [kwargs['embed_dims'] * h for h in (1, 2, 5, 8)]


def randomized(model):
    """Every tensor drawn at random: no init value can coincide by chance."""
    for v in model.state_dict().values():
        if v.is_floating_point():
            v.normal_(0, 0.05)
    model.eval()  # mmdet's SwinTransformer.eval() returns None
    return model


def swap_back(ours, upstream) -> None:
    """Put the upstream model's downsampling layers where SPM sits."""
    if hasattr(ours, 'stages'):
        for mine, theirs in zip(ours.stages, upstream.stages):
            mine.downsample = copy.deepcopy(theirs.downsample)
    else:
        for mine, theirs in zip(ours.layers, upstream.layers):
            mine[0] = copy.deepcopy(theirs[0])


def spm_keys(model) -> list[str]:
    return [k for k in model.state_dict() if model.spm_key.match(k)]


@pytest.mark.parametrize('family,size,kwargs', VARIANTS, ids=[f'{f}-{s}' for f, s, _ in VARIANTS])
def test_shapes_at_even_odd_and_tiny_sizes(family, size, kwargs):
    model = CLASSES[family][0](**kwargs).eval()
    dims = channels(family, kwargs)
    # Tiny: mmdet's PVTv2 needs stage-1 maps of at least 8x8 (its stride-8
    # spatial-reduction convolution); Swin pads any size.
    tiny = (5, 3) if family == 'swin' else (29, 31)
    for h, w in ((64, 96), (67, 97), tiny):
        sizes = [(math.ceil(h / 4), math.ceil(w / 4))]
        for _ in range(3):
            sizes.append((math.ceil(sizes[-1][0] / 2), math.ceil(sizes[-1][1] / 2)))
        with torch.no_grad():
            outs = model(torch.randn(2, 3, h, w))
        assert isinstance(outs, tuple)
        assert [tuple(o.shape) for o in outs] == [(2, c, *s) for c, s in zip(dims, sizes)]


@pytest.mark.parametrize('family', ['swin', 'pvtv2'])
def test_spm_is_in_place_of_the_upstream_downsampling(family):
    model = CLASSES[family][0](**SMALL[family])
    spm = [m for m in model.modules() if isinstance(m, TokenStepwisePatchMerging)]
    assert len(spm) == 3
    upstream = CLASSES[family][1](**SMALL[family])
    if family == 'swin':
        assert sum(isinstance(m, PatchMerging) for m in upstream.modules()) == 3
        assert not any(isinstance(m, PatchMerging) for m in model.modules())
        assert [s.downsample for s in model.stages[:3]] == spm
    else:
        assert sum(isinstance(m, PatchEmbed) for m in upstream.modules()) == 4
        assert [m for m in model.modules() if isinstance(m, PatchEmbed)] == [model.layers[0][0]]
        assert [layer[0] for layer in model.layers[1:]] == spm
    dims = channels(family, SMALL[family])
    assert [(m.in_channels, m.out_channels) for m in spm] == list(zip(dims, dims[1:]))


@pytest.mark.parametrize('family', FAMILIES)
def test_with_the_upstream_downsampling_back_it_is_the_upstream_model(family):
    """Nothing but the downsampling layers differs from mmdet's backbone:
    with them swapped back, the same weights give the same outputs, bitwise."""
    ours_cls, upstream_cls = CLASSES[family]
    upstream = randomized(upstream_cls(**SMALL[family]))
    ours = ours_cls(**SMALL[family])
    swap_back(ours, upstream)
    ours.load_state_dict(upstream.state_dict())  # strict: the same names everywhere
    x = torch.randn(2, 3, 67, 97)
    with torch.no_grad():
        for mine, theirs in zip(ours.eval()(x), upstream(x)):
            assert torch.equal(mine, theirs)


@pytest.mark.parametrize('family', FAMILIES)
def test_a_gradient_reaches_every_parameter(family):
    model = CLASSES[family][0](**SMALL[family])
    model.init_weights()
    model.train()
    sum(o.square().mean() for o in model(torch.randn(2, 3, 64, 64))).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@contextmanager
def log_records():
    logger = MMLogger.get_current_instance()
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def pretrained(family: str, path, seed: int = 3, **kwargs):
    torch.manual_seed(seed)
    model = CLASSES[family][0](**dict(SMALL[family], **kwargs),
                               init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with log_records() as records:
        model.init_weights()
    return model.eval(), '\n'.join(r.getMessage() for r in records)


def assert_spm_at_reference_init(model, family: str, seed: int = 3):
    torch.manual_seed(seed)
    fresh = CLASSES[family][0](**SMALL[family])
    for m in fresh.modules():
        if isinstance(m, TokenStepwisePatchMerging):
            reference_init(m)
    ours = model.state_dict()
    for k in spm_keys(fresh):
        assert torch.equal(ours[k], fresh.state_dict()[k]), k
    # The reference's scheme, not the constructor's: the guide token's 7x7
    # depth-wise conv has std sqrt(2 / 49), PyTorch's default about 0.08.
    weight = model.state_dict()[[k for k in ours if k.endswith('gle.gtg.2.weight')][0]]
    assert abs(weight.std().item() - math.sqrt(2 / 49)) < 0.03


@pytest.mark.parametrize('family', FAMILIES)
@pytest.mark.parametrize('wrap', ['bare', 'detector', 'classifier'])
def test_upstream_checkpoint_initialises_all_but_spm(family, wrap, tmp_path):
    upstream = randomized(CLASSES[family][1](**SMALL[family]))
    state = upstream.state_dict()
    if wrap != 'bare':
        state = {f'backbone.{k}': v for k, v in state.items()}
        if wrap == 'classifier':
            state.update({'head.fc.weight': torch.randn(10, 256), 'head.fc.bias': torch.randn(10)})
        state = {'state_dict': state, 'meta': {'epoch': 12}}
    torch.save(state, tmp_path / 'upstream.pth')
    model, log = pretrained(family, tmp_path / 'upstream.pth')

    spm = spm_keys(model)
    ours = model.state_dict()
    for k, v in upstream.state_dict().items():
        if k in ours:
            assert torch.equal(ours[k], v), k
    assert set(ours) - set(upstream.state_dict()) == set(spm)
    assert_spm_at_reference_init(model, family)
    # Counted without the buffers the model recomputes (Swin's index).
    counted = [k for k in ours if not model._recomputed(k)]
    assert f'{len(counted) - len(spm)} of {len(counted)} tensors' in log
    assert ', '.join(spm) in log  # exactly which SPM keys were left at init
    x = torch.randn(1, 3, 64, 64)
    swap_back(model, upstream)  # and then it is the upstream model
    with torch.no_grad():
        assert torch.equal(model(x)[3], upstream(x)[3])


def swin_authors_layout(state: dict) -> dict:
    """mmdet's Swin keys back in the Swin authors' layout (what mmdet's
    swin_converter reads), their final `norm` for mmdet's last output norm."""
    out = {}
    for k, v in state.items():
        if k.startswith(('norm0', 'norm1', 'norm2')) or '.downsample.' in k:
            continue
        k = (k.replace('stages.', 'layers.').replace('attn.w_msa.', 'attn.')
             .replace('ffn.layers.0.0.', 'mlp.fc1.').replace('ffn.layers.1.', 'mlp.fc2.')
             .replace('patch_embed.projection', 'patch_embed.proj').replace('norm3.', 'norm.'))
        out[k] = v
    out['head.weight'] = torch.randn(1000, 256)
    return out


def test_swin_authors_checkpoint_initialises_all_but_spm_and_the_inner_norms(tmp_path):
    upstream = randomized(SwinTransformer(**SMALL['swin']))
    torch.save({'model': swin_authors_layout(upstream.state_dict())}, tmp_path / 'swin.pth')
    model, log = pretrained('swin', tmp_path / 'swin.pth')
    ours = model.state_dict()
    loaded = [k for k in upstream.state_dict()
              if not k.startswith(('norm0', 'norm1', 'norm2')) and '.downsample.' not in k]
    for k in loaded:
        assert torch.equal(ours[k], upstream.state_dict()[k]), k
    assert 'output norms not in the checkpoint (at init): norm0.weight' in log
    assert_spm_at_reference_init(model, 'swin')


@pytest.mark.parametrize('family,other', [
    ('swin', dict(depths=(1, 1, 3, 1))),          # deeper: tensors with no place
    ('swin', dict(embed_dims=64)),                # wider: other shapes
    ('pvtv2', dict(num_layers=[1, 1, 1, 1])),     # shallower: tensors missing
])
def test_a_checkpoint_of_another_size_is_refused(family, other, tmp_path):
    upstream = CLASSES[family][1](**dict(SMALL[family], **other))
    torch.save(upstream.state_dict(), tmp_path / 'other.pth')
    with pytest.raises(CheckpointError, match='another (architecture or )?size'):
        pretrained(family, tmp_path / 'other.pth')


def test_strides_other_than_two_are_refused():
    with pytest.raises(ValueError, match='strides'):
        SPMSwinTransformer(strides=(4, 2, 1, 2))


def spm_modules(model) -> list:
    return [m for m in model.modules() if isinstance(m, TokenStepwisePatchMerging)]


@pytest.mark.parametrize('family', FAMILIES)
def test_init_cfg_list_as_mmengine_documents_then_saved_and_reloaded(family, tmp_path):
    """As mmpretrain's test_init_weights: the values the list asks for, then
    the model saved and loaded back through a Pretrained init_cfg (with a
    prefix, and winning over the other entries)."""
    cls = CLASSES[family][0]
    model = cls(**SMALL[family], init_cfg=[
        dict(type='Kaiming', layer='Conv2d', mode='fan_in', distribution='uniform'),
        dict(type='Constant', layer='LayerNorm', val=2., bias=0.5),
        dict(type='TruncNormal', layer='Linear', std=0.5, bias=0.)])
    model.init_weights()
    for m in model.modules():
        if isinstance(m, torch.nn.LayerNorm):
            assert (m.weight == 2).all() and (m.bias == 0.5).all()
        elif isinstance(m, torch.nn.Conv2d):  # uniform in +-sqrt(6 / fan_in)
            fan_in = m.weight[0].numel()
            assert m.weight.abs().max() <= math.sqrt(6 / fan_in) + 1e-6
            assert m.weight.abs().max() > 0.8 * math.sqrt(6 / fan_in)
    qkv = torch.cat([spm.gle.qkv.weight.flatten() for spm in spm_modules(model)])
    assert 0.3 < qkv.std().item() < 0.6  # TruncNormal std 0.5, not the reference's 0.02

    state = {f'backbone.{k}': v for k, v in model.state_dict().items()}
    state['neck.weight'] = torch.randn(3)
    torch.save({'state_dict': state}, tmp_path / 'whole.pth')
    again = cls(**SMALL[family], init_cfg=[
        dict(type='Constant', layer=['Linear', 'LayerNorm', 'Conv2d'], val=3.),
        dict(type='Pretrained', checkpoint=str(tmp_path / 'whole.pth'), prefix='backbone.')])
    again.init_weights()
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


def test_init_cfg_of_another_form_is_refused():
    with pytest.raises(TypeError, match='list of such dicts'):
        SPMPVTv2(**SMALL['pvtv2'], init_cfg='checkpoint.pth').init_weights()


class SavedTensors:
    """Bytes that autograd keeps for the backward pass, in total and while
    an SPM layer runs its forward (torch's saved-tensor hooks: deterministic,
    unlike a memory reading). With activation checkpointing, what the
    checkpointed forward saves goes to checkpoint's own hooks, not to these."""

    def __init__(self, model):
        self.total = self.spm = self.spm_inputs = 0
        self.inside = 0
        self.handles = []
        for m in spm_modules(model):
            self.handles.append(m.register_forward_pre_hook(self._enter))
            self.handles.append(m.register_forward_hook(self._leave))

    def _enter(self, module, args):
        self.inside += 1
        self.spm_inputs += args[0].numel() * args[0].element_size()

    def _leave(self, *args):
        self.inside -= 1

    def pack(self, t):
        size = t.numel() * t.element_size()
        self.total += size
        if self.inside:
            self.spm += size
        return t


def saved_and_grads(model, x):
    saved = SavedTensors(model)
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
        loss = sum(o.square().mean() for o in model(x))
    loss.backward()
    for h in saved.handles:
        h.remove()
    return saved, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize('family', FAMILIES)
def test_with_cp_covers_the_spm_layers(family):
    """Same gradients; the SPM layers keep nothing for the backward pass but
    their inputs, and the whole forward keeps less."""
    torch.manual_seed(0)
    plain = CLASSES[family][0](**SMALL[family], drop_path_rate=0.)
    plain.init_weights()
    cp = CLASSES[family][0](**SMALL[family], drop_path_rate=0., with_cp=True)
    cp.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    saved_plain, grads_plain = saved_and_grads(plain.train(), x)
    saved_cp, grads_cp = saved_and_grads(cp.train(), x)
    for name, grad in grads_plain.items():
        torch.testing.assert_close(grads_cp[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    assert saved_cp.spm == saved_cp.spm_inputs
    assert saved_plain.spm > 10 * saved_plain.spm_inputs
    assert saved_cp.total < saved_plain.total / 2


@pytest.mark.parametrize('family', ['swin', 'pswin'])
def test_layer_depth_is_mmpretrain_swins_with_spm_as_the_downsampling(family):
    """Both SPM-Swins give every parameter mmpretrain's Swin's depth, and the
    SPM layers that of the PatchMerging they replace."""
    ours = CLASSES[family][0](**SMALL[family])
    upstream = PretrainSwinTransformer(**SMALL['pswin'])
    names = [n for n, _ in ours.named_parameters()]
    for name in names:
        theirs = re.sub(r'downsample\..*', 'downsample.reduction.weight', name)
        assert ours.get_layer_depth(name) == upstream.get_layer_depth(theirs), name
    assert ours.get_layer_depth('backbone.stages.1.downsample.msa.proj.0.weight',
                                'backbone.') == (2, 7)
    assert ours.get_layer_depth('head.fc.weight', 'backbone.') == (6, 7)


def test_layer_decay_example_config():
    """mmpretrain's LearningRateDecayOptimWrapperConstructor, as the example
    config uses it, gives each depth its decayed learning rate."""
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper

    from mmspm.builder import build_model
    cfg = Config.fromfile('configs/imagenet/spm-swin-t_8xb128-lrd_in1k.py')
    model = build_model(cfg)
    groups = build_optim_wrapper(model, cfg.optim_wrapper).optimizer.param_groups
    lr = {g['param_name']: g['lr'] for g in groups}
    base, rate = cfg.optim_wrapper.optimizer.lr, cfg.optim_wrapper.paramwise_cfg.layer_decay_rate
    num_layers = 2 + 12  # Swin-T: 12 blocks
    assert lr['head.fc.weight'] == pytest.approx(base)
    assert lr['backbone.patch_embed.projection.weight'] == pytest.approx(
        base * rate**(num_layers - 1))
    # SPM after stage 1 (2 blocks): the depth of stage 1's last block.
    assert lr['backbone.stages.0.downsample.msa.proj.0.weight'] == pytest.approx(
        base * rate**(num_layers - 1 - 2))
    assert lr['backbone.stages.0.downsample.msa.proj.0.weight'] == pytest.approx(
        lr['backbone.stages.0.blocks.1.attn.w_msa.qkv.weight'])


@pytest.mark.parametrize('arch,dims', [('t', 96), ('s', 96), ('b', 128)])
def test_mmpretrain_registry_builds_the_mmpretrain_spm_swin_with_short_arch_names(arch, dims):
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    # In mmpretrain's registry whatever default scope a module fixture made.
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(dict(type='SPMSwinTransformer', arch=arch))
    assert type(model) is spm_swin_pretrain.SPMSwinTransformer
    assert [m.in_channels for m in spm_modules(model)] == [dims, 2 * dims, 4 * dims]


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_dense_registries_keep_the_mmdet_spm_swin(scope):
    import importlib
    registry = importlib.import_module(f'{scope}.registry').MODELS
    assert registry.get('SPMSwinTransformer') is SPMSwinTransformer


def test_mmpretrain_spm_swin_classifier_initialises_the_dense_spm_swin(tmp_path):
    """A classifier trained with mmpretrain's SPM-Swin (as
    configs/imagenet/spm-swin-t_8xb128_in1k.py) starts the SPM-Swin of the
    detection and segmentation configs, SPM layers included."""
    from mmpretrain.models import ImageClassifier
    classifier = ImageClassifier(
        backbone=dict(type='SPMSwinTransformer', **dict(SMALL['pswin'], out_indices=(3,))),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=256))
    randomized(classifier)
    torch.save({'state_dict': classifier.state_dict(), 'meta': {'epoch': 300}},
               tmp_path / 'cls.pth')
    dense, log = pretrained('swin', tmp_path / 'cls.pth')
    mine = dense.state_dict()
    theirs = classifier.backbone.state_dict()
    spm = spm_keys(dense)
    assert spm
    for k, v in theirs.items():
        assert torch.equal(mine[k], v), k
    assert 'SPM layers left at init: 0 tensors' in log
    assert set(mine) - set(theirs) == {f'norm{i}.{p}' for i in range(3) for p in ('weight', 'bias')}


@pytest.mark.parametrize('version', [1, 2])
def test_pretrain_swin_upgrades_old_versions_as_mmpretrain(version):
    """mmpretrain's Swin state of version 1 (the last norm saved as `norm.`)
    and 2 (`attn_mask` saved) loads, strictly, into mmpretrain's SPM-Swin as
    into mmpretrain's Swin, giving the same tensors."""
    _, upstream_cls = CLASSES['pswin']
    source = randomized(upstream_cls(**SMALL['pswin']))
    state = source.state_dict()
    old = type(state)()
    for k, v in state.items():
        old['norm.' + k[len('norm3.'):] if version == 1 and k.startswith('norm3.') else k] = v
    old['stages.0.blocks.1.attn.attn_mask'] = torch.zeros(4, 49, 49)
    old._metadata = copy.deepcopy(state._metadata)
    old._metadata['']['version'] = version
    theirs, ours = upstream_cls(**SMALL['pswin']), CLASSES['pswin'][0](**SMALL['pswin'],
                                                                        spm_stages=())
    for model in (theirs, ours):
        model.load_state_dict(copy.copy(old), strict=True)
    for k, v in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k
    assert torch.equal(ours.norm3.weight, source.norm3.weight)
