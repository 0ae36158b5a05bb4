"""SPMPVT backbone: shapes, reference equality, parameter counts, mmdet's PVT
v1 arguments, init_cfg, with_cp, layer-wise depths (what every SPM backbone
keeps, frozen_stages and norm_eval included, is in test_backbone_contract.py)."""
import inspect

import pytest
import torch

from mmspm.models import ARCH_SETTINGS, SPMPVT
from tests.utils import FLOAT32, backbone_state, reference_model

# docs/reference_model.md: reference classification models with a 1000-class head.
PARAMS_M = dict(tiny=14.03, small=25.29, medium=45.01, large=62.17)


@pytest.mark.parametrize('arch', list(PARAMS_M))
def test_parameter_count(arch):
    model = SPMPVT(arch, with_cls_token=True)
    head = torch.nn.Linear(512, 1000)
    total = sum(p.numel() for p in [*model.parameters(), *head.parameters()])
    assert round(total / 1e6, 2) == PARAMS_M[arch]


@pytest.mark.parametrize('arch', list(ARCH_SETTINGS))
def test_dense_shapes_every_arch(arch):
    model = SPMPVT(arch).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [
        (1, 64, 16, 24), (1, 128, 8, 12), (1, 320, 4, 6), (1, 512, 2, 3)]


def test_dense_outputs_feed_roi_align_correctly():
    """mmcv's RoIAlign reads raw NCHW memory: from channels-last maps (which
    FPN's convolutions pass on) it pooled wrong features and Mask R-CNN did
    not learn. The outputs must be plain NCHW, and pool as their copies do."""
    from mmcv.ops import RoIAlign
    from mmdet.models.necks import FPN
    model = SPMPVT('tiny').eval()
    fpn = FPN([64, 128, 320, 512], 32, 4).eval()
    rois = torch.tensor([[0, 3., 5., 40., 30.], [0, 10., 2., 60., 44.]])
    roi_align = RoIAlign((7, 7), 0.25, 2)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 96))
        assert all(o.is_contiguous() for o in outs)
        feats = fpn(outs)[0]
        expected = roi_align(feats.clone(memory_format=torch.contiguous_format), rois)
        torch.testing.assert_close(roi_align(feats, rois), expected, rtol=0, atol=0)


