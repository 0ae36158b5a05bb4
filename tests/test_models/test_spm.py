"""SPM layers against the naive oracle of mmspm/testing/reference.py
(docs/reference_model.md, "SPM layers")."""
import itertools

import pytest
import torch

from mmspm.deployment import EXPORT_TORCH
from mmspm.models import StepwisePatchMerging
from mmspm.models.spm import select_path, set_spm_path
from mmspm.models.spm_pvt_checkpoints import rename_reference_key
from mmspm.testing import RefSPM
from tests.utils import FLOAT32, needs_torch, randomize_norm_stats

DIMS = [(64, 128), (128, 320), (320, 512)]


def spm_pair(cin: int, cout: int) -> tuple[RefSPM, StepwisePatchMerging]:
    ref = RefSPM(cin, cout)
    randomize_norm_stats(ref)
    fast = StepwisePatchMerging(cin, cout)
    # The reference's SPM sits at `patch_embed2.spm.`; reuse the product's
    # renaming so that a wrong rename fails here too.
    state = {rename_reference_key('patch_embed2.spm.' + k)[len('patch_embeds.1.'):]: v
             for k, v in ref.state_dict().items()}
    fast.load_state_dict(state, strict=True)
    return ref, fast


@pytest.mark.parametrize('path', ['chunked', 'whole'])
@pytest.mark.parametrize('mode', ['train', 'eval'])
@pytest.mark.parametrize('cin,cout', DIMS)
def test_equals_reference(cin, cout, mode, path):
    """float32 outputs and input gradients to 1e-5; parameter gradients in
    float64, where the summation order no longer hides a wrong formula (in
    train mode some of them are exactly 0 in theory, float32 noise in practice).
    Each of GLE's two paths, chosen explicitly."""
    for dtype in (torch.float32, torch.float64):
        ref, fast = spm_pair(cin, cout)
        set_spm_path(fast, path)
        ref.to(dtype), fast.to(dtype)
        getattr(ref, mode)()
        getattr(fast, mode)()
        x = torch.randn(2, cin, 12, 20, dtype=dtype)
        x_ref, x_fast = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_ref, out_fast = ref(x_ref), fast(x_fast)
        assert out_fast.shape == (2, cout, 6, 10)
        torch.testing.assert_close(out_fast, out_ref, **FLOAT32)

        grad = torch.randn_like(out_ref)
        (out_ref * grad).sum().backward()
        (out_fast * grad).sum().backward()
        torch.testing.assert_close(x_fast.grad, x_ref.grad, **FLOAT32)
        if mode == 'train':  # batch statistics were updated identically
            ref_state = ref.state_dict()
            for name in ('msa.proj.1.running_mean', 'msa.proj.1.running_var',
                         'gle.gtg.0.running_mean', 'gle.gtg.0.running_var'):
                torch.testing.assert_close(fast.state_dict()[name], ref_state[name],
                                           **FLOAT32, msg=name)
    ref_params = dict(ref.named_parameters())
    for name, p in fast.named_parameters():
        ref_name = name.replace('gle.qkv', 'gle.attn.qkv')
        for i, k in enumerate((3, 5, 7, 9)):
            ref_name = ref_name.replace(f'local_convs.{i}', f'local_conv_{k}')
        torch.testing.assert_close(p.grad, ref_params[ref_name].grad, atol=1e-9,
                                   rtol=1e-9, msg=f'gradient of {name}')


def test_channel_shuffle_order():
    """Head i outputs the constant 10**i; proj.0 reads only the first of its
    four inputs per group, which must be channel d of head 0 (channel d of
    head i -> shuffled channel d*4 + i)."""
    _, fast = spm_pair(64, 128)
    msa = fast.msa
    for i, conv in enumerate(msa.local_convs):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.constant_(conv.bias, 10.0**i)
    torch.nn.init.zeros_(msa.proj[0].weight)
    torch.nn.init.zeros_(msa.proj[0].bias)
    msa.proj[0].weight.data[:, 0] = 1
    seen = {}
    msa.proj[1].register_forward_hook(lambda m, inp, out: seen.update(x=inp[0]))
    msa(torch.randn(1, 64, 4, 4))
    torch.testing.assert_close(seen['x'], torch.ones(1, 128, 4, 4))
    msa.proj[0].weight.data[:, 0] = 0
    msa.proj[0].weight.data[:, 3] = 1  # the last input of every group: head 3
    msa(torch.randn(1, 64, 4, 4))
    torch.testing.assert_close(seen['x'], torch.full((1, 128, 4, 4), 1000.0))


def naive_any_size(ref: RefSPM, x: torch.Tensor) -> torch.Tensor:
    """The documented odd-size rule, window by window: the guide token
    attends to itself and to the window's pixels that lie inside the map."""
    gle = ref.gle
    y = ref.msa(x)
    B, C, H, W = y.shape
    guide = gle.gtg(y)
    Hg, Wg = guide.shape[-2:]
    out = torch.empty(B, C, Hg, Wg)
    for i in range(Hg):
        for j in range(Wg):
            tokens = [guide[:, :, i, j]] + [
                y[:, :, r, c] for r in (2 * i, 2 * i + 1) for c in (2 * j, 2 * j + 1)
                if r < H and c < W
            ]
            attended = gle.attn(gle.norm0(torch.stack(tokens, 1)))[:, 0]
            out[:, :, i, j] = gle.norm1(attended)
    return out


