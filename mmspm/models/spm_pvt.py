"""SPM-PVT: PVT v1 with Stepwise Patch Merging as the patch embedding of stages 2-4.

Beside the model: the authors' checkpoint key layout and its conversion to
mmspm's (pure functions on state dicts), and the backbone's own adaptation
and checks of every state dict loaded into it (:meth:`SPMPVT._prepare_state`).
"""
import re
from collections import OrderedDict
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..safe_load import (CheckpointError, backbone_of, check_shapes, load_checkpoint,
                         unwrap)
from .spm import KERNEL_SIZES, StepwisePatchMerging, reference_init

# Fields shared by all archs; depths differ (docs/reference_model.md).
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

# The authors' keys (patch_embed2.spm.msa.local_conv_3.weight, block1.0.attn.q.weight,
# pos_embed4, cls_token, norm.*, head.*) -> mmspm's, by renaming alone.
_RefRule = tuple[re.Pattern, Union[str, Callable[[re.Match], str]]]
REFERENCE_RULES: list[_RefRule] = [
    (re.compile(r'^patch_embed([1-4])\.(?:spm\.)?'),
     lambda m: f'patch_embeds.{int(m[1]) - 1}.'),
    (re.compile(r'\.msa\.local_conv_(\d)\.'),
     lambda m: f'.msa.local_convs.{KERNEL_SIZES.index(int(m[1]))}.'),
    (re.compile(r'\.gle\.attn\.qkv\.'), '.gle.qkv.'),
    (re.compile(r'^pos_embed([1-4])$'), lambda m: f'pos_embeds.{int(m[1]) - 1}'),
    (re.compile(r'^block([1-4])\.'), lambda m: f'stages.{int(m[1]) - 1}.'),
]
_REFERENCE_KEY = re.compile(r'^(patch_embed[1-4]\.|pos_embed[1-4]$|block[1-4]\.)')
_BACKBONE_KEY = re.compile(r'^(patch_embeds|pos_embeds|stages)\.')


def detect_layout(state: dict) -> str:
    """'reference' (the authors' keys), 'openmmlab' (``backbone.*``: an
    mmpretrain classifier, mmdet detector or mmseg segmentor), 'backbone' (a
    bare SPMPVT state dict) or 'unknown'."""
    if any(_REFERENCE_KEY.match(k) for k in state):
        return 'reference'
    if any(k.startswith('backbone.') for k in state):
        return 'openmmlab'
    if any(_BACKBONE_KEY.match(k) for k in state):
        return 'backbone'
    return 'unknown'


def rename_reference_key(key: str) -> Optional[str]:
    """mmspm's name of a reference backbone key; None if it is not one."""
    if key == 'cls_token' or key.startswith('norm.'):
        return key
    if not _REFERENCE_KEY.match(key):
        return None
    for pattern, repl in REFERENCE_RULES:
        key = pattern.sub(repl, key)
    return key


def convert_reference(state: dict) -> 'OrderedDict[str, Tensor]':
    """A reference-layout state dict in mmpretrain's ``ImageClassifier``
    layout (``backbone.*``, ``head.fc.*``), the tensors unchanged and in order.
    Detectors and segmentors hold their backbone under ``backbone.`` too."""
    out = OrderedDict()
    for k, v in state.items():
        if k.startswith('head.'):
            out['head.fc.' + k[len('head.'):]] = v
        elif (new := rename_reference_key(k)) is not None:
            out['backbone.' + new] = v
        else:
            raise CheckpointError(
                f'Reference-layout checkpoint has a key mmspm cannot map: '
                f'{k!r} (expected patch_embed*, pos_embed*, block*, norm.*, '
                f'cls_token, head.*). Is it an SPM-PVT checkpoint?')
    return out


def split_checkpoint(state: dict) -> tuple[dict, dict, str]:
    """(backbone state, classifier-head state ``{'fc.weight', ...}``, layout)."""
    layout = detect_layout(state)
    if layout == 'reference':
        state = convert_reference(state)
    backbone, head = OrderedDict(), OrderedDict()
    if layout == 'backbone':
        backbone = OrderedDict(state)
    elif layout in ('reference', 'openmmlab'):
        for k, v in state.items():
            if k.startswith('backbone.'):
                backbone[k[len('backbone.'):]] = v
            elif k.startswith('head.fc.'):
                head[k[len('head.'):]] = v
    return backbone, head, layout