@pytest.mark.parametrize('paddings,hw,expected', [
    # mmdet's default: the stage-1 embedding floors (as mmdet's and the PVT
    # authors' PVT v1), the SPM merges take ceil(H/2).
    (None, (33, 47), [(8, 11), (4, 6), (2, 3), (1, 2)]),
    (None, (31, 31), [(7, 7), (4, 4), (2, 2), (1, 1)]),
    (None, (7, 9), [(1, 2), (1, 1), (1, 1), (1, 1)]),
    # 'corner' pads the stage-1 embedding too: any size, however small.
    (('corner', 0, 0, 0), (33, 47), [(9, 12), (5, 6), (3, 3), (2, 2)]),
    (('corner', 0, 0, 0), (7, 9), [(2, 3), (1, 2), (1, 1), (1, 1)]),
    (('corner', 0, 0, 0), (1, 1), [(1, 1)] * 4),
])
def test_dense_shapes_odd_and_tiny(paddings, hw, expected):
    model = SPMPVT('tiny', **dict(paddings=paddings) if paddings else {}).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *hw))
    assert [tuple(o.shape[-2:]) for o in outs] == expected
    assert [o.shape[1] for o in outs] == [64, 128, 320, 512]
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize('hw', [(224, 224), (160, 192)])
def test_equals_reference(hw):
    """Classification and dense mode reproduce the reference model, including
    position-embedding interpolation on a non-224 grid."""
    ref = reference_model('tiny')
    state = backbone_state(ref)
    cls_model = SPMPVT('tiny', with_cls_token=True, out_indices=(0, 1, 2, 3)).eval()
    cls_model.load_state_dict(state, strict=True)
    dense = SPMPVT('tiny').eval()
    dense.load_state_dict(state)
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        maps, cls = ref.forward_features(x)
        cls_outs = cls_model(x)
        dense_outs = dense(x)
    torch.testing.assert_close(cls_outs[3], cls, **FLOAT32)
    assert cls_outs[3].shape == (2, 512)
    for ours, theirs in zip(dense_outs[:3], maps):
        torch.testing.assert_close(ours, theirs, **FLOAT32)
    assert dense_outs[3].shape == (2, 512, hw[0] // 32, hw[1] // 32)


def test_gradients_reach_every_parameter():
    for with_cls in (False, True):
        model = SPMPVT('tiny', with_cls_token=with_cls, drop_path_rate=0.)
        model.init_weights()
        model.train()
        outs = model(torch.randn(2, 3, 64, 64))
        sum(o.square().mean() for o in outs).backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_out_indices():
    model = SPMPVT('tiny', out_indices=(1, 3)).eval()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [128, 512]


def test_custom_arch_dict():
    arch = dict(embed_dims=(32, 64, 128, 256), num_heads=(1, 2, 4, 8),
                mlp_ratios=(4, 4, 4, 4), depths=(1, 1, 1, 1), sr_ratios=(8, 4, 2, 1))
    outs = SPMPVT(arch).eval()(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [32, 64, 128, 256]


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"unknown arch 'tinyy'.*'large'.*'tiny'"):
        SPMPVT('tinyy')
    with pytest.raises(ValueError, match='exactly the keys'):
        SPMPVT(dict(embed_dims=(64, 128, 320, 512)))
    with pytest.raises(ValueError, match='out_indices'):
        SPMPVT('tiny', out_indices=(4, ))
    with pytest.raises(ValueError, match='expects an NCHW image batch with 3 channels'):
        SPMPVT('tiny')(torch.randn(1, 4, 32, 32))


def test_short_arch_names():
    for short, name in dict(t='tiny', s='small', M='medium', l='large').items():
        assert SPMPVT(short).arch_settings == ARCH_SETTINGS[name]


def mmdet_pvt_defaults() -> dict:
    """The defaults of mmdet's PyramidVisionTransformer, read off its signature."""
    from mmdet.models.backbones import PyramidVisionTransformer
    params = inspect.signature(PyramidVisionTransformer).parameters
    return {k: p.default for k, p in params.items() if k != 'init_cfg'}


def test_mmdet_pvt_t_arguments_give_spm_pvt_t():
    """mmdet's PVT-T arguments (every default of mmdet's signature, as its
    configs leave them, but its LayerNorm eps: see the next test) build
    SPM-PVT-T: the same tensors, and the same outputs from the same weights."""
    args = dict(mmdet_pvt_defaults(), num_layers=[2, 2, 2, 2])
    del args['norm_cfg']
    ours = SPMPVT(**args).eval()
    tiny = SPMPVT('tiny').eval()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in tiny.state_dict().items()}
    tiny.init_weights()
    ours.load_state_dict(tiny.state_dict(), strict=True)
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        for a, b in zip(ours(x), tiny(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_mmdet_pvt_arguments_build_what_mmdet_builds(tmp_path):
    """Non-default mmdet arguments mean in SPMPVT what they mean in mmdet's
    PyramidVisionTransformer: mmdet's model with these arguments initialises
    every tensor of ours but the SPM layers', and its stage 1 (no SPM) and
    blocks compute what ours do."""
    from mmdet.models.backbones import PyramidVisionTransformer
    args = dict(embed_dims=32, num_layers=[1, 2, 1, 1], num_heads=[1, 2, 4, 8],
                sr_ratios=[4, 2, 2, 1], mlp_ratios=[4, 4, 2, 2], pretrain_img_size=128,
                act_cfg=dict(type='ReLU'), norm_cfg=dict(type='LN', eps=1e-6))
    upstream = PyramidVisionTransformer(**args).eval()
    for p in upstream.state_dict().values():
        p.normal_(0, 0.05)
    torch.save(upstream.state_dict(), tmp_path / 'pvt.pth')
    ours = SPMPVT(**args, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'pvt.pth'),
                                        from_pvt_v1=True))
    ours.init_weights()
    ours.eval()
    assert ours.embed_dims == (32, 64, 128, 256)
    assert isinstance(ours.stages[0][0].mlp.act, torch.nn.ReLU)
    assert all(m.eps == 1e-6 for m in ours.modules() if isinstance(m, torch.nn.LayerNorm)
               and not any(m is n for s in ours.patch_embeds[1:] for n in s.modules()))
    with torch.no_grad():
        image = torch.randn(1, 3, 128, 96)
        torch.testing.assert_close(ours(image)[0], upstream(image)[0], **FLOAT32)
        for i, (grid, dim) in enumerate(zip((32, 16, 8, 4), ours.embed_dims)):
            x = torch.randn(1, grid * grid, dim)
            for j, block in enumerate(ours.stages[i]):
                theirs = upstream.layers[i][1][j + 1](x, (grid, grid))
                torch.testing.assert_close(block(x, (grid, grid)), theirs, **FLOAT32)