@pytest.mark.parametrize('path', ['chunked', 'whole'])
@pytest.mark.parametrize('hw', [(7, 9), (31, 31), (33, 47), (1, 1), (2, 3), (5, 2)])
def test_any_size(hw, path):
    """(33, 47) takes 3 chunks of window rows on the chunked path."""
    ref, fast = spm_pair(128, 320)
    ref.eval(), fast.eval()
    set_spm_path(fast, path)
    x = torch.randn(2, 128, *hw)
    with torch.no_grad():
        out = fast(x)
        expected = naive_any_size(ref, x)
    H, W = hw
    assert out.shape == (2, 320, (H + 1) // 2, (W + 1) // 2)
    torch.testing.assert_close(out, expected, **FLOAT32)


def test_naive_any_size_is_the_reference_on_even_sizes():
    ref, _ = spm_pair(64, 128)
    ref.eval()
    x = torch.randn(1, 64, 6, 8)
    with torch.no_grad():
        torch.testing.assert_close(naive_any_size(ref, x), ref(x), **FLOAT32)


def test_gradients_reach_every_parameter():
    _, fast = spm_pair(64, 128)
    fast.train()
    fast(torch.randn(2, 64, 9, 11)).square().sum().backward()
    for name, p in fast.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_channels():
    with pytest.raises(ValueError, match='divisible'):
        StepwisePatchMerging(66, 128)
    with pytest.raises(ValueError, match='num_heads'):
        StepwisePatchMerging(64, 100)
    with pytest.raises(ValueError, match='expects 64 input channels, got 32'):
        StepwisePatchMerging(64, 128)(torch.randn(1, 32, 8, 8))


def bmm_calls(module: torch.nn.Module, x: torch.Tensor) -> int:
    """How many batched matrix products a forward pass of ``module`` runs."""
    with torch.no_grad(), torch.profiler.profile() as prof:
        module(x)
    return sum(e.count for e in prof.key_averages() if e.key == 'aten::bmm')


def test_path_per_device_and_context():
    """'auto' is the chunked path in eager mode on a CPU, the whole-map path
    on CUDA devices (no GPU needed: only the device is looked at) and while a
    graph is captured; an explicit path is kept everywhere."""
    cuda, cpu = torch.device('cuda'), torch.device('cpu')
    assert select_path(cpu) == 'chunked'
    assert select_path(cuda) == 'whole'
    assert select_path(torch.device('cuda', 1), 'auto') == 'whole'
    assert select_path(cpu, 'whole') == 'whole'
    assert select_path(cuda, 'chunked') == 'chunked'

    def seen(x):
        return x + int(select_path(x.device) == 'whole')

    x = torch.zeros(1)
    assert seen(x).item() == 0
    assert torch.compile(seen, backend='eager', fullgraph=True)(x).item() == 1
    assert torch.jit.trace(seen, x, check_trace=False)(x).item() == 1
    with pytest.raises(ValueError, match="Unknown SPM path 'fast'.*'chunked', 'whole'"):
        select_path(cpu, 'fast')
    with pytest.raises(ValueError, match='Unknown SPM path'):
        set_spm_path(StepwisePatchMerging(64, 128), 'loop')


def test_paths_run_as_selected():
    """The chunked path runs GLE's 4 batched products once per chunk (here
    one window row per chunk), the whole-map path once for the whole map."""
    _, fast = spm_pair(64, 128)
    fast.eval()
    fast.gle.CHUNK_BYTES = 1  # the smallest chunk: one row of windows
    x = torch.randn(2, 64, 7, 10)  # 2 images x 4 window rows
    assert fast.gle.path == 'auto'
    assert bmm_calls(fast, x) == 4 * 2 * 4  # auto on a CPU, eager: chunked
    set_spm_path(fast, 'whole')
    assert bmm_calls(fast, x) == 4
    set_spm_path(fast, 'chunked')
    assert bmm_calls(fast, x) == 4 * 2 * 4


@needs_torch(EXPORT_TORCH, 'torch.export with automatic dynamic sizes')
def test_exported_graph_holds_for_every_size():
    """torch.export with a symbolic height and width: the graph, captured at an
    even size, computes the layer at odd sizes too (the padding and border mask
    are part of the graph, not decided at capture). Sides of 1 or 2, where
    the window grid has one row or column, are left to a graph of their own
    by dynamo's specialisation of sizes 0 and 1."""
    _, fast = spm_pair(64, 128)
    fast.eval()
    dim = torch.export.Dim.AUTO
    program = torch.export.export(fast, (torch.randn(2, 64, 8, 12),),
                                  dynamic_shapes=({2: dim, 3: dim},))
    for hw in [(8, 12), (7, 9), (13, 6), (3, 3)]:
        x = torch.randn(2, 64, *hw)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(x), fast(x), **FLOAT32)


def test_gradients_have_their_parameters_strides():
    """DDP's bucket views take each parameter's strides and DDP compares the
    gradient's strides with them as they are: any difference (here the
    depth-wise weights' size-1 dimension under a channels-last input) makes
    DDP warn and copy the gradient at every step. The kernels, and so the
    layouts, differ with the number of threads."""
    spm = StepwisePatchMerging(64, 128)
    threads = torch.get_num_threads()
    try:
        for n, path in itertools.product((1, 2), ('chunked', 'whole')):
            torch.set_num_threads(n)
            set_spm_path(spm, path)
            spm.zero_grad(set_to_none=True)
            spm(torch.randn(2, 64, 12, 10)).sum().backward()
            for name, p in spm.named_parameters():
                assert p.grad.stride() == p.stride(), (n, path, name)
    finally:
        torch.set_num_threads(threads)
