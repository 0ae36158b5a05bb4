"""SPM-PVT: PVT v1 with Stepwise Patch Merging as the patch embedding of stages 2-4
(or of those the paper's ablation options choose, :class:`SPMPVT`).

Its checkpoint layouts and their conversions are in :mod:`.spm_pvt_checkpoints`;
the backbone adapts and checks every state dict loaded into it
(:meth:`SPMPVT._prepare_state`).
"""
from typing import Optional, Sequence, Union

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch import Tensor, nn

from ..safe_load import CheckpointError, check_shapes
from .checkpointing import checkpointed
from .pvt_v1_layers import PatchEmbed, PVTBlock, layer_norm, resize_pos_embed
from .spm import StepwisePatchMerging, reference_init
from .spm_backbone import InitCfg, SPMBackbone
from .spm_pvt_args import (PVTArgumentError, arch_settings, check_fixed_args,
                           check_paddings, init_cfg_of, pretrain_grids)
from .spm_pvt_checkpoints import (check_coverage, check_depths, check_pvt_v1_fit,
                                  check_variant_fits, pretrained_backbone)
from .spm_variants import (DEFAULT_GUIDE_KERNEL_SIZE, SPM_MERGES, check_spm_stages,
                           check_variant)


class SPMPVT(SPMBackbone, BaseModule):
    """PVT v1 whose stage 2-4 patch embeddings are Stepwise Patch Merging.

    Takes the arguments of mmdet's ``PyramidVisionTransformer`` too, so that
    mmdet's PVT v1 configs build it with only ``type='SPMPVT'``.

    The paper's ablations (section "Ablation Study"; definitions and what the
    paper leaves open in docs/reference_model.md, "Ablation variants") are
    the options ``spm_stages``, ``gle``, ``guide`` and
    ``guide_kernel_size``; their defaults are the reference model, tensor for
    tensor. A model with ``spm_stages=()`` is PVT v1.

    Parameter names map the authors' checkpoint layout by renaming alone:
    ``patch_embed{i}.(spm.)`` -> ``patch_embeds.{i-1}.``, ``pos_embed{i}`` ->
    ``pos_embeds.{i-1}``, ``block{i}.`` -> ``stages.{i-1}.``, plus the two SPM
    renames documented in :class:`StepwisePatchMerging`.

    Args:
        arch (str | dict): 'tiny', 'small', 'medium', 'large' (or 't', 's',
            'm', 'l'), or a dict with the keys ``embed_dims``, ``num_heads``,
            ``mlp_ratios``, ``depths`` and ``sr_ratios`` (four entries each).
            The PVT v1 arguments below replace its fields. Default: 'tiny'.
        in_channels (int): Image channels. Default: 3.
        out_indices (Sequence[int]): Stages whose outputs are returned.
            Default: (0, 1, 2, 3), all four.
        drop_rate (float): Dropout after the position embedding, after the
            attention and in the MLP. Default: 0.
        drop_path_rate (float): Stochastic depth, increasing linearly over
            all blocks. Default: 0.1.
        with_cls_token (bool): The reference classification forward: a cls
            token in stage 4 and a final LayerNorm; the stage-4 output is then
            the normed cls token ``(B, C4)`` for mmpretrain's
            ``LinearClsHead``. Otherwise (dense mode, the default) every
            output is an NCHW map, strides 4/8/16/32. Default: False.
        frozen_stages (int): Stages 1..n are frozen (patch embedding,
            position embedding, blocks; eval mode, no gradients) from
            construction on; 0 freezes only stage 1's patch and position
            embedding; -1 freezes nothing. Default: -1.
        norm_eval (bool): Keep the BatchNorm layers (in SPM) in eval mode
            while training. Default: False.
        init_cfg (dict | list[dict] | None): None (the reference
            initialisation), or a dict or a list of dicts as mmengine
            documents: Kaiming, TruncNormal, Constant, ... apply to the layers
            they name, over the reference initialisation;
            ``dict(type='Pretrained', checkpoint=..., prefix=None,
            from_pvt_v1=False)`` loads a checkpoint over all of them
            (:meth:`load_pretrained`). A dict with ``checkpoint`` and no
            ``type`` (mmdet's PVT configs) is a ``Pretrained`` one.
            Default: None.
        with_cp (bool): Recompute the activations of the blocks and the SPM
            layers in the backward pass instead of keeping them
            (``torch.utils.checkpoint``). Default: False.
        pretrain_img_size (int | tuple[int, int]): The input size, as an
            int (square) or ``(height, width)``, the position embeddings are
            learnt for. Default: 224.
        embed_dims (int | None): mmdet's base width: stage ``i`` is
            ``embed_dims * num_heads[i]`` wide (when this or ``num_heads`` is
            given; the base defaults to 64). None: the arch's widths.
            Default: None.
        num_layers (Sequence[int] | None): Blocks per stage. None: the
            arch's. Default: None.
        num_heads (Sequence[int] | None): Attention heads per stage. None:
            the arch's. Default: None.
        mlp_ratios (Sequence[int] | None): MLP ratios per stage. None: the
            arch's. Default: None.
        sr_ratios (Sequence[int] | None): Spatial-reduction ratios per stage.
            None: the arch's. Default: None.
        qkv_bias (bool): Biases of the blocks' ``q`` and ``kv`` projections.
            Default: True.
        attn_drop_rate (float): Dropout on the blocks' attention weights.
            Default: 0.
        act_cfg (dict | None): The MLPs' activation (mmcv). None: GELU.
            Default: None.
        norm_cfg (dict | None): Every LayerNorm of the PVT part (stage-1
            embedding, blocks, spatial reduction, final norm), as mmdet's
            ``norm_cfg`` (e.g. ``dict(type='LN', eps=1e-6)``). None: the
            reference's (eps 1e-6 in the blocks and the final norm, 1e-5 in
            the stage-1 embedding and after the spatial reduction), which
            the SPM and PVT authors' checkpoints were trained with; mmdet's
            PVT has 1e-6 everywhere (its default ``norm_cfg``). SPM's own
            norms stay. Default: None.
        num_stages (int): mmdet's; only 4 is possible, others are refused,
            naming why. Default: 4.
        patch_sizes (Sequence[int]): mmdet's; only (4, 2, 2, 2) is possible,
            others are refused, naming why. Default: (4, 2, 2, 2).
        strides (Sequence[int]): mmdet's; only (4, 2, 2, 2) is possible,
            others are refused, naming why. Default: (4, 2, 2, 2).
        paddings (Sequence[int | str]): mmdet's: the padding of each patch
            embedding, as mmdet's ``PatchEmbed`` takes it (see
            :class:`.pvt_v1_layers.PatchEmbed`): 0 (a side that is not a
            multiple of the stride loses its last pixels, as in mmdet's PVT
            v1), an int, 'corner' or 'same'. The SPM merges pad odd maps by
            themselves at the bottom/right (``ceil(H/2)``): their entries must
            be 0 or 'corner'. Default: (0, 0, 0, 0).
        use_abs_pos_embed (bool): mmdet's; only True is possible, False is
            refused, naming why. Default: True.
        norm_after_stage (bool): mmdet's; only False is possible, True is
            refused, naming why. Default: False.
        use_conv_ffn (bool): mmdet's; only False is possible, True is
            refused, naming why. Default: False.
        pretrained (str | None): mmdet's deprecated path of a checkpoint: a
            ``Pretrained`` ``init_cfg``. Default: None.
        convert_weights (bool): mmdet's switch for converting the PVT
            authors' layout. SPMPVT recognises the layout of what it loads
            (SPM-PVT's authors', mmspm's, PVT v1's official and mmdet's) and
            converts whenever needed, so both values load the same.
            Default: True.
        spm_stages (Sequence[int]): The merges that are SPM, numbered as the
            paper's ablation counts them ("stage 1/2/3"): merge ``k`` (1, 2
            or 3) leads into stage ``k + 1``, so it is ``patch_embeds.{k}``.
            The other merges are PVT v1's patch embedding (2x2 stride-2 conv
            with bias + LayerNorm after ``norm_cfg``, as stage 1's; parameters
            ``patch_embeds.{k}.proj.*`` and ``.norm.*``, filled by a PVT v1
            checkpoint with ``from_pvt_v1``); ``()`` is PVT v1.
            Default: (1, 2, 3).
        gle (str): What halves the map after MSA in the SPM merges:
            'attention' (Guided Local Enhancement), 'conv' (a 2x2 stride-2
            convolution C -> C with bias, ``gle.conv.*``) or 'avgpool' (2x2
            average pooling); both replacements end with GLE's LayerNorm
            ``gle.norm1`` (the paper leaves it open; mmspm keeps it).
            Default: 'attention'.
        guide (str): GLE's query token per window: 'gtg' (the guide token
            generator, ``gle.gtg.*``), 'cls' (one learnt token per merge, the
            same for every window, ``gle.cls_token`` (1, 1, C),
            truncated-normal init std 0.02) or 'gap' (the mean of the
            window's pixels inside the map; no parameters). Only with
            ``gle='attention'``. Default: 'gtg'.
        guide_kernel_size (int): The kernel of the guide token generator's
            depth-wise stride-2 convolution (odd; padding ``k // 2``). Only
            with ``guide='gtg'``. Default: 7.
    """

    pretrained_options = ('from_pvt_v1', )

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.1,
                 with_cls_token: bool = False,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 init_cfg: InitCfg = None,
                 with_cp: bool = False,
                 pretrain_img_size: Union[int, tuple[int, int]] = 224,
                 embed_dims: Optional[int] = None,
                 num_layers: Optional[Sequence[int]] = None,
                 num_heads: Optional[Sequence[int]] = None,
                 mlp_ratios: Optional[Sequence[int]] = None,
                 sr_ratios: Optional[Sequence[int]] = None,
                 qkv_bias: bool = True,
                 attn_drop_rate: float = 0.,
                 act_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None,
                 num_stages: int = 4,
                 patch_sizes: Sequence[int] = (4, 2, 2, 2),
                 strides: Sequence[int] = (4, 2, 2, 2),
                 paddings: Sequence[Union[int, str]] = (0, 0, 0, 0),
                 use_abs_pos_embed: bool = True,
                 norm_after_stage: bool = False,
                 use_conv_ffn: bool = False,
                 pretrained: Optional[str] = None,
                 convert_weights: bool = True,
                 spm_stages: Sequence[int] = SPM_MERGES,
                 gle: str = 'attention',
                 guide: str = 'gtg',
                 guide_kernel_size: int = DEFAULT_GUIDE_KERNEL_SIZE) -> None:
        super().__init__(init_cfg=init_cfg_of(init_cfg, pretrained))
        self.spm_stages = check_spm_stages('SPMPVT', spm_stages)
        check_variant('SPMPVT', gle, guide, guide_kernel_size)
        if not self.spm_stages and (gle, guide, guide_kernel_size) != (
                'attention', 'gtg', DEFAULT_GUIDE_KERNEL_SIZE):
            raise ValueError(f'SPMPVT: gle={gle!r}, guide={guide!r}, guide_kernel_size='
                             f'{guide_kernel_size} configure SPM, but spm_stages=() has no '
                             f'SPM merge; name the merges that are SPM in spm_stages.')
        paddings = check_paddings(paddings, self.spm_stages)
        check_fixed_args(num_stages=num_stages, patch_sizes=patch_sizes, strides=strides,
                         use_abs_pos_embed=use_abs_pos_embed,
                         norm_after_stage=norm_after_stage, use_conv_ffn=use_conv_ffn)
        self.arch_settings = arch_settings(arch, embed_dims, num_layers, num_heads,
                                           mlp_ratios, sr_ratios)
        dims = self.arch_settings['embed_dims']
        depths = self.arch_settings['depths']
        out_indices = tuple(out_indices)
        if not out_indices or any(not 0 <= i < 4 for i in out_indices):
            raise PVTArgumentError(f'SPMPVT: out_indices must be a non-empty subset '
                                   f'of (0, 1, 2, 3), got {out_indices}.')
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f'SPMPVT: frozen_stages must be in [-1, 4], got '
                             f'{frozen_stages}.')
        if with_cls_token and self.arch_settings['sr_ratios'][3] != 1:
            raise ValueError('SPMPVT: with_cls_token needs sr_ratios[3] == 1 '
                             '(the cls token cannot be spatially reduced).')
        self.pretrain_grids = pretrain_grids(pretrain_img_size)
        self.in_channels = in_channels
        self.out_indices = out_indices
        self.with_cls_token = with_cls_token
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.embed_dims = dims

        self.patch_embeds = nn.ModuleList(
            [PatchEmbed(in_channels, dims[0], norm_cfg=norm_cfg, padding=paddings[0])] +
            [StepwisePatchMerging(dims[i - 1], dims[i], gle=gle, guide=guide,
                                  guide_kernel_size=guide_kernel_size)
             if i in self.spm_stages else PatchEmbed(dims[i - 1], dims[i], 2, norm_cfg,
                                                     paddings[i])
             for i in range(1, 4)])
        num_pos = [h * w for h, w in self.pretrain_grids]
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
                         dpr[start + j], qkv_bias, attn_drop_rate, act_cfg, norm_cfg)
                for j in range(depth)))
        if with_cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dims[3]))
            self.norm = layer_norm(dims[3], norm_cfg, eps=1e-6)
        self._freeze_stages()
        # Every load of the backbone's keys (init_cfg, load_from, resume, plain
        # load_state_dict) fits dense/cls and position-embedding differences
        # and checks that the state dict is of this model.
        self._register_load_state_dict_pre_hook(self._prepare_state)

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
        check_variant_fits(own, state, prefix)
        check_shapes(own, state, prefix)
        check_depths(state, prefix, tuple(len(stage) for stage in self.stages))
        check_coverage(own, state, prefix)

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
                src = round(grid.shape[1]**0.5)
                if src * src != grid.shape[1]:
                    raise CheckpointError(f'Cannot resize {key} of {grid.shape[1]} '
                                          f'tokens to {n_grid}: it is not a square '
                                          f'grid.')
                grid = resize_pos_embed(grid, src, *self.pretrain_grids[i])
                notes.append(f'interpolated {key} to {n_grid} tokens')
            state[key] = torch.cat([cls, grid], 1) if wants_cls else grid
            if has_cls and not wants_cls:
                notes.append(f'dropped the cls entry of {key} (dense mode)')
        return notes

    def _load_backbone_state(self, state: dict, filename: str,
                             from_pvt_v1: bool = False) -> tuple[list[str], list[str]]:
        """Load a checkpoint of a layout :func:`.spm_pvt_checkpoints.detect_layout`
        knows (the load pre-hook adapts and checks it).

        ``from_pvt_v1`` (a ``Pretrained`` ``init_cfg`` key too): the
        checkpoint is PVT v1's (official or mmdet layout, see
        :func:`.spm_pvt_checkpoints.convert_pvt_v1`); every tensor SPM-PVT
        shares with it is loaded and the SPM layers keep their values from
        before the load. Without it a PVT v1 checkpoint is refused, so that
        one given by mistake for an SPM-PVT one does not leave the SPM layers
        untrained unnoticed. Default: False.
        """
        backbone, layout, left_out = pretrained_backbone(state, filename, from_pvt_v1,
                                                         self.spm_stages)
        missing, unexpected = self.load_state_dict(backbone, strict=False)
        total = len(self.state_dict())
        if layout == 'pvt_v1':
            spm = check_pvt_v1_fit(filename, missing, unexpected, self.spm_stages)
            merges = [k for k in SPM_MERGES if k not in self.spm_stages]
            print_log(f'SPMPVT: initialised from the PVT v1 checkpoint {filename}: '
                      f'{total - len(spm)} of {total} tensors from the checkpoint '
                      f'(patch embeddings of stage 1 and of merges {merges}, position '
                      f'embeddings, blocks'
                      f'{", cls token, final norm" if self.with_cls_token else ""}); '
                      f'{len(spm)} tensors of the SPM layers (merges {self.spm_stages}) at '
                      f'SPM-PVT\'s own initialisation; not used: {len(left_out)} '
                      f'checkpoint tensors (PVT\'s patch embeddings of the SPM merges, '
                      f'head)', logger='current')
            return missing, unexpected
        left = ' (left at SPMPVT\'s own initialisation)' if missing else ''
        print_log(f'SPMPVT: loaded {filename} ({layout} layout): '
                  f'{total - len(missing)} of {total} backbone tensors; missing '
                  f'keys: {", ".join(missing) or "none"}{left}; unexpected keys: '
                  f'{", ".join(unexpected) or "none"}', logger='current',
                  level=30 if missing or unexpected else 20)
        return missing, unexpected

    def _init_without_checkpoint(self, pretrained: bool) -> None:
        """The SPM reference's initialisation for every layer, position
        embeddings and cls token truncated normal (std 0.02)."""
        reference_init(self)
        for pos in self.pos_embeds:
            trunc_normal_(pos, std=.02)
        if self.with_cls_token:
            trunc_normal_(self.cls_token, std=.02)

    def _stage_depths(self) -> list[int]:
        return [len(stage) for stage in self.stages]

    def _layer_depth(self, name: str, depths: list[int]) -> Optional[int]:
        # A stage's patch and position embedding (cls token: stage 4's) at
        # the depth of the block before them; the final norm after the last.
        parts = name.split('.')
        if parts[0] in ('patch_embeds', 'pos_embeds'):
            return sum(depths[:int(parts[1])])
        if parts[0] == 'stages':
            return sum(depths[:int(parts[1])]) + int(parts[2]) + 1
        if parts[0] == 'cls_token':
            return sum(depths[:3])
        return None

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        n = max(self.frozen_stages, 1)
        frozen = [*self.patch_embeds[:n], *self.stages[:self.frozen_stages]]
        for m in frozen:
            m.eval()
        for p in [*self.pos_embeds[:n], *(p for m in frozen for p in m.parameters())]:
            p.requires_grad = False

    def _run(self, module: nn.Module, *args) -> Tensor:
        """``module(*args)``; with ``with_cp`` (while gradients are recorded)
        recomputed in the backward pass instead of keeping its activations."""
        if self.with_cp and torch.is_grad_enabled():
            return checkpointed(module, module, *args)
        return module(*args)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        outs = []
        B = x.shape[0]
        for i, (embed, blocks) in enumerate(zip(self.patch_embeds, self.stages)):
            x = self._run(embed, x)
            H, W = x.shape[-2:]
            x = x.flatten(2).transpose(1, 2)
            pos = self.pos_embeds[i]
            grid = self.pretrain_grids[i]
            if self.with_cls_token and i == 3:
                x = torch.cat([self.cls_token.expand(B, -1, -1), x], 1)
                pos = torch.cat([pos[:, :1], resize_pos_embed(pos[:, 1:], grid, H, W)], 1)
            else:
                pos = resize_pos_embed(pos, grid, H, W)
            x = self.pos_drop(x + pos)
            for block in blocks:
                x = self._run(block, x, (H, W))
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