def test_pvt_v1_arguments_without_an_mmdet_twin():
    """qkv_bias (the PVT authors' meaning: the q and kv biases) and
    attn_drop_rate (dropout on the attention weights, training only)."""
    no_bias = SPMPVT(qkv_bias=False)
    attn = no_bias.stages[1][0].attn
    assert attn.q.bias is None and attn.kv.bias is None and attn.proj.bias is not None
    no_bias.init_weights()
    model = SPMPVT(attn_drop_rate=0.5, drop_path_rate=0.).train()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.equal(model(x)[0], model(x)[0])
        model.eval()
        torch.testing.assert_close(model(x)[0], model(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize('args,message', [
    (dict(num_stages=3), r'num_stages=3 cannot be honoured: SPM-PVT has four stages'),
    (dict(patch_sizes=[7, 3, 3, 3]), r'patch_sizes=\[7, 3, 3, 3\] cannot be honoured'),
    (dict(strides=[4, 2, 2, 1]), r'strides=\[4, 2, 2, 1\] cannot be honoured.*halves'),
    (dict(paddings=[3, 1, 1, 1]), r"paddings\[1\]=1 cannot be honoured: merge 1 is Stepwise"),
    (dict(paddings=[0, 0, 'same', 0]), r"paddings\[2\]='same' cannot be honoured"),
    (dict(paddings=[0, 0, 0]), r'paddings needs four entries'),
    (dict(paddings=['edge', 0, 0, 0], spm_stages=()), r"padding='edge' is none of mmdet's"),
    (dict(use_abs_pos_embed=False), r'use_abs_pos_embed=False cannot be honoured'),
    (dict(norm_after_stage=True), r'norm_after_stage=True cannot be honoured'),
    (dict(use_conv_ffn=True), r'use_conv_ffn=True cannot be honoured.*SPMPVTv2'),
    (dict(num_layers=[2, 2, 2]), r'num_layers needs four entries'),
    (dict(norm_cfg=dict(type='BN')), r"norm_cfg=.*BatchNorm.*must be a LayerNorm"),
    (dict(pretrain_img_size=(224, 16)), r'pretrain_img_size must be an int or \(height, width\) '
     r'of at least 32 pixels'),
])
def test_pvt_v1_arguments_spm_pvt_cannot_take(args, message):
    with pytest.raises(ValueError, match=message):
        SPMPVT(**args)


def modules_of(model, kind):
    return [m for m in model.modules() if isinstance(m, kind)]


def test_init_cfg_list_as_mmengine_documents(tmp_path):
    """A list: each entry on the layers it names, the rest (SPM's BatchNorms
    and convolutions here) at the reference initialisation."""
    torch.manual_seed(2)
    model = SPMPVT(init_cfg=[
        dict(type='Kaiming', layer='Conv2d', mode='fan_in', nonlinearity='linear', bias=0.3),
        dict(type='TruncNormal', layer='Linear', std=0.5, bias=0.2),
        dict(type='Constant', layer='LayerNorm', val=2., bias=-1.),
    ])
    model.init_weights()
    for m in modules_of(model, torch.nn.Conv2d):
        assert torch.all(m.bias == 0.3)
        fan_in = m.weight[0].numel()
        if m.weight.numel() >= 4096:  # enough values for a tight std estimate
            assert abs(m.weight.std().item() * fan_in**0.5 - 1) < 0.1
    for m in modules_of(model, torch.nn.Linear):
        assert torch.all(m.bias == 0.2)
        if m.weight.numel() >= 4096:
            assert 0.4 < m.weight.std().item() < 0.6
    for m in modules_of(model, torch.nn.LayerNorm):
        assert torch.all(m.weight == 2.) and torch.all(m.bias == -1.)
    bns = modules_of(model, torch.nn.BatchNorm2d)
    assert bns and all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)


def test_init_cfg_pretrained_with_prefix_over_the_others(ref_tiny, tmp_path):
    """mmengine's Pretrained with ``prefix``: the tensors under that prefix
    (here the teacher's of a distillation checkpoint, beside a student's),
    loaded after, and so over, the other entries."""
    teacher = backbone_state(ref_tiny)
    student = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in teacher.items()}
    state = {**{f'teacher.backbone.{k}': v for k, v in teacher.items()},
             **{f'student.backbone.{k}': v for k, v in student.items()}}
    torch.save({'state_dict': state}, tmp_path / 'distill.pth')
    model = SPMPVT(with_cls_token=True, init_cfg=[
        dict(type='Constant', layer='LayerNorm', val=3.),
        dict(type='Pretrained', checkpoint=str(tmp_path / 'distill.pth'),
             prefix='teacher.backbone'),
    ])
    model.init_weights()
    for k, v in model.state_dict().items():
        assert torch.equal(v, teacher[k]), k


