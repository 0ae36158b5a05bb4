"""SPM-Swin and SPM-PVTv2: mmdet's Swin and PVTv2 with SPM in place of their
downsampling, equal to the upstream models everywhere else, initialised from
upstream checkpoints with only the SPM layers left at init."""
import copy
import logging
import math
from contextlib import contextmanager

import pytest
import torch
from mmdet.models.layers import PatchEmbed, PatchMerging
from mmdet.models.backbones import PyramidVisionTransformerV2, SwinTransformer
from mmengine.logging import MMLogger

from mmspm import SPMPVTv2, SPMSwinTransformer
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
CLASSES = dict(swin=(SPMSwinTransformer, SwinTransformer),
               pvtv2=(SPMPVTv2, PyramidVisionTransformerV2))
# Small members of each family for the tests that build several models.
SMALL = dict(swin=dict(embed_dims=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8)),
             pvtv2=dict(embed_dims=32, num_layers=[1, 1, 2, 1]))


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
    if isinstance(ours, SPMSwinTransformer):
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


@pytest.mark.parametrize('family', ['swin', 'pvtv2'])
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


@pytest.mark.parametrize('family', ['swin', 'pvtv2'])
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


@pytest.mark.parametrize('family', ['swin', 'pvtv2'])
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
    assert f'{len(ours) - len(spm)} of {len(ours)} tensors' in log
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
