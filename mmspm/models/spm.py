"""Stepwise Patch Merging (SPM): Multi-Scale Aggregation + Guided Local Enhancement.

The layers are numerically the authors' reference (docs/reference_model.md) but
computed differently where that is cheaper:

* MSA folds the channel shuffle into its grouped 1x1 convolution, run as a
  dense 1x1 convolution (a GEMM) whose weight is the grouped one scattered
  into place; the shuffled tensor is never made.
* GLE computes only the guide token's query. Keys and values are never
  formed: ``q . (W_k n + b_k) = (W_k^T q) . n + const`` (the constant cancels
  in the softmax) and ``sum_j a_j (W_v n_j + b_v) = W_v (sum_j a_j n_j) + b_v``,
  so the per-pixel work is a LayerNorm and two tiny batched products instead
  of a ``C -> 3C`` projection of five tokens per window.
* Two ways through GLE's windows (:func:`select_path`): in eager mode on a
  CPU, row chunks small enough for the CPU cache ('chunked', about twice as
  fast there); everywhere else (CUDA, ``torch.compile``, ``torch.export``,
  ``torch.onnx.export``, ``torch.jit.trace``) the whole map at once, padded
  and masked without a Python branch on its size ('whole'), so one graph
  serves every input size and a GPU runs a few kernels instead of a loop.
* Everything runs in channels-last memory, where CPU depth-wise convolutions
  are several times faster, and returns channels-last maps.

Odd sizes: the output is ``ceil(H/2) x ceil(W/2)``. The guide token of a window
on the bottom or right border attends to itself and to those of its four
pixels that lie inside the map (missing pixels are masked, not zero-filled),
so every size ``H, W >= 1`` is defined and even sizes equal the reference.

The paper's ablations are options of :class:`StepwisePatchMerging` (``gle``,
``guide``, ``guide_kernel_size``; :mod:`.spm_variants`),
defined in docs/reference_model.md ("Ablation variants"); the defaults are
the reference.
"""
import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.model.weight_init import trunc_normal_
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .spm_variants import DEFAULT_GUIDE_KERNEL_SIZE, GLE_TYPES, check_variant

# MSA's depth-wise kernel per head; the reference names its convolutions
# local_conv_{3,5,7,9}.
KERNEL_SIZES = (3, 5, 7, 9)
# GLE's ways through the windows: 'auto' picks one by :func:`select_path`.
SPM_PATHS = ('auto', 'chunked', 'whole')
# torch.compiler.is_compiling is new in torch 2.3; before, dynamo's own.
_is_compiling = getattr(torch.compiler, 'is_compiling', None) or torch._dynamo.is_compiling


def is_capturing() -> bool:
    """Whether the forward pass is being captured into a graph rather than run.

    Capturing is ``torch.compile`` / ``torch.export`` (dynamo),
    ``torch.jit.trace`` or ``torch.onnx.export``.

    Returns:
        bool: True while the forward pass is being captured.
    """
    return _is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def select_path(device: torch.device, requested: str = 'auto') -> str:
    """GLE's path for a map on ``device``.

    The path is ``requested`` unless it is 'auto'; then 'chunked' in eager
    mode on a CPU, where cache-sized chunks are about twice as fast, and
    'whole' otherwise: on GPUs a chunk loop is launch-bound, and a captured
    graph must not depend on the input size (the chunk count does).

    Args:
        device (torch.device): The device of the map.
        requested (str): The requested path, one of :data:`SPM_PATHS`.
            Default: 'auto'.

    Returns:
        str: 'chunked' or 'whole'.

    Raises:
        ValueError: If ``requested`` is not one of :data:`SPM_PATHS`.
    """
    if requested not in SPM_PATHS:
        raise ValueError(f'Unknown SPM path {requested!r}; choose one of {SPM_PATHS}.')
    if requested != 'auto':
        return requested
    return 'chunked' if device.type == 'cpu' and not is_capturing() else 'whole'


