"""PVT v1's layers as SPM-PVT uses them (the SPM reference's PVT v1): patch
embedding, spatial-reduction attention, MLP and block, with the position
embeddings' resize; NCHW maps in the embeddings, tokens in the blocks.
Sizes that are not multiples of a stride are handled as mmdet's PVT v1
handles them: the patch embeddings pad as ``padding`` says (none: floor),
the spatial reduction floors."""
from typing import Optional, Union

import torch
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmcv.cnn.bricks import DropPath
from torch import Tensor, nn

from .spm import pad_to_multiple, padding_to_multiple


def resize_pos_embed(pos_embed: Tensor, grid: Union[int, tuple[int, int]], H: int,
                     W: int) -> Tensor:
    """Bilinearly resize a ``(1, gh*gw, C)`` embedding to ``(1, H*W, C)``.

    ``align_corners=False``, in float32 for half-precision embeddings.

    Always resized: at ``H == W == grid`` the interpolation is the identity
    (every weight 1 or 0), and with no branch on the size a captured graph
    holds for every size. (The reference skips it whenever ``H * W`` equals
    ``grid * grid``, also for a ``grid/2 x 2*grid`` map, whose embedding it
    then reads as the wrong grid; this follows the spec: interpolated
    whenever the grid differs.)

    Args:
        pos_embed (Tensor): The embedding, ``(1, gh*gw, C)``.
        grid (int | tuple[int, int]): The embedding's grid ``(gh, gw)``, or
            the side of a square one.
        H (int): The height of the new grid.
        W (int): The width of the new grid.

    Returns:
        Tensor: The resized embedding, ``(1, H*W, C)``.
    """
    gh, gw = (grid, grid) if isinstance(grid, int) else grid
    pos = pos_embed.reshape(1, gh, gw, -1).permute(0, 3, 1, 2)
    pos = F.interpolate(pos.float(), size=(H, W), mode='bilinear', align_corners=False)
    return pos.flatten(2).transpose(1, 2).to(pos_embed.dtype)


def layer_norm(dim: int, norm_cfg: Optional[dict], eps: float) -> nn.LayerNorm:
    """A LayerNorm over ``dim`` channels.

    Args:
        dim (int): The number of channels.
        norm_cfg (dict | None): None: the reference's LayerNorm (with
            ``eps``); otherwise the norm is built from ``norm_cfg`` (mmcv's
            ``build_norm_layer``), which must give a LayerNorm (else
            ``ValueError``): the norms of SPM-PVT normalise tokens.
        eps (float): The reference's epsilon, used when ``norm_cfg`` is None.

    Returns:
        nn.LayerNorm: The norm.
    """
    if norm_cfg is None:
        return nn.LayerNorm(dim, eps=eps)
    norm = build_norm_layer(norm_cfg, dim)[1]
    if not isinstance(norm, nn.LayerNorm):
        raise ValueError(f'SPMPVT: norm_cfg={norm_cfg!r} builds a {type(norm).__name__}; '
                         f"PVT's norms normalise tokens, so it must be a LayerNorm "
                         f"(type='LN').")
    return norm


PADDING_MODES = ('corner', 'same')


