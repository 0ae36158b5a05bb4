"""SPM-PVT: PVT v1 with Stepwise Patch Merging as the patch embedding of stages 2-4."""
import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..checkpoint import load_backbone_checkpoint, load_state_dict_hook
from .spm import StepwisePatchMerging

# Fields shared by all archs; depths differ (SPM_SPEC section 2).
_PVT_V1 = dict(
    embed_dims=(64, 128, 320, 512),
    num_heads=(1, 2, 5, 8),
    mlp_ratios=(8, 8, 4, 4),
    sr_ratios=(8, 4, 2, 1))
ARCH_SETTINGS = {
    name: dict(_PVT_V1, depths=depths)
    for name, depths in dict(
        tiny=(2, 2, 2, 2),
        small=(3, 4, 6, 3),
        medium=(3, 4, 18, 3),
        large=(3, 8, 27, 3)).items()
}
# Position embeddings are learnt for a 224x224 input: token grids per stage.
PRETRAIN_GRIDS = (56, 28, 14, 7)


def _pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Zero-pad an NCHW map at the bottom/right to a multiple of ``multiple``."""
    H, W = x.shape[-2:]
    pad_h, pad_w = -H % multiple, -W % multiple
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x


def resize_pos_embed(pos_embed: Tensor, grid: int, H: int, W: int) -> Tensor:
    """Bilinearly resize a ``(1, grid*grid, C)`` embedding to ``(1, H*W, C)``.

    As the reference: untouched when the token count already matches,
    otherwise ``align_corners=False``.
    """
    if H * W == grid * grid:
        return pos_embed
    pos = pos_embed.reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
    pos = F.interpolate(pos, size=(H, W), mode='bilinear', align_corners=False)
    return pos.flatten(2).transpose(1, 2)


class PatchEmbed(nn.Module):
    """Stage-1 embedding: 4x4 stride-4 conv + LayerNorm, NCHW in and out.

    Inputs whose sides are not multiples of 4 are zero-padded at the
    bottom/right first (mmdet's ``AdaptivePadding`` 'corner' mode).
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int = 4) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dims, patch_size, patch_size)
        self.norm = nn.LayerNorm(embed_dims)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'SPMPVT expects an NCHW image batch with '
                             f'{self.in_channels} channels, got shape '
                             f'{tuple(x.shape)}; convert grayscale/RGBA images '
                             f'to {self.in_channels} channels in the pipeline '
                             f"(e.g. LoadImageFromFile(color_type='color')).")
        x = self.proj(_pad_to_multiple(x, self.patch_size))
        # LayerNorm over channels-last memory, returned as an NCHW view.
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SpatialReductionAttention(nn.Module):
    """PVT v1 attention: keys/values from a ``sr_ratio``-strided conv of the map.

    Maps smaller than ``sr_ratio`` (tiny inputs) or not divisible by it are
    zero-padded at the bottom/right, so every size has keys.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        B, N, C = x.shape
        h = self.num_heads
        q = self.q(x).view(B, N, h, -1).transpose(1, 2)
        if self.sr_ratio > 1:
            H, W = hw_shape
            # Tokens may carry a cls token first only when sr_ratio == 1.
            kv = x.transpose(1, 2).reshape(B, C, H, W)
            kv = self.sr(_pad_to_multiple(kv, self.sr_ratio))
            kv = self.norm(kv.flatten(2).transpose(1, 2))
        else:
            kv = x
        k, v = self.kv(kv).view(B, -1, 2, h, C // h).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class PVTBlock(nn.Module):
    """PVT v1 encoder block: pre-norm SRA and MLP, each with stochastic depth."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, sr_ratio: int,
                 drop: float = 0., drop_path: float = 0.) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * mlp_ratio, drop)
        self.drop = nn.Dropout(drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        x = x + self.drop_path(self.drop(self.attn(self.norm1(x), hw_shape)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SPMPVT(BaseModule):
    """PVT v1 whose stage 2-4 patch embeddings are Stepwise Patch Merging.

    Args:
        arch: 'tiny', 'small', 'medium', 'large', or a dict with the keys
            ``embed_dims``, ``num_heads``, ``mlp_ratios``, ``depths`` and
            ``sr_ratios`` (four entries each).
        in_channels: Image channels.
        out_indices: Stages whose outputs are returned.
        drop_rate: Dropout after the position embedding and in the blocks.
        drop_path_rate: Stochastic depth, increasing linearly over all blocks.
        with_cls_token: The reference classification forward: a cls token in
            stage 4 and a final LayerNorm; the stage-4 output is then the
            normed cls token ``(B, C4)`` for mmpretrain's ``LinearClsHead``.
            Otherwise (dense mode) every output is an NCHW map, strides
            4/8/16/32.
        frozen_stages: Stages 1..n are frozen (patch embedding, position
            embedding, blocks); 0 freezes only stage 1's patch and position
            embedding; -1 freezes nothing.
        norm_eval: Keep BatchNorm layers (in SPM) in eval mode while training.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH)`` loads an
            ImageNet checkpoint in any layout :mod:`mmspm.checkpoint` knows.

    Parameter names map the authors' checkpoint layout by renaming alone:
    ``patch_embed{i}.(spm.)`` -> ``patch_embeds.{i-1}.``, ``pos_embed{i}`` ->
    ``pos_embeds.{i-1}``, ``block{i}.`` -> ``stages.{i-1}.``, plus the two SPM
    renames documented in :class:`StepwisePatchMerging`.
    """

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.1,
                 with_cls_token: bool = False,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.arch_settings = self._parse_arch(arch)
        dims = self.arch_settings['embed_dims']
        depths = self.arch_settings['depths']
        out_indices = tuple(out_indices)
        if not out_indices or any(not 0 <= i < 4 for i in out_indices):
            raise ValueError(f'SPMPVT: out_indices must be a non-empty subset '
                             f'of (0, 1, 2, 3), got {out_indices}.')
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f'SPMPVT: frozen_stages must be in [-1, 4], got '
                             f'{frozen_stages}.')
        if with_cls_token and self.arch_settings['sr_ratios'][3] != 1:
            raise ValueError('SPMPVT: with_cls_token needs sr_ratios[3] == 1 '
                             '(the cls token cannot be spatially reduced).')
        self.in_channels = in_channels
        self.out_indices = out_indices
        self.with_cls_token = with_cls_token
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.embed_dims = dims

        self.patch_embeds = nn.ModuleList([PatchEmbed(in_channels, dims[0])] + [
            StepwisePatchMerging(dims[i - 1], dims[i]) for i in range(1, 4)
        ])
        num_pos = [g * g for g in PRETRAIN_GRIDS]
        if with_cls_token:
            num_pos[3] += 1
        self.pos_embeds = nn.ParameterList(
            nn.Parameter(torch.zeros(1, n, d)) for n, d in zip(num_pos, dims))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            self.stages.append(nn.ModuleList(
                PVTBlock(dims[i], self.arch_settings['num_heads'][i],
                         self.arch_settings['mlp_ratios'][i],
                         self.arch_settings['sr_ratios'][i], drop_rate,
                         dpr[start + j]) for j in range(depth)))
        if with_cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dims[3]))
            self.norm = nn.LayerNorm(dims[3], eps=1e-6)
        self._freeze_stages()
        # Every load (init_cfg, load_from, resume) goes through the layout
        # mapping and the shape checks.
        self.register_load_state_dict_pre_hook(self._adapt_checkpoint)

    @staticmethod
    def _parse_arch(arch: Union[str, dict]) -> dict:
        if isinstance(arch, str):
            if arch.lower() not in ARCH_SETTINGS:
                raise ValueError(f'SPMPVT: unknown arch {arch!r}; choose one of '
                                 f'{sorted(ARCH_SETTINGS)} or pass a dict with '
                                 f'the keys {sorted(_PVT_V1) + ["depths"]}.')
            return ARCH_SETTINGS[arch.lower()]
        keys = set(_PVT_V1) | {'depths'}
        if not isinstance(arch, dict) or set(arch) != keys:
            raise ValueError(f'SPMPVT: a custom arch must be a dict with exactly '
                             f'the keys {sorted(keys)}, got {arch!r}.')
        if any(len(v) != 4 for v in arch.values()):
            raise ValueError(f'SPMPVT: every arch field needs four entries '
                             f'(one per stage), got {arch!r}.')
        return {k: tuple(v) for k, v in arch.items()}

    @staticmethod
    def _adapt_checkpoint(module: 'SPMPVT', state: dict, prefix: str,
                          local_metadata, strict, missing_keys,
                          unexpected_keys: list, error_msgs) -> None:
        load_state_dict_hook(module, state, prefix)

    def init_weights(self) -> None:
        if self.init_cfg is not None and self.init_cfg.get('type') == 'Pretrained':
            load_backbone_checkpoint(self, self.init_cfg['checkpoint'])
            return
        super().init_weights()
        for m in self.modules():
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
        for pos in self.pos_embeds:
            trunc_normal_(pos, std=.02)
        if self.with_cls_token:
            trunc_normal_(self.cls_token, std=.02)

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        n = max(self.frozen_stages, 1)
        frozen = [*self.patch_embeds[:n], *self.stages[:self.frozen_stages]]
        for m in frozen:
            m.eval()
        for p in [*self.pos_embeds[:n], *(p for m in frozen for p in m.parameters())]:
            p.requires_grad = False

    def train(self, mode: bool = True) -> 'SPMPVT':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        outs = []
        B = x.shape[0]
        for i, (embed, blocks) in enumerate(zip(self.patch_embeds, self.stages)):
            x = embed(x)
            H, W = x.shape[-2:]
            x = x.flatten(2).transpose(1, 2)
            pos = self.pos_embeds[i]
            grid = PRETRAIN_GRIDS[i]
            if self.with_cls_token and i == 3:
                x = torch.cat([self.cls_token.expand(B, -1, -1), x], 1)
                pos = torch.cat([pos[:, :1], resize_pos_embed(pos[:, 1:], grid, H, W)], 1)
            else:
                pos = resize_pos_embed(pos, grid, H, W)
            x = self.pos_drop(x + pos)
            for block in blocks:
                x = block(x, (H, W))
            if self.with_cls_token and i == 3:
                x = self.norm(x)[:, 0]
            else:
                # NCHW view of the token memory (channels-last): what the next
                # SPM wants, at no cost.
                x = x.view(B, H, W, -1).permute(0, 3, 1, 2)
            if i in self.out_indices:
                # Necks and heads get plain NCHW memory: mmcv's RoIAlign reads
                # it as such and pools wrong features from channels-last maps
                # (which convolutions, e.g. FPN's, pass on).
                outs.append(x.contiguous())
        return tuple(outs)
