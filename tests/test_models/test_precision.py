"""Mixed precision and torch.compile on the backbone."""
import pytest
import torch
from mmengine.optim import AmpOptimWrapper

from mmspm import SPMPVT


def test_autocast_bf16_cpu_matches_fp32():
    model = SPMPVT('tiny', drop_path_rate=0.)
    model.init_weights()
    model.eval()
    x = torch.randn(2, 3, 96, 130)  # odd token grids (24x33 at stride 4)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = model(x)
    for r, l in zip(ref, low):
        assert l.dtype in (torch.bfloat16, torch.float32)
        err = (l.float() - r).norm() / r.norm()
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