class PatchEmbed(nn.Module):
    """PVT v1's patch embedding: square conv with stride ``patch_size`` + LayerNorm.

    NCHW in and out. ``padding`` is mmdet's ``PatchEmbed``'s: the conv's
    zero padding (0: a side that is not a multiple of ``patch_size`` loses
    its last pixels, as in mmdet's and the PVT authors' PVT v1), or mmdet's
    ``AdaptivePadding`` mode, which pads to a multiple first ('corner': at
    the bottom/right; 'same': split, the larger half at the bottom/right).

    Args:
        in_channels (int): The number of input channels.
        embed_dims (int): The number of output channels.
        patch_size (int): The conv's kernel size and stride: 4 in stage 1, 2
            in the merges that are not SPM. Default: 4.
        norm_cfg (dict | None): See :func:`layer_norm`; None: eps 1e-5.
            Default: None.
        padding (int | tuple[int, int] | str): The conv's padding, or
            'corner' or 'same'. Default: 0.
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int = 4,
                 norm_cfg: Optional[dict] = None,
                 padding: Union[int, tuple[int, int], str] = 0) -> None:
        super().__init__()
        if isinstance(padding, str) and padding not in PADDING_MODES:
            raise ValueError(f'SPMPVT: padding={padding!r} is none of mmdet\'s modes '
                             f'{PADDING_MODES}; give one of them or an int.')
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.padding = padding
        self.proj = nn.Conv2d(in_channels, embed_dims, patch_size, patch_size,
                              0 if isinstance(padding, str) else padding)
        self.norm = layer_norm(embed_dims, norm_cfg, eps=1e-5)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'SPMPVT expects an NCHW image batch with '
                             f'{self.in_channels} channels, got shape '
                             f'{tuple(x.shape)}; convert grayscale/RGBA images '
                             f'to {self.in_channels} channels in the pipeline '
                             f"(e.g. LoadImageFromFile(color_type='color')).")
        if self.padding == 'corner':
            x = pad_to_multiple(x, self.patch_size)
        elif self.padding == 'same':
            pad_h, pad_w = padding_to_multiple(x, self.patch_size)
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        x = self.proj(x)
        # LayerNorm over channels-last memory, returned as an NCHW view.
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SpatialReductionAttention(nn.Module):
    """PVT v1 attention: keys/values from a ``sr_ratio``-strided conv of the map.

    A side that is not a multiple of ``sr_ratio`` loses its last pixels in
    the keys, as in mmdet's and the PVT authors' PVT v1; a map smaller than
    ``sr_ratio`` (a tiny input, which those refuse) is zero-padded at the
    bottom/right to one window, so every size has keys.

    Args:
        dim (int): The number of channels.
        num_heads (int): The number of attention heads.
        sr_ratio (int): The spatial-reduction ratio.
        qkv_bias (bool): Biases of ``q`` and ``kv``. Default: True (the
            reference's).
        attn_drop (float): Dropout on the attention weights while training.
            Default: 0 (the reference's).
        norm_cfg (dict | None): The norm after ``sr``, see
            :func:`layer_norm`; None: eps 1e-5. Default: None (the
            reference's).
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, qkv_bias: bool = True,
                 attn_drop: float = 0., norm_cfg: Optional[dict] = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = layer_norm(dim, norm_cfg, eps=1e-5)

    def forward(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        B, N, C = x.shape
        h = self.num_heads
        q = self.q(x).view(B, N, h, -1).transpose(1, 2)
        if self.sr_ratio > 1:
            H, W = hw_shape
            # Tokens may carry a cls token first only when sr_ratio == 1.
            kv = x.transpose(1, 2).reshape(B, C, H, W)
            sr = self.sr_ratio
            kv = self.sr(F.pad(kv, (0, at_least(W, sr) - W, 0, at_least(H, sr) - H)))
            kv = self.norm(kv.flatten(2).transpose(1, 2))
        else:
            kv = x
        k, v = self.kv(kv).view(B, -1, 2, h, C // h).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


def at_least(size: Union[int, Tensor], minimum: int) -> Union[int, Tensor]:
    """``max(size, minimum)`` without a Python branch on ``size``, for an int,
    a symbolic size (``torch.compile``, ``torch.export``: ``torch.sym_max``)
    or a size traced as a tensor (``torch.jit.trace``, e.g. FLOP counting)."""
    if isinstance(size, Tensor):
        return size.clamp(min=minimum)
    return torch.sym_max(size, minimum)


class Mlp(nn.Module):
    """fc1, activation, fc2, with dropout ``drop``.

    Args:
        dim (int): The number of input and output channels.
        hidden_dim (int): The number of hidden channels.
        drop (float): The dropout rate. Default: 0.
        act_cfg (dict | None): The activation; None: GELU. Default: None.
    """

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.,
                 act_cfg: Optional[dict] = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = build_activation_layer(act_cfg or dict(type='GELU'))
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class PVTBlock(nn.Module):
    """PVT v1 encoder block: pre-norm SRA and MLP, each with stochastic depth.

    Args:
        dim (int): The number of channels.
        num_heads (int): The number of attention heads.
        mlp_ratio (int): The MLP's hidden channels per channel.
        sr_ratio (int): The spatial-reduction ratio.
        drop (float): Dropout after the attention and in the MLP. Default: 0.
        drop_path (float): The stochastic depth rate. Default: 0.
        qkv_bias (bool): See :class:`SpatialReductionAttention`.
            Default: True.
        attn_drop (float): See :class:`SpatialReductionAttention`.
            Default: 0.
        act_cfg (dict | None): See :class:`Mlp`. Default: None.
        norm_cfg (dict | None): Every norm of the block, see
            :func:`layer_norm`; None: the reference's, eps 1e-6 here.
            Default: None.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, sr_ratio: int,
                 drop: float = 0., drop_path: float = 0., qkv_bias: bool = True,
                 attn_drop: float = 0., act_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None) -> None:
        super().__init__()
        self.norm1 = layer_norm(dim, norm_cfg, eps=1e-6)
        self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio, qkv_bias, attn_drop,
                                              norm_cfg)
        self.norm2 = layer_norm(dim, norm_cfg, eps=1e-6)
        self.mlp = Mlp(dim, dim * mlp_ratio, drop, act_cfg)
        self.drop = nn.Dropout(drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        x = x + self.drop_path(self.drop(self.attn(self.norm1(x), hw_shape)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
