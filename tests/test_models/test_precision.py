"""Mixed precision, torch.compile and torch.export on the backbones."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import AmpOptimWrapper
from torch._dynamo.utils import counters

from mmspm import SPMPVT
from mmspm.builder import build_model
from mmspm.deployment import EXPORT_TORCH
from mmspm.models.pvt_v1_layers import resize_pos_embed
from tests.test_models.test_spm_plugin import CLASSES
from tests.test_models.test_spm_plugin import SMALL as PLUGIN_SMALL
from tests.utils import FLOAT32, ROOT, needs_torch, seg_sample


def fresh_dynamo() -> None:
    torch._dynamo.reset()
    counters.clear()


def compiled_graphs() -> int:
    """Graphs dynamo has compiled since :func:`fresh_dynamo`, recompilations
    included (torch 2.13 no longer fills ``counters['recompiles']``)."""
    return counters['stats']['unique_graphs']


def test_autocast_bf16_cpu_matches_fp32():
    model = SPMPVT('tiny', drop_path_rate=0.)
    model.init_weights()
    model.eval()
    x = torch.randn(2, 3, 96, 130)  # odd token grids (24x33 at stride 4)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = model(x)
    for r, lo in zip(ref, low):
        assert lo.dtype in (torch.bfloat16, torch.float32)
        err = (lo.float() - r).norm() / r.norm()
        assert err < 0.05, err  # bf16 has 8 mantissa bits


def test_autocast_bf16_training_step_cpu():
    """mmengine's AmpOptimWrapper refuses CPUs; the autocast step it wraps
    (forward in bf16, backward, update) works on the backbone."""
    model = SPMPVT('tiny')
    model.init_weights()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    before = model.stages[0][0].mlp.fc1.weight.detach().clone()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = sum(o.float().square().mean() for o in model(torch.randn(2, 3, 64, 64)))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert not torch.equal(before, model.stages[0][0].mlp.fc1.weight)


def test_torch_compile_matches_eager():
    """Graph capture and autograd through the compiled backbone (aot_eager:
    no C++ code generation, so the test stays fast)."""
    fresh_dynamo()
    model = SPMPVT('tiny', drop_path_rate=0.)
    model.init_weights()
    model.train()
    compiled = torch.compile(model, backend='aot_eager')
    x = torch.randn(2, 3, 64, 96)
    eager = model(x)
    outs = compiled(x)
    for e, c in zip(eager, outs):
        torch.testing.assert_close(c, e, atol=1e-4, rtol=1e-4)
    sum(o.mean() for o in outs).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
def test_amp_optim_wrapper_cuda(dtype):
    model = SPMPVT('tiny', drop_path_rate=0.).cuda()
    model.init_weights()
    wrapper = AmpOptimWrapper(optimizer=torch.optim.AdamW(model.parameters(), lr=1e-4),
                              dtype=dtype)
    x = torch.randn(2, 3, 128, 160, device='cuda')
    with wrapper.optim_context(model):
        outs = model(x)
    loss = sum(o.float().mean() for o in outs)
    wrapper.update_params(loss)
    assert all(torch.isfinite(o).all() for o in outs)


# One dynamic graph for every size: seen on torch 2.13 and 2.14; torch 2.1's
# dynamo compiles one per size (3 graphs for 3 sizes). Versions between are
# untested (docs/install.md).
ONE_GRAPH = needs_torch('2.13', 'one torch.compile(dynamic=True) graph for every size')
SMALL_ARCH = dict(embed_dims=(16, 32, 64, 128), num_heads=(1, 1, 2, 2),
                  mlp_ratios=(2, 2, 2, 2), depths=(1, 1, 1, 1), sr_ratios=(8, 4, 2, 1))


def small_spm_pvt() -> SPMPVT:
    """A small SPM-PVT: compiling costs per operator, not per channel, and a
    CPU compile of a whole model takes minutes."""
    return SPMPVT(SMALL_ARCH, drop_path_rate=0.)


def assert_same_step(model: torch.nn.Module, compiled, hw: tuple[int, int]) -> None:
    """Outputs and input gradients of ``compiled`` equal ``model``'s at
    ``hw``. Each backward right after its forward: the other pass's forward
    updates the BN running statistics that a backward checks."""
    x = torch.randn(2, 3, *hw)
    x_eager, x_compiled = x.clone().requires_grad_(), x.clone().requires_grad_()
    eager = model(x_eager)
    sum(o.square().mean() for o in eager).backward()
    outs = compiled(x_compiled)
    sum(o.square().mean() for o in outs).backward()
    assert len(outs) == len(eager) == 4
    for e, c in zip(eager, outs):
        torch.testing.assert_close(c, e, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(x_compiled.grad, x_eager.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
@ONE_GRAPH
def test_dynamic_compile_does_not_recompile():
    """torch.compile(dynamic=True) captures one graph that serves three sizes
    (odd ones, none a multiple of 32), outputs and input gradients equal to
    eager (aot_eager: dynamo's capture and AOTAutograd with symbolic sizes,
    without inductor's code generation: about 4 minutes here instead of more
    than 15). No size gives a key map of one pixel (the spatial reduction
    floors: a side below 64 pixels would), which dynamo specialises."""
    fresh_dynamo()
    model = small_spm_pvt()
    model.init_weights()
    model.train()
    compiled = torch.compile(model, backend='aot_eager', dynamic=True)
    for hw in [(64, 96), (71, 77), (96, 80)]:
        assert_same_step(model, compiled, hw)
    assert compiled_graphs() == 1, dict(counters['stats'])


# Sizes with no map of one window (Swin) or one pixel (PVTv2's reduced keys)
# in any stage and no map as long as the batch: dynamo specialises sizes 0 and
# 1 and, at the first capture, equates sizes that are equal (duck sizing), so
# crossing those compiles one more graph (an input of 224 or less has one
# window at Swin's stage 4; detection and segmentation sizes have more).
@ONE_GRAPH
@pytest.mark.slow
@pytest.mark.parametrize('family, sizes', [
    ('swin', [(225, 257), (256, 320), (289, 353)]),
    ('pvtv2', [(96, 128), (97, 65), (160, 224)]),
])
def test_dynamic_compile_of_plugin_backbones(family, sizes):
    """SPM-Swin and SPM-PVTv2 under torch.compile(dynamic=True): one graph
    for three sizes (one odd), equal to eager with gradients. The eager
    backend: recompilation is decided in dynamo's capture (about 1 minute for
    SPM-Swin, half for SPM-PVTv2 here)."""
    fresh_dynamo()
    model = CLASSES[family][0](**PLUGIN_SMALL[family], drop_path_rate=0.)
    model.init_weights()
    model.train()
    compiled = torch.compile(model, backend='eager', dynamic=True, fullgraph=True)
    for hw in sizes:
        assert_same_step(model, compiled, hw)
    assert compiled_graphs() == 1, dict(counters['stats'])


@pytest.mark.slow
@ONE_GRAPH
def test_dynamic_compile_of_a_semantic_fpn_training_step():
    """The Semantic FPN config's segmentor (SPM-PVT made small) with its loss
    under torch.compile(dynamic=True): no graph compiled after the first
    size, losses and every parameter's gradient equal to eager. (mmseg's loss
    breaks the graph at data-dependent operators, nonzero among them: several
    graphs, each for every size. The first size has no map side equal to a
    channel count or another side: at a graph break every dimension of the
    next graph's inputs is symbolic, channels too, and duck sizing would
    equate them.)"""
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'semantic_fpn',
                                   'fpn_spm-pvt-t_8xb2-40k_ade20k-512x512.py'))
    model_cfg = cfg.model
    model_cfg.backbone.update(arch=SMALL_ARCH, drop_path_rate=0.)
    model_cfg.neck.update(in_channels=list(SMALL_ARCH['embed_dims']), out_channels=32)
    model_cfg.decode_head.update(in_channels=[32] * 4, channels=32, num_classes=5)
    model = build_model(cfg, init_weights=True)
    model.train()
    fresh_dynamo()
    compiled = torch.compile(model.loss, backend='eager', dynamic=True)
    graphs = []
    for hw in [(112, 176), (97, 65), (160, 224)]:
        x, samples = torch.randn(2, 3, *hw), [seg_sample(hw, 5) for _ in range(2)]
        losses, grads = [], []
        for loss in (model.loss, compiled):
            model.zero_grad()
            torch.manual_seed(1)  # the decode head's dropout
            losses.append(loss(x, samples))
            sum(v for k, v in losses[-1].items() if k.endswith('loss_ce')).backward()
            grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
        torch.testing.assert_close(losses[1], losses[0])
        torch.testing.assert_close(grads[1], grads[0])
        graphs.append(compiled_graphs())
    assert graphs[0] == graphs[-1], graphs


@pytest.mark.slow
@needs_torch(EXPORT_TORCH, 'torch.export with dynamic sizes (Dim)')
def test_export_holds_for_every_size():
    """torch.export of SPM-PVT with symbolic height and width, captured at
    one size, equals eager at others: odd ones (padding in the graph) and
    224x224, where the position embeddings are used at their own grid (the
    resize, always in the graph, is then the identity)."""
    model = small_spm_pvt()
    model.init_weights()
    model.eval()
    dim = torch.export.Dim.DYNAMIC
    program = torch.export.export(model, (torch.randn(2, 3, 96, 128),),
                                  dynamic_shapes=({2: dim, 3: dim},))
    for hw in [(96, 128), (77, 101), (224, 224)]:
        x = torch.randn(2, 3, *hw)
        with torch.no_grad():
            for e, c in zip(model(x), program.module()(x)):
                torch.testing.assert_close(c, e, **FLOAT32)


def test_pos_embed_resize_is_exact_at_its_grid():
    pos = torch.randn(1, 49, 32)
    assert torch.equal(resize_pos_embed(pos, 7, 7, 7), pos)
    half = resize_pos_embed(pos.half(), 7, 7, 7)
    assert half.dtype == torch.float16 and torch.equal(half, pos.half())
