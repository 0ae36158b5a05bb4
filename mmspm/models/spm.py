"""Stepwise Patch Merging (SPM): Multi-Scale Aggregation + Guided Local Enhancement.

The layers are numerically the authors' reference (SPM_SPEC section 1) but
computed differently where that is cheaper:

* MSA builds one depth-wise convolution from the four per-head kernels
  (3, 5, 7, 9, zero-padded to 9x9) and applies it to the input with its
  channels already in shuffled order, so neither the per-head loop, the
  concatenation nor the channel shuffle materialises a tensor.
* GLE computes only the guide token's query. Keys and values are never
  formed: ``q . (W_k n + b_k) = (W_k^T q) . n + const`` (the constant cancels
  in the softmax) and ``sum_j a_j (W_v n_j + b_v) = W_v (sum_j a_j n_j) + b_v``,
  so the per-pixel work is a LayerNorm and two tiny batched products instead
  of a ``C -> 3C`` projection of five tokens per window.

Odd sizes: the output is ``ceil(H/2) x ceil(W/2)``. The guide token of a window
on the bottom or right border attends to itself and to those of its four
pixels that lie inside the map (missing pixels are masked, not zero-filled),
so every size ``H, W >= 1`` is defined and even sizes equal the reference.
"""
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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
                 kernel_sizes: Sequence[int] = (3, 5, 7, 9)) -> None:
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
        # Input channel feeding shuffled channel d * num_heads + i: channel d
        # of head i.
        shuffle = torch.arange(in_channels).view(num_heads, head_channels).t()
        self.register_buffer('shuffle', shuffle.reshape(-1), persistent=False)

    def fused_weight(self) -> tuple[Tensor, Tensor]:
        """The per-head kernels as one depth-wise kernel, in shuffled order."""
        k_max = max(self.kernel_sizes)
        weights, biases = [], []
        for conv, k in zip(self.local_convs, self.kernel_sizes):
            pad = (k_max - k) // 2
            weights.append(F.pad(conv.weight, (pad, pad, pad, pad)))
            biases.append(conv.bias)
        weight = torch.stack(weights, 1).flatten(0, 1)
        bias = torch.stack(biases, 1).flatten()
        return weight, bias

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f'MultiScaleAggregation expects {self.in_channels} '
                             f'input channels, got {x.shape[1]} '
                             f'(input shape {tuple(x.shape)}).')
        weight, bias = self.fused_weight()
        # Channels-last memory: CPU depth-wise and grouped convolutions are
        # several times faster in it, backward above all.
        x = x.permute(0, 2, 3, 1).index_select(3, self.shuffle).permute(0, 3, 1, 2)
        x = F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2,
                     groups=self.in_channels)
        return self.proj(x)


class GuidedLocalEnhancement(nn.Module):
    """Guided Local Enhancement: ``(B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))``.

    A guide token per 2x2 window (BN, GELU, depth-wise 7x7 stride-2 conv)
    attends over itself and the window's pixels (LayerNorm ``norm0``, one
    ``qkv`` Linear, ``num_heads`` heads, no output projection); the attended
    guide token, after LayerNorm ``norm1``, is the output. The result is
    returned as an NCHW-shaped view of channels-last memory, so flattening it
    to tokens costs nothing.
    """

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
        h, d = self.num_heads, C // self.num_heads
        guide = self.gtg(x)
        Hg, Wg = guide.shape[-2:]
        pad_h, pad_w = 2 * Hg - H, 2 * Wg - W
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        # Windows (B, Hg, Wg, 4, C); the order of the four pixels is irrelevant
        # because only the guide token's query is kept and there is no
        # positional term.
        win = x.view(B, C, Hg, 2, Wg, 2).permute(0, 2, 4, 3, 5, 1)
        win = self.norm0(win.reshape(B, Hg, Wg, 4, C))
        g = self.norm0(guide.permute(0, 2, 3, 1))

        weight, bias = self.qkv.weight, self.qkv.bias
        w_k = weight[C:2 * C].view(h, d, C)
        w_v = weight[2 * C:].view(h, d, C)
        q = F.linear(g, weight[:C], bias[:C]).view(-1, h, d) * self.scale
        qk = torch.bmm(q.transpose(0, 1), w_k).transpose(0, 1)  # (M, h, C)
        win = win.view(-1, 4, C)
        g = g.reshape(-1, C, 1)
        scores = torch.cat([qk @ g, qk @ win.transpose(1, 2)], 2)  # (M, h, 5)
        if pad_h or pad_w:
            mask = self._padding_mask(H, W, Hg, Wg, x.device)
            scores = scores.view(B, Hg * Wg, h, 5).masked_fill(
                mask, float('-inf')).view(-1, h, 5)
        attn = scores.softmax(-1)
        z = attn[..., :1] * g.transpose(1, 2) + attn[..., 1:] @ win  # (M, h, C)
        out = torch.bmm(z.transpose(0, 1), w_v.transpose(1, 2))     # (h, M, d)
        out = out.transpose(0, 1).reshape(B, Hg, Wg, C) + bias[2 * C:]
        out = self.norm1(out)
        return out.permute(0, 3, 1, 2)

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
