"""Mixed precision, torch.compile and torch.export on the backbones."""
import pytest
import torch
from mmengine.optim import AmpOptimWrapper

from mmspm import SPMPVT
from mmspm.models.spm_pvt import resize_pos_embed


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
    torch._dynamo.reset()
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


def small_spm_pvt() -> SPMPVT:
    """A small SPM-PVT: compiling costs per operator, not per channel, and a
    CPU compile of a whole model takes minutes. (SPM-Swin and SPM-PVTv2 are
    not compiled here: aot_eager took over 20 minutes for SPM-Swin on the
    project's shared 2-core machine.)"""
    return SPMPVT(dict(embed_dims=(16, 32, 64, 128), num_heads=(1, 1, 2, 2),
                       mlp_ratios=(2, 2, 2, 2), depths=(1, 1, 1, 1), sr_ratios=(8, 4, 2, 1)),
                  drop_path_rate=0.)


@pytest.mark.slow
def test_dynamic_compile_does_not_recompile():
    """torch.compile(dynamic=True) captures one graph that serves three sizes
    (one odd, none a multiple of 32), outputs and input gradients equal to
    eager (aot_eager: dynamo's capture and AOTAutograd with symbolic sizes,
    without inductor's code generation: about 4 minutes here instead of more
    than 15)."""
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    model = small_spm_pvt()
    model.init_weights()
    model.train()
    compiled = torch.compile(model, backend='aot_eager', dynamic=True)
    for hw in [(64, 96), (71, 45), (96, 80)]:
        x = torch.randn(2, 3, *hw)
        x_eager, x_compiled = x.clone().requires_grad_(), x.clone().requires_grad_()
        # Each backward right after its forward: the other pass's forward
        # updates the BN running statistics that a backward checks.
        eager = model(x_eager)
        sum(o.square().mean() for o in eager).backward()
        outs = compiled(x_compiled)
        sum(o.square().mean() for o in outs).backward()
        assert len(outs) == len(eager) == 4
        for e, c in zip(eager, outs):
            torch.testing.assert_close(c, e, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(x_compiled.grad, x_eager.grad, atol=1e-5, rtol=1e-4)
    assert counters['stats']['unique_graphs'] == 1, dict(counters['stats'])
    assert not counters['recompiles'], dict(counters['recompiles'])


@pytest.mark.slow
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
                torch.testing.assert_close(c, e, atol=1e-5, rtol=1e-5)


def test_pos_embed_resize_is_exact_at_its_grid():
    pos = torch.randn(1, 49, 32)
    assert torch.equal(resize_pos_embed(pos, 7, 7, 7), pos)
    half = resize_pos_embed(pos.half(), 7, 7, 7)
    assert half.dtype == torch.float16 and torch.equal(half, pos.half())
