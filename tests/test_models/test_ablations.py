"""The paper's ablations as options: ``spm_stages``, ``gle``, ``guide`` and
``guide_kernel_size`` of SPMPVT, ``spm_stages`` of SPM-Swin and SPM-PVTv2, and
the configs of configs/imagenet/ablations. The variants' definitions, which
the expected names and counts below are written from, are in
docs/reference_model.md ("Ablation variants")."""
import glob
import os.path as osp
import re

import pytest
import torch
from mmdet.models.backbones import PyramidVisionTransformer
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.runner import load_checkpoint as runner_load_checkpoint

from mmspm import SPMPVT
from mmspm.analysis import build_model
from mmspm.deployment import EXPORT_TORCH
from mmspm.models.spm import StepwisePatchMerging, TokenStepwisePatchMerging, set_spm_path
from mmspm.safe_load import CheckpointError, load_checkpoint
from tests.test_models.test_spm_plugin import CLASSES, randomized
from tests.test_models.test_spm_plugin import SMALL as PLUGIN_SMALL
from tests.utils import FLOAT32, ROOT, needs_torch, reference_pvt_v1_state

SMALL = dict(embed_dims=(32, 64, 128, 256), num_heads=(1, 2, 4, 8), mlp_ratios=(2, 2, 2, 2),
             depths=(1, 1, 1, 1), sr_ratios=(4, 2, 2, 1))
DIMS = SMALL['embed_dims']
VARIANTS = {
    'default': dict(),
    'nospm': dict(spm_stages=()),
    'spm1': dict(spm_stages=(1, )),
    'spm3': dict(spm_stages=(3, )),
    'spm12': dict(spm_stages=(1, 2)),
    'gle-conv': dict(gle='conv'),
    'gle-avgpool': dict(gle='avgpool'),
    'guide-cls': dict(guide='cls'),
    'guide-gap': dict(guide='gap'),
    'gtg3': dict(guide_kernel_size=3),
    'gtg5': dict(guide_kernel_size=5),
    'gtg9': dict(guide_kernel_size=9),
}
# How each variant's options read in messages (SPMPVT's arguments, the
# defaults left out).
DESCRIPTIONS = {
    'default': 'spm_stages=(1, 2, 3)',
    'nospm': 'spm_stages=()',
    'spm1': 'spm_stages=(1,)',
    'gle-conv': "spm_stages=(1, 2, 3), gle='conv'",
    'gle-avgpool': "spm_stages=(1, 2, 3), gle='avgpool'",
    'guide-cls': "spm_stages=(1, 2, 3), guide='cls'",
    'guide-gap': "spm_stages=(1, 2, 3), guide='gap'",
    'gtg3': 'spm_stages=(1, 2, 3), guide_kernel_size=3',
    'gtg9': 'spm_stages=(1, 2, 3), guide_kernel_size=9',
}
DATA = osp.join(ROOT, 'tests', 'data', 'ablations', 'spm_pvt_default_outputs.pt')
CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'imagenet', 'ablations', '*.py')))


def small(variant: str = 'default', **kwargs) -> SPMPVT:
    return SPMPVT(SMALL, pretrain_img_size=64, **VARIANTS[variant], **kwargs)


