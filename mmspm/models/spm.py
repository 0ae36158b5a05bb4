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
  of a ``C -> 3C`` projection of five tokens per window. Windows are processed
  in row chunks small enough for the CPU cache.
* Everything runs in channels-last memory, where CPU depth-wise convolutions
  are several times faster, and returns channels-last maps.

Odd sizes: the output is ``ceil(H/2) x ceil(W/2)``. The guide token of a window
on the bottom or right border attends to itself and to those of its four
pixels that lie inside the map (missing pixels are masked, not zero-filled),
so every size ``H, W >= 1`` is defined and even sizes equal the reference.
"""
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from mmengine.model.weight_init import trunc_normal_
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

# MSA's depth-wise kernel per head; the reference names its convolutions
# local_conv_{3,5,7,9}.
KERNEL_SIZES = (3, 5, 7, 9)


class MultiScaleAggregation(nn.Module):
    """Multi-Scale Aggregation: ``(B, in_channels, H, W) -> (B, out_channels, H, W)``.

    The channels are split into ``len(kernel_sizes)`` heads, each filtered by
    a depth-wise convolution of its own kernel size; the heads are shuffled so
    that every group of the grouped 1x1 ``proj.0`` sees one channel of each
    scale, then ``proj`` = 1x1 grouped conv, BN, GELU, 1x1 conv.
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
        heads = x.split(self.in_channels // len(self.kernel_sizes), 1)
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
    """

    # Size of one window chunk's (windows, heads, C) intermediates.
    CHUNK_BYTES = 2 * 2**20

    def __init__(self,
                 channels: int,
                 num_heads: int = 8,
                 guide_kernel_size: int = 7) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f'GuidedLocalEnhancement: channels={channels} must '
                             f'be divisible by num_heads={num_heads}.')
        self.channels = channels
        self.num_heads = num_heads
        self.scale = (channels // num_heads)**-0.5
        self.gtg = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.GELU(),
            nn.Conv2d(channels, channels, guide_kernel_size, stride=2,
                      padding=guide_kernel_size // 2, groups=channels))
        self.norm0 = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.norm1 = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        guide = self.gtg(x)
        Hg, Wg = guide.shape[-2:]
        pad_h, pad_w = 2 * Hg - H, 2 * Wg - W
        # Channels-last (a free view of what MSA produces): window copies then
        # move whole C-vectors.
        x = x.permute(0, 2, 3, 1)
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        rows = x.reshape(B * Hg, 2, Wg, 2, C)  # window rows of every image
        guide = guide.permute(0, 2, 3, 1).reshape(B * Hg, Wg, C)
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
        out = torch.cat([
            self._attend(r, g, m)
            for r, g, m in zip(rows.split(step), guide.split(step), masks)
        ])
        out = out.reshape(B, Hg, Wg, C) + self.qkv.bias[2 * C:]
        out = self.norm1(out)
        return out.permute(0, 3, 1, 2)

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
        h, d = self.num_heads, C // self.num_heads
        pixels = rows.transpose(1, 2).reshape(r, Wg, 4, C)
        tokens = self.norm0(torch.cat([guide.unsqueeze(2), pixels], 2)).view(-1, 5, C)
        weight, bias = self.qkv.weight, self.qkv.bias
        q = F.linear(tokens[:, 0], weight[:C], bias[:C]).view(-1, h, d) * self.scale
        qk = torch.bmm(q.transpose(0, 1), weight[C:2 * C].view(h, d, C))
        scores = torch.bmm(qk.transpose(0, 1), tokens.transpose(1, 2))   # (n, h, 5)
        if mask is not None:
            scores = scores.masked_fill(mask, float('-inf'))
        z = torch.bmm(scores.softmax(-1), tokens)                        # (n, h, C)
        out = torch.bmm(z.transpose(0, 1), weight[2 * C:].view(h, d, C).transpose(1, 2))
        return out.transpose(0, 1).reshape(-1, C)

    @staticmethod
    def _padding_mask(H: int, W: int, Hg: int, Wg: int,
                      device: torch.device) -> Tensor:
        """(Hg * Wg, 1, 5) mask of the window pixels that lie outside the map."""
        outside = torch.zeros(2 * Hg, 2 * Wg, dtype=torch.bool, device=device)
        outside[H:] = True
        outside[:, W:] = True
        outside = outside.view(Hg, 2, Wg, 2).permute(0, 2, 1, 3).reshape(-1, 1, 4)
        guide = outside.new_zeros(Hg * Wg, 1, 1)
        return torch.cat([guide, outside], 2)


class StepwisePatchMerging(nn.Module):
    """SPM: MSA then GLE, ``(B, in_channels, H, W) -> (B, out_channels, ceil(H/2), ceil(W/2))``.

    Replaces a stride-2 patch embedding. Parameter names follow the reference
    implementation except ``msa.local_convs.{0..3}`` for its
    ``msa.local_conv_{3,5,7,9}`` and ``gle.qkv`` for its ``gle.attn.qkv``.
    """

    def __init__(self, in_channels: int, out_channels: int,
                 num_heads: int = 8) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.msa = MultiScaleAggregation(in_channels, out_channels)
        self.gle = GuidedLocalEnhancement(out_channels, num_heads)

    def forward(self, x: Tensor) -> Tensor:
        return self.gle(self.msa(x))


class TokenStepwisePatchMerging(StepwisePatchMerging):
    """:class:`StepwisePatchMerging` with the token interface of mmcv's
    ``PatchMerging`` and ``PatchEmbed``, to take their place in a transformer
    backbone with the same parameters as :class:`StepwisePatchMerging`.

    ``forward(x, hw_shape)`` takes tokens ``(B, H*W, in_channels)`` and their
    ``(H, W)`` (as ``PatchMerging``), or without ``hw_shape`` an NCHW map (as
    ``PatchEmbed``); it returns tokens ``(B, H'*W', out_channels)`` and
    ``(H', W') = (ceil(H/2), ceil(W/2))``. Tokens are read and written as
    channels-last maps, so neither conversion copies.
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
    """The SPM reference's initialisation of every layer in ``module``:
    Linear weights truncated normal (std 0.02), convolutions normal with std
    ``sqrt(2 / fan_out)``, biases zero, norm layers weight 1 and bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, _BatchNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
            nn.init.zeros_(m.bias)
