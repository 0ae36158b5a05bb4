"""mmdet's Swin padding and window attention with no Python branch on the
map size, so that one captured graph (``torch.compile(dynamic=True)``,
``torch.export``, ``torch.onnx.export``) serves every input size.

mmdet pads only when a size needs it (``if pad_h > 0 or pad_w > 0`` in
``AdaptivePadding``, ``if pad_r > 0 or pad_b`` in ``ShiftWindowMSA``) and
builds the shifted-window mask by slice assignments: a dynamic-shape compile
guards on those branches and compiles again when an input size needs padding
and the first did not (or the reverse). Here both always pad (by 0 where the
size is already a multiple) and the mask comes from index comparisons, with
the same parameters, buffers and outputs.
"""
import torch
import torch.nn.functional as F
from mmdet.models.backbones.swin import ShiftWindowMSA, SwinTransformer
from torch import Tensor, nn

from .spm import pad_to_multiple


class CornerPadding(nn.Module):
    """mmdet's ``AdaptivePadding(padding='corner')`` where the kernel is the stride.

    For a non-overlapping patch embedding, as Swin's always is:
    :func:`~.spm.pad_to_multiple` of ``stride``, as the module
    ``PatchEmbed.adap_padding`` holds.

    Args:
        stride (tuple[int, int]): The stride (height, width).
    """

    def __init__(self, stride: tuple[int, int]) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return pad_to_multiple(x, self.stride)


class BranchFreeShiftWindowMSA(ShiftWindowMSA):
    """mmdet's ``ShiftWindowMSA`` whose forward pass does not branch on ``hw_shape``.

    Same construction (arguments), parameters and output as mmdet's
    ``ShiftWindowMSA``.
    """

    def forward(self, query: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        B, _, C = query.shape
        H, W = hw_shape
        ws, shift = self.window_size, self.shift_size
        nh, nw = (H + ws - 1) // ws, (W + ws - 1) // ws  # windows down, across
        x = F.pad(query.view(B, H, W, C), (0, 0, 0, nw * ws - W, 0, nh * ws - H))
        mask = None
        if shift:  # a constructor argument, not a size
            x = torch.roll(x, (-shift, -shift), (1, 2))
            mask = self._shift_mask(nh, nw, query.device)
        x = self.w_msa(self._windows(x, nh, nw), mask=mask)
        x = x.view(B, nh, nw, ws, ws, C).transpose(2, 3).reshape(B, nh * ws, nw * ws, C)
        if shift:
            x = torch.roll(x, (shift, shift), (1, 2))
        # Always a copy: reshaping the crop would copy only when there was
        # padding, and a compile guards on which.
        x = x[:, :H, :W].clone(memory_format=torch.contiguous_format)
        return self.drop(x.view(B, H * W, C))

    def _windows(self, x: Tensor, nh: int, nw: int) -> Tensor:
        """``(B, nh * ws, nw * ws, C)`` -> ``(B * nh * nw, ws * ws, C)``, in
        mmdet's ``window_partition`` order. Sizes are spelt out: mmdet's
        ``window_reverse`` recovers ``B`` by float division, which a
        dynamic-shape compile guards on."""
        B, C, ws = x.shape[0], x.shape[-1], self.window_size
        x = x.view(B, nh, ws, nw, ws, C).transpose(2, 3)
        return x.reshape(B * nh * nw, ws * ws, C)

    def _shift_mask(self, nh: int, nw: int, device: torch.device) -> Tensor:
        """mmdet's SW-MSA mask: 0 between pixels of the same region of the
        rolled map (3 x 3 regions cut at ``-window_size`` and ``-shift_size``),
        -100 between others; ``(nh * nw, ws * ws, ws * ws)``."""
        ws, shift = self.window_size, self.shift_size

        def region(n: int) -> Tensor:
            i = torch.arange(n, device=device)
            return (i >= n - ws).long() + (i >= n - shift).long()

        ids = (region(nh * ws)[:, None] * 3 + region(nw * ws)[None, :]).float()
        ids = self._windows(ids[None, :, :, None], nh, nw).view(nh * nw, ws * ws)
        diff = ids.unsqueeze(1) - ids.unsqueeze(2)
        return diff.masked_fill(diff != 0, -100.0)


def remove_size_branches(swin: SwinTransformer) -> None:
    """Replace the size branches of mmdet's Swin, in place.

    :class:`CornerPadding` and :class:`BranchFreeShiftWindowMSA` take the
    place of its adaptive padding and window attention; parameters, buffers
    and outputs stay the same.

    Args:
        swin (SwinTransformer): mmdet's Swin (or a subclass).
    """
    # mmdet's Swin asserts a non-overlapping patch embedding (strides[0] ==
    # patch_size), which pads at the corner.
    swin.patch_embed.adap_padding = CornerPadding(swin.patch_embed.projection.stride)
    for stage in swin.stages:
        for block in stage.blocks:
            # Same state, other forward: the constructor is mmdet's.
            block.attn.__class__ = BranchFreeShiftWindowMSA