def seeded_state(model: torch.nn.Module, seed: int = 0) -> dict:
    """Every floating-point tensor drawn from ``seed``, in key order (running
    variances positive); how tests/data/ablations was made."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in sorted(model.state_dict().items()):
        if not v.is_floating_point():
            state[k] = v.clone()
        elif k.endswith('running_var'):
            state[k] = torch.rand(v.shape, generator=gen) + 0.5
        else:
            state[k] = torch.randn(v.shape, generator=gen) * 0.2
    return state


# State-dict names of a merge (under patch_embeds.{k}.), by kind.
def _bn(name: str) -> set[str]:
    return {f'{name}.{p}' for p in ('weight', 'bias', 'running_mean', 'running_var',
                                    'num_batches_tracked')}


def _pair(name: str) -> set[str]:
    return {f'{name}.weight', f'{name}.bias'}


MSA = {f'msa.local_convs.{i}.{p}' for i in range(4) for p in ('weight', 'bias')} | _pair(
    'msa.proj.0') | _bn('msa.proj.1') | _pair('msa.proj.3')
ATTENTION = _pair('gle.norm0') | _pair('gle.qkv') | _pair('gle.norm1')
MERGE_KEYS = dict(
    spm=MSA | _bn('gle.gtg.0') | _pair('gle.gtg.2') | ATTENTION,
    pvt=_pair('proj') | _pair('norm'),
    conv=MSA | _pair('gle.conv') | _pair('gle.norm1'),
    avgpool=MSA | _pair('gle.norm1'),
    cls=MSA | {'gle.cls_token'} | ATTENTION,
    gap=MSA | ATTENTION,
)


# Biases before MSA's BatchNorm (msa.proj.1): in training mode it removes any
# per-channel constant, so their gradient is zero up to rounding.
BEFORE_BATCHNORM = re.compile(r'msa\.(local_convs\.\d|proj\.0)\.bias$')


def merge_kind(variant: str, k: int) -> str:
    options = VARIANTS[variant]
    if k not in options.get('spm_stages', (1, 2, 3)):
        return 'pvt'
    return options.get('gle', options.get('guide', 'spm')).replace('attention', 'spm')


def merge_params(kind: str, cin: int, c: int, kernel: int = 7) -> int:
    """Parameters (not buffers) of a merge ``cin -> c`` of this kind."""
    h = cin // 4
    msa = (sum(h * k * k + h for k in (3, 5, 7, 9))  # depth-wise convs, one per head
           + 2 * cin * 4 + 2 * cin  # grouped 1x1: 4 inputs per output
           + 2 * 2 * cin  # BatchNorm
           + c * 2 * cin + c)  # 1x1
    norm = 2 * c
    attention = norm + 3 * c * c + 3 * c + norm  # norm0, qkv, norm1
    return dict(pvt=cin * c * 4 + c + norm,
                spm=msa + norm + c * kernel * kernel + c + attention,
                conv=msa + c * c * 4 + c + norm,
                avgpool=msa + norm,
                cls=msa + c + attention,
                gap=msa + attention)[kind]


def test_default_is_the_model_before_the_options():
    """The defaults (given or not) have the names and shapes SPMPVT had before
    the options existed and compute what it computed on the same weights
    (tests/data/ablations, recorded with that code), dense and with the cls
    token, at an even size. (At the recorded odd size SPMPVT then padded
    where mmdet's PVT v1 floors; it has since taken mmdet's semantics,
    which tests/test_models/test_upstream_equality.py checks.)"""
    before = load_checkpoint(DATA)
    explicit = dict(spm_stages=(1, 2, 3), gle='attention', guide='gtg', guide_kernel_size=7)
    for mode, cls in (('dense', False), ('cls', True)):
        for options in ({}, explicit):
            model = SPMPVT(SMALL, pretrain_img_size=64, with_cls_token=cls,
                           drop_path_rate=0., **options).eval()
            assert {k: list(v.shape) for k, v in model.state_dict().items()} == \
                before[f'shapes_{mode}']
            model.load_state_dict(seeded_state(model), strict=True)
            gen = torch.Generator().manual_seed(1)
            # 23x29 is drawn second: the generator's draws stay the recorded ones.
            for hw in ((32, 32), ):
                x = torch.randn(1, 3, *hw, generator=gen)
                with torch.no_grad():
                    outs = model(x)
                for i, out in enumerate(outs):
                    expected = before['outputs'][f'{mode}_{hw[0]}x{hw[1]}_{i}']
                    # Recorded on another CPU, whose kernels round
                    # differently: equal to float32 precision, not bitwise.
                    torch.testing.assert_close(out, expected, **FLOAT32)


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_names_and_counts_differ_only_in_the_merges(variant):
    """Each merge has the names and parameter count of its kind; everything
    outside the merges is the default model's, name for name and shape for
    shape."""
    before = load_checkpoint(DATA)['shapes_dense']
    model = small(variant)
    state = model.state_dict()
    kernel = VARIANTS[variant].get('guide_kernel_size', 7)
    for k in (1, 2, 3):
        head = f'patch_embeds.{k}.'
        kind = merge_kind(variant, k)
        assert {n[len(head):] for n in state if n.startswith(head)} == MERGE_KEYS[kind], k
        count = sum(p.numel() for p in model.patch_embeds[k].parameters())
        assert count == merge_params(kind, DIMS[k - 1], DIMS[k], kernel), k
        if kind == 'spm':
            assert list(state[head + 'gle.gtg.2.weight'].shape) == [DIMS[k], 1, kernel, kernel]
        if kind == 'cls':
            assert state[head + 'gle.cls_token'].shape == (1, 1, DIMS[k])
    outside = {n: list(v.shape) for n, v in state.items()
               if not n.startswith(('patch_embeds.1.', 'patch_embeds.2.', 'patch_embeds.3.'))}
    assert outside == {n: s for n, s in before.items()
                       if not n.startswith(('patch_embeds.1.', 'patch_embeds.2.',
                                            'patch_embeds.3.'))}


def test_no_spm_has_pvt_t_parameter_count():
    """docs/reference_model.md: PVT v1 Tiny (dense, mmdet) has 12.71M parameters."""
    model = SPMPVT('tiny', spm_stages=())
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == 12.71


@pytest.mark.parametrize('variant', list(VARIANTS))
@pytest.mark.parametrize('with_cls_token', [False, True], ids=['dense', 'cls'])
def test_variant_trains_and_predicts(variant, with_cls_token):
    """A training step reaches every parameter; prediction at an even and an
    odd size has the shapes of the default model, and GLE's two paths
    through the windows agree. ('corner' paddings: the merges that are not
    SPM take odd sizes down to 1x1, as SPM does.)"""
    model = small(variant, with_cls_token=with_cls_token, drop_path_rate=0.,
                  paddings=('corner', ) * 4)
    model.init_weights()
    model.train()
    outs = model(torch.randn(2, 3, 35, 29))
    sum(o.square().mean() for o in outs).backward()
    assert [n for n, p in model.named_parameters() if (p.grad is None or not p.grad.any())
            and not BEFORE_BATCHNORM.search(n)] == []
    model.eval()
    for hw, grids in (((32, 32), [(8, 8), (4, 4), (2, 2), (1, 1)]),
                      ((23, 29), [(6, 8), (3, 4), (2, 2), (1, 1)])):
        x = torch.randn(1, 3, *hw)
        results = []
        for path in ('chunked', 'whole'):
            set_spm_path(model, path)
            with torch.no_grad():
                results.append(model(x))
        for a, b in zip(*results):
            torch.testing.assert_close(a, b, **FLOAT32)
        shapes = [(1, c, *g) for c, g in zip(DIMS, grids)]
        if with_cls_token:
            shapes[3] = (1, DIMS[3])
        assert [tuple(o.shape) for o in results[0]] == shapes
        assert all(torch.isfinite(o).all() for o in results[0])


@pytest.mark.parametrize('variant', [v for v in VARIANTS if v != 'default'])
def test_variant_changes_the_outputs_from_its_first_changed_merge_on(variant):
    """On the default model's weights (for the tensors both have), a variant
    computes the default's outputs up to the first merge it changes and
    other outputs from there on."""
    default = small(drop_path_rate=0.).eval()
    default.load_state_dict(seeded_state(default))
    model = small(variant, drop_path_rate=0.)
    model.init_weights()
    model.eval()
    shared = default.state_dict()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name in shared and shared[name].shape == tensor.shape:
                tensor.copy_(shared[name])
    first = min(k for k in (1, 2, 3) if merge_kind(variant, k) != 'spm' or
                VARIANTS[variant].get('guide_kernel_size', 7) != 7)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        theirs, mine = default(x), model(x)
    for i, (a, b) in enumerate(zip(theirs, mine)):
        if i < first:
            assert torch.equal(a, b), i
        else:
            assert (a - b).abs().max() > 1e-3, i


@needs_torch(EXPORT_TORCH, 'torch.export with automatic dynamic sizes')
@pytest.mark.parametrize('variant', ['gle-conv', 'gle-avgpool', 'guide-cls', 'guide-gap',
                                     'gtg3'])
def test_variant_exports_for_every_size(variant):
    """torch.export with symbolic height and width, captured at one size,
    computes the variant's SPM layer at odd sizes too."""
    options = {k: v for k, v in VARIANTS[variant].items()}
    spm = StepwisePatchMerging(32, 64, **options).eval()
    dim = torch.export.Dim.AUTO
    program = torch.export.export(spm, (torch.randn(2, 32, 8, 12), ),
                                  dynamic_shapes=({2: dim, 3: dim}, ))
    for hw in [(8, 12), (7, 9), (13, 6), (3, 3)]:
        x = torch.randn(2, 32, *hw)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(x), spm(x), **FLOAT32)