def stage_depths(state: dict, prefix: str = '') -> tuple[int, ...]:
    """Blocks per stage in an mmspm-named state dict."""
    return tuple(
        len({k[len(prefix):].split('.')[2] for k in state
             if k.startswith(f'{prefix}stages.{i}.')}) for i in range(4))


def arch_of(depths: tuple[int, ...]) -> Optional[str]:
    """The SPM-PVT size with these blocks per stage, if any."""
    return next((n for n, a in ARCH_SETTINGS.items() if a['depths'] == depths), None)


# PVT v1 (no SPM): the official release keys (patch_embed{2,3,4}.proj.* are
# the convolutions SPM replaces) and mmdet's PyramidVisionTransformer keys.
_PVT_V1_KEY = re.compile(r'^(backbone\.)?(patch_embed[2-4]\.proj\.|layers\.[1-3]\.0\.projection\.)')
_MMDET_PVT_KEY = re.compile(r'^layers\.(\d)\.(\d)\.(.*)$')
# SPM-PVT's SPM layers: what it has instead of PVT v1's stage 2-4 embeddings.
_SPM_KEY = re.compile(r'^patch_embeds\.[1-3]\.')
_MMDET_PVT_BLOCK_RULES = [
    (re.compile(r'^attn\.attn\.out_proj\.'), 'attn.proj.'),
    (re.compile(r'^ffn\.layers\.0\.'), 'mlp.fc1.'),
    (re.compile(r'^ffn\.layers\.3\.'), 'mlp.fc2.'),
]


def is_pvt_v1(state: dict) -> bool:
    """Whether ``state`` holds a PVT v1 backbone (official or mmdet layout,
    bare or in a detector/segmentor), which has convolutions where SPM-PVT
    has SPM."""
    return any(_PVT_V1_KEY.match(k) for k in state)


def convert_pvt_v1(state: dict) -> tuple['OrderedDict[str, Tensor]', list[str]]:
    """The tensors of a PVT v1 checkpoint that SPM-PVT shares, under mmspm's
    names, and the keys left out (the stage 2-4 patch embeddings SPM
    replaces, mmdet's per-stage norms, the classifier head).

    Takes the official layout (the authors' key names, ``patch_embed2.proj``)
    and mmdet's ``PyramidVisionTransformer`` layout (``layers.{i}...``, whose
    ``in_proj`` packs ``q`` and ``kv`` and whose MLP is two 1x1 convolutions),
    bare or under ``backbone.``.
    """
    state = backbone_of(state)
    out, left_out = OrderedDict(), []
    for k, v in state.items():
        if (m := _MMDET_PVT_KEY.match(k)) is None:
            new = rename_reference_key(k)
            if new is None or _SPM_KEY.match(new):
                left_out.append(k)
            else:
                out[new] = v
            continue
        stage, part, rest = int(m[1]), int(m[2]), m[3]
        if part == 0 and stage == 0:
            out['patch_embeds.0.' + rest.replace('projection.', 'proj.')] = v
        elif part == 1 and rest == '0.pos_embed':
            out[f'pos_embeds.{stage}'] = v
        elif part == 1:
            block, name = rest.split('.', 1)
            prefix = f'stages.{stage}.{int(block) - 1}.'
            if name.startswith('attn.attn.in_proj_'):
                kind = name[len('attn.attn.in_proj_'):]
                dim = v.shape[0] // 3
                out[f'{prefix}attn.q.{kind}'] = v[:dim]
                out[f'{prefix}attn.kv.{kind}'] = v[dim:]
                continue
            for pattern, repl in _MMDET_PVT_BLOCK_RULES:
                name = pattern.sub(repl, name)
            out[prefix + name] = v.flatten(1) if name.startswith('mlp.') and v.dim() == 4 else v
        else:
            left_out.append(k)
    return out, left_out