def set_spm_path(module: nn.Module, path: str) -> None:
    """Make every GLE in ``module`` take ``path``.

    Args:
        module (nn.Module): The module whose GLEs are set.
        path (str): One of :data:`SPM_PATHS`; 'auto', the default of every
            GLE, restores :func:`select_path`'s choice.

    Raises:
        ValueError: If ``path`` is not one of :data:`SPM_PATHS`.
    """
    select_path(torch.device('cpu'), path)  # validates
    for m in module.modules():
        if isinstance(m, GuidedLocalEnhancement):
            m.path = path


class MultiScaleAggregation(nn.Module):
    """Multi-Scale Aggregation: ``(B, in_channels, H, W) -> (B, out_channels, H, W)``.

    The channels are split into ``len(kernel_sizes)`` heads, each filtered by
    a depth-wise convolution of its own kernel size; the heads are shuffled so
    that every group of the grouped 1x1 ``proj.0`` sees one channel of each
    scale, then ``proj`` = 1x1 grouped conv, BN, GELU, 1x1 conv.

    Args:
        in_channels (int): The number of input channels; must be divisible
            by the number of scales (``len(kernel_sizes)``), else
            ``ValueError`` is raised.
        out_channels (int): The number of output channels.
        kernel_sizes (Sequence[int]): The depth-wise kernel size of each
            head. Default: ``KERNEL_SIZES`` (3, 5, 7, 9).
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_sizes: Sequence[int] = KERNEL_SIZES) -> None:
        super().__init__()
        num_heads = len(kernel_sizes)
        if in_channels % num_heads:
            raise ValueError(f'MultiScaleAggregation: in_channels={in_channels} '
                             f'must be divisible by the number of scales '
                             f'({num_heads}).')
        self.in_channels = in_channels
        self.kernel_sizes = tuple(kernel_sizes)
        head_channels = in_channels // num_heads
        self.local_convs = nn.ModuleList(
            nn.Conv2d(head_channels, head_channels, k, padding=k // 2,
                      groups=head_channels) for k in self.kernel_sizes)
        self.proj = nn.Sequential(
            nn.Conv2d(in_channels, 2 * in_channels, 1, groups=head_channels),
            nn.BatchNorm2d(2 * in_channels),
            nn.GELU(),
            nn.Conv2d(2 * in_channels, out_channels, 1))
        # Group d of proj.0 sees channel d of every head (the channel
        # shuffle), i.e. output o reads input channel i * head_channels + o // 8
        # for head i: where its grouped weight goes in a dense one.
        per_group = 2 * in_channels // head_channels
        index = torch.arange(num_heads) * head_channels + torch.arange(
            2 * in_channels)[:, None] // per_group
        self.register_buffer('fuse_index', index, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f'MultiScaleAggregation expects {self.in_channels} '
                             f'input channels, got {x.shape[1]} '
                             f'(input shape {tuple(x.shape)}).')
        # Channels-last: CPU depth-wise convolutions (backward above all) are
        # several times faster in it; the backbone's maps already are.
        x = x.contiguous(memory_format=torch.channels_last)
        c = self.in_channels // len(self.kernel_sizes)
        if is_capturing():
            # Slices: ONNX exporters write a split as sequence operators,
            # which TensorRT's parser lacks.
            heads = [x[:, i * c:(i + 1) * c] for i in range(len(self.kernel_sizes))]
        else:
            # split: its backward concatenates where slices' would add four
            # input-sized gradients.
            heads = x.split(c, 1)
        x = torch.cat([conv(h) for conv, h in zip(self.local_convs, heads)], 1)
        # Channel shuffle + grouped 1x1 conv as one dense 1x1 conv whose weight
        # is the grouped one scattered into place: a GEMM beats a convolution
        # with 4 inputs per group, and no shuffled copy is made.
        fuse = self.proj[0]
        weight = fuse.weight.new_zeros(fuse.out_channels, self.in_channels).scatter(
            1, self.fuse_index, fuse.weight.flatten(1))
        x = F.conv2d(x, weight[:, :, None, None], fuse.bias)
        return self.proj[1:](x)


class GuidedLocalEnhancement(nn.Module):
    """Guided Local Enhancement: ``(B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))``.

    A guide token per 2x2 window (BN, GELU, depth-wise 7x7 stride-2 conv)
    attends over itself and the window's pixels (LayerNorm ``norm0``, one
    ``qkv`` Linear, ``num_heads`` heads, no output projection); the attended
    guide token, after LayerNorm ``norm1``, is the output. The result is
    returned as an NCHW-shaped view of channels-last memory, so flattening it
    to tokens costs nothing.

    The attribute ``path`` (default 'auto') sets how the windows are
    processed, see :func:`select_path` and :func:`set_spm_path`; both paths
    compute the same function.

    Args:
        channels (int): The number of channels C; must be divisible by
            ``num_heads``, else ``ValueError`` is raised.
        num_heads (int): The number of attention heads. Default: 8.
        guide_kernel_size (int): The kernel of the guide token generator
            (``guide='gtg'`` only); odd, padding ``k // 2``. Default: 7.
        guide (str): The window's query token. 'gtg' (the reference): the
            guide token generator above (``gtg.{0,2}``), kernel
            ``guide_kernel_size``; 'cls': one learnt token ``cls_token``
            (1, 1, C), the same for every window (a ViT class token); 'gap':
            the mean of the window's pixels inside the map (no parameters).
            Everything after the query token is the same for all three.
            Default: 'gtg'.
    """

    # Size of one window chunk's (windows, heads, C) intermediates.
    CHUNK_BYTES = 2 * 2**20

    def __init__(self,
                 channels: int,
                 num_heads: int = 8,
                 guide_kernel_size: int = DEFAULT_GUIDE_KERNEL_SIZE,
                 guide: str = 'gtg') -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f'GuidedLocalEnhancement: channels={channels} must '
                             f'be divisible by num_heads={num_heads}.')
        check_variant('GuidedLocalEnhancement', 'attention', guide, guide_kernel_size)
        self.channels = channels
        self.num_heads = num_heads
        self.guide = guide
        self.scale = (channels // num_heads)**-0.5
        if guide == 'gtg':
            self.gtg = nn.Sequential(
                nn.BatchNorm2d(channels),
                nn.GELU(),
                nn.Conv2d(channels, channels, guide_kernel_size, stride=2,
                          padding=guide_kernel_size // 2, groups=channels))
        elif guide == 'cls':
            self.cls_token = nn.Parameter(torch.zeros(1, 1, channels))
        self.norm0 = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.norm1 = nn.LayerNorm(channels)
        self.path = 'auto'

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        # The guide's size, as ceil(H/2) rather than the convolution's
        # (H - 1) // 2 + 1: with symbolic sizes, products of such sums expand
        # into polynomials whose quotients inductor's stride checks fail on.
        Hg, Wg = (H + 1) // 2, (W + 1) // 2
        pad_h, pad_w = 2 * Hg - H, 2 * Wg - W
        # Channels-last (a free view of what MSA produces): window copies then
        # move whole C-vectors.
        guide = self._guide_tokens(x, B * Hg, Wg)
        x = x.permute(0, 2, 3, 1)
        if select_path(x.device, self.path) == 'whole':
            # Padded (by 0 on even sides) and masked whatever the size: no
            # Python branch on it, so a captured graph holds for every size.
            rows = F.pad(x, (0, 0, 0, pad_w, 0, pad_h)).reshape(B * Hg, 2, Wg, 2, C)
            mask = self._padding_mask(H, W, Hg, Wg, x.device).repeat(B, 1, 1)
            out = self._attend(rows, guide, mask)
        else:
            out = self._chunked(x, guide)
        out = out.reshape(B, Hg, Wg, C) + self.qkv.bias[2 * C:]
        out = self.norm1(out)
        return out.permute(0, 3, 1, 2)

    def _guide_tokens(self, x: Tensor, rows: int, Wg: int) -> Tensor:
        """Every window's query token, ``(B * Hg, Wg, C)`` for ``rows = B * Hg``
        (both paths take their windows' tokens from it, so they agree)."""
        if self.guide == 'cls':
            # A view: one token, its gradient summed over every window.
            return self.cls_token.expand(rows, Wg, self.channels)
        if self.guide == 'gtg':
            guide = self.gtg(x)
        else:
            # ceil_mode: border windows average the pixels inside the map
            # (PyTorch divides by the window's extent clipped to the map), as
            # the attention masks the pixels outside it.
            guide = F.avg_pool2d(x, 2, 2, ceil_mode=True)
        return guide.permute(0, 2, 3, 1).reshape(rows, Wg, self.channels)

    def _chunked(self, x: Tensor, guide: Tensor) -> Tensor:
        """:meth:`_attend` over the windows of ``x`` (B, H, W, C) and their
        guide tokens (B * Hg, Wg, C) in row chunks: ``(B * Hg * Wg, C)``."""
        B, H, W, C = x.shape
        Hg, Wg = guide.shape[0] // B, guide.shape[1]
        pad_h, pad_w = 2 * Hg - H, 2 * Wg - W
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        rows = x.reshape(B * Hg, 2, Wg, 2, C)  # window rows of every image
        mask = None
        if pad_h or pad_w:
            mask = self._padding_mask(H, W, Hg, Wg, x.device).repeat(B, 1, 1)
        # Window rows in chunks keep every per-window intermediate (tokens,
        # (windows, heads, C) products) in cache: about twice as fast on a
        # CPU as whole-map passes.
        # (split, not slicing: its backward concatenates instead of adding
        # one full-size gradient per chunk).
        step = max(1, self.CHUNK_BYTES // (self.num_heads * C * x.element_size() * Wg))
        masks = [None] * B * Hg if mask is None else mask.split(step * Wg)
        return torch.cat([
            self._attend(r, g, m)
            for r, g, m in zip(rows.split(step), guide.split(step), masks)
        ])

    def _attend(self, rows: Tensor, guide: Tensor, mask: Optional[Tensor]) -> Tensor:
        """Guide-token attention of ``r`` window rows: ``(r, 2, Wg, 2, C)``
        pixels and ``(r, Wg, C)`` guide tokens give ``(r * Wg, C)``, less the
        value bias.

        The five tokens of a window are the guide token then its 2x2 pixels
        (their order does not matter: only the guide token's query is kept and
        there is no positional term). Keys and values are never formed:
        ``q . (W_k t + b_k)`` is ``(W_k^T q) . t`` plus a constant that the
        softmax cancels, and ``sum_t a_t (W_v t + b_v) = W_v (sum_t a_t t) + b_v``.
        """
        r, Wg, C = guide.shape
        # Sizes spelt out, not inferred (-1): with symbolic sizes, inductor
        # cannot simplify the quotients an inferred size leaves in strides.
        n, h, d = r * Wg, self.num_heads, C // self.num_heads
        pixels = rows.transpose(1, 2).reshape(r, Wg, 4, C)
        tokens = self.norm0(torch.cat([guide.unsqueeze(2), pixels], 2)).view(n, 5, C)
        weight, bias = self.qkv.weight, self.qkv.bias
        q = F.linear(tokens[:, 0], weight[:C], bias[:C]).view(n, h, d) * self.scale
        qk = torch.bmm(q.transpose(0, 1), weight[C:2 * C].view(h, d, C))
        scores = torch.bmm(qk.transpose(0, 1), tokens.transpose(1, 2))   # (n, h, 5)
        if mask is not None:
            scores = scores.masked_fill(mask, float('-inf'))
        z = torch.bmm(scores.softmax(-1), tokens)                        # (n, h, C)
        out = torch.bmm(z.transpose(0, 1), weight[2 * C:].view(h, d, C).transpose(1, 2))
        return out.transpose(0, 1).reshape(n, C)

    @staticmethod
    def _padding_mask(H: int, W: int, Hg: int, Wg: int,
                      device: torch.device) -> Tensor:
        """(Hg * Wg, 1, 5) mask of the window pixels that lie outside the map
        (comparisons, not slice assignments: a captured graph keeps ``H``,
        ``W`` symbolic)."""
        outside = ((torch.arange(2 * Hg, device=device) >= H)[:, None]
                   | (torch.arange(2 * Wg, device=device) >= W)[None, :])
        outside = outside.view(Hg, 2, Wg, 2).permute(0, 2, 1, 3).reshape(-1, 1, 4)
        guide = outside.new_zeros(Hg * Wg, 1, 1)
        return torch.cat([guide, outside], 2)


def pad_to_multiple(x: Tensor, multiple: Union[int, tuple[int, int]]) -> Tensor:
    """Zero-pad an NCHW map at the bottom/right to a multiple of ``multiple``.

    Padded always (by 0 when the size is a multiple) and with floor divisions,
    not ``%``: no Python branch on the size, so a captured graph (compile,
    export) holds for every size, and inductor's symbolic shapes take it.

    Args:
        x (Tensor): The NCHW map.
        multiple (int | tuple[int, int]): One multiple for both sides, or
            height's and width's.

    Returns:
        Tensor: The padded map.
    """
    pad_h, pad_w = padding_to_multiple(x, multiple)
    return F.pad(x, (0, pad_w, 0, pad_h))


def padding_to_multiple(x: Tensor, multiple: Union[int, tuple[int, int]]) -> tuple:
    """The rows and columns that :func:`pad_to_multiple` adds to an NCHW map,
    ``(pad_h, pad_w)``, by floor divisions (see there why)."""
    mh, mw = (multiple, multiple) if isinstance(multiple, int) else multiple
    H, W = x.shape[-2:]
    return (H + mh - 1) // mh * mh - H, (W + mw - 1) // mw * mw - W


class WindowReduction(nn.Module):
    """What takes GLE's place in the paper's GLE ablation.

    ``(B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))`` by ``kind``, then
    LayerNorm ``norm1`` (eps 1e-5) as GLE ends. Returned as an NCHW view of
    channels-last memory, as GLE's.

    Args:
        channels (int): The number of channels C.
        kind (str): 'conv' (a 2x2 stride-2 convolution ``conv``, C -> C with
            bias; odd sides are zero-padded at the bottom/right first, as the
            stage-1 embedding does) or 'avgpool' (2x2 average pooling, no
            parameters; a border window averages its pixels inside the map).
            Anything else raises ``ValueError``.
    """

    def __init__(self, channels: int, kind: str) -> None:
        super().__init__()
        if kind not in GLE_TYPES[1:]:
            raise ValueError(f'WindowReduction: kind must be one of {GLE_TYPES[1:]}, got '
                             f'{kind!r}.')
        self.kind = kind
        if kind == 'conv':
            self.conv = nn.Conv2d(channels, channels, 2, 2)
        self.norm1 = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == 'conv':
            x = self.conv(pad_to_multiple(x, 2))
        else:
            x = F.avg_pool2d(x, 2, 2, ceil_mode=True)
        return self.norm1(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class StepwisePatchMerging(nn.Module):
    """SPM: MSA then GLE, ``(B, in_channels, H, W) -> (B, out_channels, ceil(H/2), ceil(W/2))``.

    Replaces a stride-2 patch embedding. Parameter names follow the reference
    implementation except ``msa.local_convs.{0..3}`` for its
    ``msa.local_conv_{3,5,7,9}`` and ``gle.qkv`` for its ``gle.attn.qkv``.

    ``gle``, ``guide`` and ``guide_kernel_size`` are the paper's ablations
    (defaults: the reference; see docs/reference_model.md).

    Args:
        in_channels (int): The number of input channels.
        out_channels (int): The number of output channels.
        num_heads (int): GLE's number of attention heads. Default: 8.
        gle (str): 'attention' (GLE), 'conv' or 'avgpool'
            (:class:`WindowReduction` as ``gle``). Default: 'attention'.
        guide (str): GLE's query token, see :class:`GuidedLocalEnhancement`
            (with ``gle='attention'`` only). Default: 'gtg'.
        guide_kernel_size (int): The kernel of GLE's guide token generator,
            see :class:`GuidedLocalEnhancement` (with ``gle='attention'``
            only). Default: 7.
    """

    def __init__(self, in_channels: int, out_channels: int,
                 num_heads: int = 8, gle: str = 'attention', guide: str = 'gtg',
                 guide_kernel_size: int = DEFAULT_GUIDE_KERNEL_SIZE) -> None:
        super().__init__()
        check_variant(type(self).__name__, gle, guide, guide_kernel_size)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.msa = MultiScaleAggregation(in_channels, out_channels)
        self.gle = (GuidedLocalEnhancement(out_channels, num_heads, guide_kernel_size, guide)
                    if gle == 'attention' else WindowReduction(out_channels, gle))
        # The weights of the convolutions run on channels-last maps are kept
        # channels-last, the layout their gradients come in (whichever CPU or
        # GPU kernel computes them; 1x1 and depth-wise weights differ from the
        # contiguous layout in the strides of their size-1 dimensions only).
        # Autograd accepts either, but DDP compares strides as they are and,
        # where they differ, warns ("Grad strides do not match bucket view
        # strides") and copies the gradient at every step. msa.proj.0 is only
        # read into a dense weight (MultiScaleAggregation.forward): its
        # gradient is contiguous.
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m is not self.msa.proj[0]:
                m.weight.data = torch.empty_like(
                    m.weight, memory_format=torch.channels_last).copy_(m.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.gle(self.msa(x))


class TokenStepwisePatchMerging(StepwisePatchMerging):
    """:class:`StepwisePatchMerging` with a token interface.

    The interface is that of mmcv's ``PatchMerging`` and ``PatchEmbed``, to
    take their place in a transformer backbone with the same parameters as
    :class:`StepwisePatchMerging`.

    ``forward(x, hw_shape)`` takes tokens ``(B, H*W, in_channels)`` and their
    ``(H, W)`` (as ``PatchMerging``), or without ``hw_shape`` an NCHW map (as
    ``PatchEmbed``); it returns tokens ``(B, H'*W', out_channels)`` and
    ``(H', W') = (ceil(H/2), ceil(W/2))``. Tokens are read and written as
    channels-last maps, so neither conversion copies.

    Args:
        in_channels (int): The number of input channels.
        out_channels (int): The number of output channels.
        num_heads (int): GLE's number of attention heads. Default: 8.
        gle (str): 'attention', 'conv' or 'avgpool', see
            :class:`StepwisePatchMerging`. Default: 'attention'.
        guide (str): GLE's query token, see :class:`GuidedLocalEnhancement`.
            Default: 'gtg'.
        guide_kernel_size (int): The kernel of GLE's guide token generator.
            Default: 7.
    """

    def forward(self, x: Tensor,
                hw_shape: Optional[Sequence[int]] = None) -> tuple[Tensor, tuple[int, int]]:
        if hw_shape is not None:
            B, L, C = x.shape
            H, W = hw_shape
            if L != H * W:
                raise ValueError(f'{type(self).__name__}: {L} tokens do not '
                                 f'make a {H}x{W} map.')
            x = x.reshape(B, H, W, C).permute(0, 3, 1, 2)
        x = super().forward(x)
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])


def reference_init(module: nn.Module) -> None:
    """The SPM reference's initialisation of every layer in ``module``.

    Linear weights truncated normal (std 0.02), convolutions normal with std
    ``sqrt(2 / fan_out)``, biases zero, norm layers weight 1 and bias 0; the
    class token of GLE's ``guide='cls'`` variant truncated normal (std 0.02),
    as ViT's and the backbone's cls tokens.

    Args:
        module (nn.Module): The module whose layers are initialised in place.
    """
    for m in module.modules():
        if isinstance(m, GuidedLocalEnhancement) and m.guide == 'cls':
            trunc_normal_(m.cls_token, std=.02)
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:  # SPMPVT(qkv_bias=False)
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, _BatchNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
            nn.init.zeros_(m.bias)