@pytest.mark.parametrize('saved,loaded', [
    ('gle-conv', 'default'), ('default', 'guide-gap'), ('gtg3', 'gtg9'), ('spm1', 'default'),
    ('guide-cls', 'gle-avgpool'), ('default', 'nospm'), ('nospm', 'spm1')])
def test_checkpoint_of_another_variant_is_refused(saved, loaded, tmp_path):
    """Through init_cfg Pretrained, load_pretrained and the Runner's
    load_checkpoint: refused, naming the checkpoint's variant and the
    model's."""
    path = str(tmp_path / f'{saved}.pth')
    source = small(saved)
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in source.state_dict().items()}},
               path)
    message = (f'The checkpoint is SPM-PVT with {DESCRIPTIONS[saved]}, the model is SPM-PVT '
               f'with {DESCRIPTIONS[loaded]}:')
    model = small(loaded, init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(CheckpointError) as error:
        model.init_weights()
    assert message in str(error.value)
    with pytest.raises(CheckpointError) as error:
        small(loaded).load_pretrained(path)
    assert message in str(error.value)
    bare = str(tmp_path / 'bare.pth')
    torch.save(source.state_dict(), bare)
    with pytest.raises(CheckpointError) as error:
        runner_load_checkpoint(small(loaded), bare)
    assert message in str(error.value)
    # Its own variant takes it.
    small(saved).load_pretrained(path)


def test_no_spm_is_mmdet_pyramid_vision_transformer(tmp_path):
    """spm_stages=() is PVT v1: mmdet's PVT-T checkpoint (its layout, as the
    PVT v1 conversion reads it) loads without from_pvt_v1, every tensor, and
    gives mmdet's outputs at every stage, on the position embeddings' grid
    and off it."""
    upstream = PyramidVisionTransformer(num_layers=[2, 2, 2, 2])
    for name, value in upstream.state_dict().items():
        # LayerNorm weights (the only 1-D weights) around 1.
        one = name.endswith('.weight') and value.dim() == 1
        value.copy_(torch.randn_like(value) * 0.05 + one)
    upstream.eval()
    path = str(tmp_path / 'pvt-t.pth')
    torch.save({'state_dict': upstream.state_dict()}, path)
    ours = SPMPVT('tiny', spm_stages=(), norm_cfg=dict(type='LN', eps=1e-6),
                  init_cfg=dict(type='Pretrained', checkpoint=path))
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    ours.init_weights()
    ours.eval()
    assert not any(torch.equal(before[k], v) for k, v in ours.state_dict().items()
                   if v.is_floating_point())
    for hw in ((224, 224), (160, 192)):
        x = torch.randn(1, 3, *hw)
        with torch.no_grad():
            for mine, theirs in zip(ours(x), upstream(x)):
                torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)