def _pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Zero-pad an NCHW map at the bottom/right to a multiple of ``multiple``."""
    H, W = x.shape[-2:]
    pad_h, pad_w = -H % multiple, -W % multiple
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x


def resize_pos_embed(pos_embed: Tensor, grid: int, H: int, W: int) -> Tensor:
    """Bilinearly resize a ``(1, grid*grid, C)`` embedding to ``(1, H*W, C)``.

    As the reference: untouched when the token count already matches,
    otherwise ``align_corners=False`` (in float32 for half-precision
    embeddings).
    """
    if H * W == grid * grid:
        return pos_embed
    pos = pos_embed.reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
    pos = F.interpolate(pos.float(), size=(H, W), mode='bilinear', align_corners=False)
    return pos.flatten(2).transpose(1, 2).to(pos_embed.dtype)


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
            ImageNet checkpoint in any layout :func:`detect_layout` knows,
            from a path, URL or any scheme mmengine's CheckpointLoader reads;
            with ``from_pvt_v1=True``, a PVT v1 checkpoint for everything but
            the SPM layers (:meth:`load_pretrained`).

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
        # Every load of the backbone's keys (init_cfg, load_from, resume, plain
        # load_state_dict) fits dense/cls and position-embedding differences
        # and checks that the state dict is of this model.
        self._register_load_state_dict_pre_hook(self._prepare_state)

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

    def _prepare_state(self, state: dict, prefix: str, *args) -> None:
        """Load pre-hook: fit ``state``'s entries under ``prefix`` to this model
        in place, then refuse it if it is not an SPM-PVT state dict of this
        size.

        Dense models drop the classification-only entries (``cls_token``,
        ``norm.*`` and the cls entry of the last position embedding);
        position embeddings of another grid are interpolated.
        """
        if not any(k.startswith(prefix) for k in state):
            return
        for note in self._adapt_state(state, prefix):
            print_log(f'SPMPVT: {note}', logger='current')
        own = self.state_dict()
        check_shapes(own, state, prefix)
        self._check_depths(state, prefix)
        self._check_coverage(own, state, prefix)

    def _adapt_state(self, state: dict, prefix: str) -> list[str]:
        notes = []
        if not self.with_cls_token:
            for k in [k for k in state if k == prefix + 'cls_token'
                      or k.startswith(prefix + 'norm.')]:
                del state[k]
                notes.append(f'dropped {k} (dense mode)')
        for i, own in enumerate(self.pos_embeds):
            key = f'{prefix}pos_embeds.{i}'
            pos = state.get(key)
            if pos is None or pos.shape == own.shape or pos.dim() != 3:
                continue
            has_cls = pos.shape[1] != round(pos.shape[1]**0.5)**2
            wants_cls = i == 3 and self.with_cls_token
            cls, grid = (pos[:, :1], pos[:, 1:]) if has_cls else (None, pos)
            if wants_cls and cls is None:
                raise CheckpointError(f'{key} has no cls-token entry but the '
                                      f'model has with_cls_token=True; use a '
                                      f'classification checkpoint.')
            n_grid = own.shape[1] - int(wants_cls)
            if grid.shape[1] != n_grid:
                src, dst = round(grid.shape[1]**0.5), round(n_grid**0.5)
                if src * src != grid.shape[1]:
                    raise CheckpointError(f'Cannot resize {key} of {grid.shape[1]} '
                                          f'tokens to {n_grid}: it is not a square '
                                          f'grid.')
                grid = resize_pos_embed(grid, src, dst, dst)
                notes.append(f'interpolated {key} to {n_grid} tokens')
            state[key] = torch.cat([cls, grid], 1) if wants_cls else grid
            if has_cls and not wants_cls:
                notes.append(f'dropped the cls entry of {key} (dense mode)')
        return notes

    def _check_depths(self, state: dict, prefix: str) -> None:
        """Blocks per stage must agree: all SPM-PVT sizes share every tensor
        shape, so a checkpoint of another size would otherwise half-load."""
        found = stage_depths(state, prefix)
        own = tuple(len(stage) for stage in self.stages)
        if any(found) and found != own:
            raise CheckpointError(
                f'The checkpoint has {found} blocks per stage, the model {own}: '
                f'it is SPM-PVT-{arch_of(found) or "?"}, not this arch (check '
                f'`arch`; stage keys {prefix}stages.*).')

    @staticmethod
    def _check_coverage(own: dict, state: dict, prefix: str,
                        min_fraction: float = 0.5) -> None:
        matched = sum(k[len(prefix):] in own for k in state if k.startswith(prefix))
        if matched < min_fraction * len(own):
            raise CheckpointError(
                f'Only {matched} of the {len(own)} SPMPVT weights are in the '
                f'checkpoint: it is not an SPM-PVT checkpoint (a ResNet one, '
                f'say). Expected the reference layout, an mmpretrain/mmdet/mmseg '
                f'checkpoint with backbone.* keys, or a bare SPMPVT state dict; '
                f'PVT v1 checkpoints load with from_pvt_v1=True in init_cfg.')

    def load_pretrained(self, filename: str,
                        from_pvt_v1: bool = False) -> tuple[list[str], list[str]]:
        """Load a checkpoint of any layout :func:`detect_layout` knows from
        anything mmengine's CheckpointLoader reads (paths, URLs, schemes).

        ``from_pvt_v1``: the checkpoint is PVT v1's (official or mmdet layout,
        see :func:`convert_pvt_v1`); every tensor SPM-PVT shares with it is
        loaded and the SPM layers keep their values from before the load.
        Without it a PVT v1 checkpoint is refused, so that one given by
        mistake for an SPM-PVT one does not leave the SPM layers untrained
        unnoticed.

        Returns (and logs) the missing and the unexpected keys; missing
        tensors keep their values from before the load.
        """
        state = unwrap(load_checkpoint(filename))
        if from_pvt_v1:
            return self._load_pvt_v1(filename, state)
        if is_pvt_v1(state):
            raise CheckpointError(
                f'{filename!r} is a PVT v1 checkpoint: its stage 2-4 patch '
                f'embeddings are convolutions where SPM-PVT has SPM layers, so '
                f'those would stay untrained. To start SPM-PVT from PVT v1 '
                f'weights on purpose, say so: init_cfg=dict(type=\'Pretrained\', '
                f'checkpoint=..., from_pvt_v1=True).')
        backbone, _, layout = split_checkpoint(state)
        if layout == 'unknown':
            raise CheckpointError(
                f'{filename!r} is in no layout mmspm knows (no patch_embed*/'
                f'block* reference keys, no backbone.* keys, no patch_embeds.* '
                f'keys).')
        missing, unexpected = self.load_state_dict(backbone, strict=False)
        total = len(self.state_dict())
        left = ' (left at SPMPVT\'s own initialisation)' if missing else ''
        print_log(f'SPMPVT: loaded {filename} ({layout} layout): '
                  f'{total - len(missing)} of {total} backbone tensors; missing '
                  f'keys: {", ".join(missing) or "none"}{left}; unexpected keys: '
                  f'{", ".join(unexpected) or "none"}', logger='current',
                  level=30 if missing or unexpected else 20)
        return missing, unexpected

    def _load_pvt_v1(self, filename: str, state: dict) -> tuple[list[str], list[str]]:
        if not is_pvt_v1(state):
            raise CheckpointError(
                f'from_pvt_v1=True but {filename!r} is not a PVT v1 checkpoint '
                f'(no patch_embed2.proj.* or layers.1.0.projection.* keys); drop '
                f'from_pvt_v1 for SPM-PVT checkpoints.')
        backbone, left_out = convert_pvt_v1(state)
        missing, unexpected = self.load_state_dict(backbone, strict=False)
        spm = [k for k in missing if _SPM_KEY.match(k)]
        if len(spm) != len(missing) or unexpected:
            raise CheckpointError(
                f'{filename!r} is not a PVT v1 checkpoint of this size: SPM-PVT '
                f'tensors missing from it: {sorted(set(missing) - set(spm))[:8]}; '
                f'tensors with no place in SPM-PVT: {unexpected[:8]} (check '
                f'`arch`).')
        total = len(self.state_dict())
        print_log(f'SPMPVT: initialised from the PVT v1 checkpoint {filename}: '
                  f'{total - len(spm)} of {total} tensors from the checkpoint '
                  f'(stage-1 patch embedding, position embeddings, blocks'
                  f'{", cls token, final norm" if self.with_cls_token else ""}); '
                  f'{len(spm)} tensors of the SPM layers (patch_embeds.1-3) at '
                  f'SPM-PVT\'s own initialisation; not used: {len(left_out)} '
                  f'checkpoint tensors (PVT\'s stage 2-4 patch embeddings, '
                  f'head)', logger='current')
        return missing, unexpected

    def init_weights(self) -> None:
        """SPM-PVT's own initialisation (the reference's), then the
        ``Pretrained`` checkpoint of ``init_cfg`` over it."""
        pretrained = (self.init_cfg or {}).get('type') == 'Pretrained'
        if not pretrained:
            super().init_weights()
        reference_init(self)
        for pos in self.pos_embeds:
            trunc_normal_(pos, std=.02)
        if self.with_cls_token:
            trunc_normal_(self.cls_token, std=.02)
        if pretrained:
            self.load_pretrained(self.init_cfg['checkpoint'],
                                 self.init_cfg.get('from_pvt_v1', False))

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