def test_mmdet_spellings_of_a_checkpoint(ref_file):
    """mmdet's PVT configs say ``init_cfg=dict(checkpoint=...)`` (no type) or
    the deprecated ``pretrained=...``: both are Pretrained."""
    expected = SPMPVT(init_cfg=dict(type='Pretrained', checkpoint=str(ref_file)))
    expected.init_weights()
    untyped = SPMPVT(init_cfg=dict(checkpoint=str(ref_file)))
    untyped.init_weights()
    with pytest.warns(UserWarning, match='pretrained is deprecated'):
        deprecated = SPMPVT(pretrained=str(ref_file))
    deprecated.init_weights()
    for model in (untyped, deprecated):
        for k, v in expected.state_dict().items():
            assert torch.equal(model.state_dict()[k], v), k
    with pytest.raises(ValueError, match='either as init_cfg or as pretrained'):
        SPMPVT(pretrained=str(ref_file), init_cfg=dict(type='Kaiming', layer='Conv2d'))


def saved_bytes(model, x, kinds) -> dict:
    """Bytes of the activations autograd keeps for the backward pass while
    each kind of module (and outside them: None) runs, counted as they are
    saved."""
    counts = dict.fromkeys([*kinds, None], 0)
    inside = []

    def enter(module, args) -> None:
        inside.append(type(module))

    def leave(module, args, output) -> None:
        inside.pop()

    for m in model.modules():
        if isinstance(m, kinds):
            m.register_forward_pre_hook(enter)
            m.register_forward_hook(leave)

    def pack(t):
        counts[inside[-1] if inside else None] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outs = model(x)
    return counts, outs


def test_with_cp_covers_blocks_and_spm_layers():
    """with_cp: the blocks and the SPM layers keep no activations for the
    backward pass; gradients and the BatchNorm statistics of SPM are those
    without it (stochastic depth on: its masks are redrawn alike)."""
    from mmspm.models.spm import StepwisePatchMerging
    from mmspm.models.pvt_v1_layers import PVTBlock
    results = []
    for with_cp in (False, True):
        torch.manual_seed(3)
        model = SPMPVT(with_cp=with_cp, drop_path_rate=0.3)
        model.init_weights()
        model.train()
        torch.manual_seed(4)
        x = torch.randn(2, 3, 64, 64)
        counts, outs = saved_bytes(model, x, (PVTBlock, StepwisePatchMerging))
        sum(o.square().mean() for o in outs).backward()
        results.append((counts, model))
    (plain, reference), (cp, checkpointed) = results
    assert plain[PVTBlock] > 0 and plain[StepwisePatchMerging] > 0
    assert cp[PVTBlock] == 0 and cp[StepwisePatchMerging] == 0
    assert sum(cp.values()) < sum(plain.values()) / 10
    grads = dict(checkpointed.named_parameters())
    for name, p in reference.named_parameters():
        torch.testing.assert_close(grads[name].grad, p.grad, rtol=1e-5, atol=1e-6, msg=name)
    buffers = dict(checkpointed.named_buffers())
    for name, b in reference.named_buffers():
        assert torch.equal(buffers[name], b), name


def test_layer_wise_lr_decay_with_mmpretrain():
    """mmpretrain's LearningRateDecayOptimWrapperConstructor on an SPM-PVT-T
    classifier: depth 0 the stage-1 embedding, depth 1 + j block j of stage
    1, the stage-2 SPM layer at the depth of the block before it, the head
    last (2 + 8 blocks = 10 depths: lr * rate ** (9 - depth))."""
    from mmengine.config import Config
    from mmpretrain.engine.optimizers import LearningRateDecayOptimWrapperConstructor

    from mmspm.builder import build_model
    from tests.utils import ROOT
    cfg = Config.fromfile(f'{ROOT}/configs/imagenet/spm-pvt-t_8xb128_in1k.py')
    classifier = build_model(cfg)
    constructor = LearningRateDecayOptimWrapperConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1.0, weight_decay=0.05)),
        paramwise_cfg=dict(layer_decay_rate=0.5))
    groups = {g['param_name']: g['lr'] for g in constructor(classifier).param_groups
              if 'param_name' in g}
    expected = {
        'backbone.patch_embeds.0.proj.weight': 0.5**9,
        'backbone.pos_embeds.0': 0.5**9,
        'backbone.stages.0.0.attn.q.weight': 0.5**8,
        'backbone.stages.0.1.mlp.fc2.bias': 0.5**7,
        'backbone.patch_embeds.1.msa.local_convs.0.weight': 0.5**7,
        'backbone.pos_embeds.1': 0.5**7,
        'backbone.stages.1.0.norm1.weight': 0.5**6,
        'backbone.stages.3.1.mlp.fc1.weight': 0.5**1,
        'backbone.cls_token': 0.5**3,
        'backbone.norm.weight': 1.0,
        'head.fc.weight': 1.0,
    }
    for name, lr in expected.items():
        assert groups[name] == pytest.approx(lr), name