def test_pvt_v1_checkpoint_fills_the_merges_that_are_not_spm(ref_tiny, tmp_path):
    """With from_pvt_v1, the PVT v1 release's patch embeddings (official
    layout) fill the merges that are not SPM; the SPM merge alone keeps its
    initialisation. Without it, the checkpoint is refused (SPM would stay
    untrained unnoticed)."""
    state = reference_pvt_v1_state(ref_tiny)
    path = str(tmp_path / 'pvt_tiny.pth')
    torch.save(state, path)
    with pytest.raises(CheckpointError, match='from_pvt_v1=True'):
        SPMPVT('tiny', spm_stages=(1, )).load_pretrained(path)
    model = SPMPVT('tiny', spm_stages=(1, ))
    missing, unexpected = model.load_pretrained(path, from_pvt_v1=True)
    # (BatchNorm fills a missing num_batches_tracked itself, unreported.)
    assert sorted(missing) == sorted(f'patch_embeds.1.{k}' for k in MERGE_KEYS['spm']
                                     if not k.endswith('num_batches_tracked'))
    assert unexpected == []
    own = model.state_dict()
    for k in (2, 3):
        for name in ('proj.weight', 'proj.bias', 'norm.weight', 'norm.bias'):
            assert torch.equal(own[f'patch_embeds.{k}.{name}'],
                               state[f'patch_embed{k + 1}.{name}']), (k, name)


