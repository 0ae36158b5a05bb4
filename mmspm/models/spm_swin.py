"""SPM-Swin: mmdet's Swin Transformer with Stepwise Patch Merging in place of
its patch merging between stages."""
import re
from collections import OrderedDict
from typing import Optional, Sequence

from mmdet.models.backbones.swin import SwinTransformer
from torch import Tensor

from . import swin_checkpoints
from .spm_plugin import SPMPluginMixin
from .swin_capture import remove_size_branches


class SwinPluginMixin(SPMPluginMixin):
    """What mmdet's and mmpretrain's SPM-Swin share.

    SPM in place of the ``PatchMerging`` at the end of stages 1-3
    (``stages.{i}.downsample``, C -> 2C channels, ``ceil(H/2) x ceil(W/2)``
    tokens; merge ``i + 1`` as the paper counts them), at the merges
    ``spm_stages`` names, and checkpoints of any Swin layout
    (:mod:`.swin_checkpoints`).
    """

    spm_key = re.compile(r'^stages\.(\d+)\.downsample\.')
    merge_offset = 1
    # Output norms: mmdet's norm{i} after each output stage, mmpretrain's
    # after out_indices (norm3 in classifiers).
    optional_key = re.compile(r'^norm\d\.')
    recomputed_key = swin_checkpoints.RECOMPUTED_KEY
    _block_key = re.compile(r'^stages\.(\d+)\.(?:blocks\.(\d+)|downsample)\.')

    def _use_spm(self, with_cp: bool, spm_stages: Optional[Sequence[int]]) -> None:
        """Put SPM where the upstream constructor put ``PatchMerging`` at the
        merges ``spm_stages`` names (merge ``i + 1`` ends stage ``i``), then
        freeze again what ``frozen_stages`` names (the SPM layers are new)."""
        merges = [i for i, stage in enumerate(self.stages) if stage.downsample is not None]
        self._check_spm_stages(spm_stages, len(merges))
        for i, stage in enumerate(self.stages):
            merge = stage.downsample
            if merge is not None and i + 1 in self.spm_stages:
                stage.downsample = self._spm_for(merge.sampler.stride, merge.in_channels,
                                                 merge.out_channels, with_cp)
        self._freeze_stages()

    def _to_model_layout(self, state: 'OrderedDict[str, Tensor]') -> 'OrderedDict[str, Tensor]':
        if swin_checkpoints.is_authors_layout(state):
            return swin_checkpoints.from_authors_layout(state, len(self.stages))
        return swin_checkpoints.final_norm_as_output_norm(state, len(self.stages))

    def _fit_to_model(self, own: dict, state: 'OrderedDict[str, Tensor]') -> list[str]:
        return swin_checkpoints.fit_bias_tables(own, state)

    def _stage_depths(self) -> list[int]:
        return [len(stage.blocks) for stage in self.stages]

    def _layer_depth(self, name: str, depths: list[int]) -> Optional[int]:
        if name.startswith(('patch_embed.', 'absolute_pos_embed')):
            return 0
        match = self._block_key.match(name)
        if match is None:
            return None
        stage, block = int(match[1]), match[2]
        if block is None:  # the downsampling at the end of the stage
            return sum(depths[:stage + 1])
        return sum(depths[:stage]) + int(block) + 1


class SPMSwinTransformer(SwinPluginMixin, SwinTransformer):
    """mmdet's ``SwinTransformer`` whose ``PatchMerging`` at the end of stages 1-3 is SPM.

    Same arguments, defaults and parameter names as mmdet's
    ``SwinTransformer`` (Swin-T/S/B through ``embed_dims``, ``depths`` and
    ``num_heads``); the SPM layers are under the same names
    (``stages.{i}.downsample``). The backbone of mmdet's and mmseg's Swin
    configs with only ``type`` changed.

    Dense mode (``out_indices=(0, 1, 2, 3)``): four normed NCHW maps, strides
    4/8/16/32.

    Its patch-embedding padding and window attention are mmdet's computed
    without Python branches on the input size (:mod:`.swin_capture`), so a
    captured graph holds for every size.

    Args:
        with_cp (bool): mmdet's; also checkpoints the SPM layers.
            Default: False.
        norm_eval (bool): Keep the BatchNorms (SPM's) in eval mode while
            training. Default: False.
        spm_stages (Sequence[int] | None): The merges that are SPM, numbered
            as the paper's ablation counts them: merge ``k`` ends stage ``k``
            (1-based; ``stages.{k-1}.downsample``). The others stay mmdet's
            ``PatchMerging`` (``reduction``, ``norm``), filled by Swin
            checkpoints. Default: None, all of them.
        **kwargs: mmdet's ``SwinTransformer`` arguments. ``frozen_stages``
            (mmdet's: ``i`` freezes the patch embedding and stages 1..i,
            their SPM included) holds from construction on. ``init_cfg``: a
            dict or list as mmengine documents (:meth:`init_weights`); its
            ``Pretrained`` checkpoint may be an mmdet, mmseg or mmpretrain
            Swin checkpoint (bare, or a detector's, segmentor's or
            classifier's), one in the Swin authors' layout (also as
            ``{'model': ...}``), or an SPM-Swin one of either codebase
            (:meth:`load_pretrained`); ``attn_mask`` and
            ``relative_position_index`` are recomputed, and bias tables of
            another window size resized.
    """

    def __init__(self, *, with_cp: bool = False, norm_eval: bool = False,
                 spm_stages: Optional[Sequence[int]] = None, **kwargs) -> None:
        super().__init__(with_cp=with_cp, **kwargs)
        self.norm_eval = norm_eval
        self._use_spm(with_cp, spm_stages)
        remove_size_branches(self)