@pytest.mark.parametrize('options,error', [
    (dict(spm_stages=(0, )), r'spm_stages=\(0,\) has \[0\].*merges are \(1, 2, 3\)'),
    (dict(spm_stages=(1, 4)), r'has \[4\]'),
    (dict(spm_stages=(2, 2)), 'names a merge twice'),
    (dict(spm_stages=3), 'must be a list or tuple'),
    (dict(gle='maxpool'), "unknown gle='maxpool'"),
    (dict(guide='token'), "unknown guide='token'"),
    (dict(guide_kernel_size=4), 'guide_kernel_size must be a positive odd'),
    (dict(guide_kernel_size=0), 'guide_kernel_size must be a positive odd'),
    (dict(gle='conv', guide='cls'), "guide='cls' needs gle='attention'"),
    (dict(guide='gap', guide_kernel_size=5), 'guide_kernel_size=5 is the kernel'),
    (dict(gle='avgpool', guide_kernel_size=3), 'guide_kernel_size=3 is the kernel'),
    (dict(spm_stages=(), gle='conv'), r'spm_stages=\(\) has no SPM merge'),
])
def test_bad_options_are_refused(options, error):
    with pytest.raises((ValueError, TypeError), match=error):
        SPMPVT(SMALL, **options)


@pytest.mark.parametrize('family', list(CLASSES))
def test_plugin_spm_stages(family, tmp_path):
    """SPM-Swin (mmdet's and mmpretrain's) and SPM-PVTv2 with SPM at merge 2
    only: merges 1 and 3 are the upstream layers under the upstream names,
    filled by an upstream checkpoint, and the outputs before merge 2 are the
    upstream model's; with spm_stages=() the model is the upstream one. A
    checkpoint of another spm_stages is refused, naming spm_stages."""
    ours_cls, upstream_cls = CLASSES[family]
    kwargs = PLUGIN_SMALL[family]
    upstream = randomized(upstream_cls(**kwargs))
    path = str(tmp_path / 'upstream.pth')
    torch.save(upstream.state_dict(), path)
    model = ours_cls(**kwargs, spm_stages=(2, ), init_cfg=dict(type='Pretrained',
                                                               checkpoint=path))
    model.init_weights()
    model.eval()
    merges = ([s.downsample for s in model.stages[:3]] if hasattr(model, 'stages') else
              [layer[0] for layer in model.layers[1:]])
    assert [isinstance(m, TokenStepwisePatchMerging) for m in merges] == [False, True, False]
    own, theirs = model.state_dict(), upstream.state_dict()
    spm_prefix = 'stages.1.downsample.' if hasattr(model, 'stages') else 'layers.2.0.'
    assert {k for k in own if not k.startswith(spm_prefix)} == {
        k for k in theirs if not k.startswith(spm_prefix)}
    for k, v in own.items():
        if not k.startswith(spm_prefix) and 'relative_position_index' not in k:
            assert torch.equal(v, theirs[k]), k
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        mine, ref = model(x), upstream(x)
    # Merge 2 leads into output 2 (Swin's stage outputs precede their
    # downsampling, PVTv2's follow their embedding).
    for i, (a, b) in enumerate(zip(mine, ref)):
        assert torch.equal(a, b) if i < 2 else not torch.allclose(a, b), i
    plain = ours_cls(**kwargs, spm_stages=())
    plain.load_state_dict(theirs)
    with torch.no_grad():
        for a, b in zip(plain.eval()(x), ref):
            assert torch.equal(a, b)
    spm_path = str(tmp_path / 'spm.pth')
    torch.save(randomized(ours_cls(**kwargs)).state_dict(), spm_path)
    with pytest.raises(CheckpointError, match=r'merge\(s\) \[1, 3\].*spm_stages=\(2,\)'):
        ours_cls(**kwargs, spm_stages=(2, )).load_pretrained(spm_path)
    with pytest.raises(ValueError, match='not merge numbers'):
        ours_cls(**kwargs, spm_stages=(4, ))


@pytest.mark.parametrize('config', CONFIGS, ids=osp.basename)
def test_ablation_config_trains_a_step(config):
    """Every ablation config is the full model's with its option: its
    classifier (one block per stage) takes a training step that updates the
    merges and predicts 1000 classes."""
    from mmpretrain.structures import DataSample
    cfg = Config.fromfile(config)
    base = Config.fromfile(osp.join(ROOT, 'configs/imagenet/spm-pvt-t_8xb128_in1k.py'))
    changed = {k: v for k, v in cfg.model.backbone.items()
               if base.model.backbone.get(k, '?') != v}
    assert set(changed) <= {'spm_stages', 'gle', 'guide', 'guide_kernel_size'} and changed
    cfg.model.backbone.update(num_layers=[1, 1, 1, 1], drop_path_rate=0.)
    model = build_model(cfg)
    assert isinstance(model.backbone, SPMPVT)
    kinds = {k: type(m).__name__ for k, m in enumerate(model.backbone.patch_embeds)}
    spm_stages = changed.get('spm_stages', (1, 2, 3))
    assert [kinds[k] == 'StepwisePatchMerging' for k in (1, 2, 3)] == [
        k in spm_stages for k in (1, 2, 3)]
    images = [torch.randint(0, 256, (3, 67, 75), dtype=torch.uint8) for _ in range(2)]
    batch = dict(inputs=images, data_samples=[DataSample().set_gt_label(i) for i in (3, 7)])
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.train()
    losses = model.train_step(batch, OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1)))
    assert torch.isfinite(losses['loss'])
    # Every tensor of the merges, the option's part, was trained.
    after = model.backbone.state_dict()
    assert [k for k, v in after.items() if k.startswith('patch_embeds.') and
            v.is_floating_point() and torch.equal(v, before[k])
            and not BEFORE_BATCHNORM.search(k)] == []
    model.eval()
    with torch.no_grad():
        outputs = model.val_step(dict(inputs=images, data_samples=None))
    assert [tuple(o.pred_score.shape) for o in outputs] == [(1000, ), (1000, )]
