"""SPM-Swin for mmpretrain: mmpretrain's Swin Transformer with Stepwise Patch
Merging in place of its patch merging between stages. Needs mmpretrain
(``pip install mmspm[cls]``); in mmpretrain's registry it is
``SPMSwinTransformer``, as mmpretrain's Swin is ``SwinTransformer`` there and
mmdet's (:class:`mmspm.models.spm_swin.SPMSwinTransformer`'s base) in
mmdet."""
import copy
from typing import Optional, Sequence, Union

from mmpretrain.models.backbones import SwinTransformer

from .spm_swin import SwinPluginMixin


class SPMSwinTransformer(SwinPluginMixin, SwinTransformer):
    """mmpretrain's ``SwinTransformer`` whose ``PatchMerging`` at the end of stages 1-3 is SPM.

    Same arguments, defaults and parameter names as mmpretrain's
    ``SwinTransformer``; the SPM layers are under the same names
    (``stages.{i}.downsample``). The backbone of mmpretrain's
    ``configs/swin_transformer`` with only ``type`` changed.

    Its parameter names are those of mmdet's SPM-Swin
    (:class:`mmspm.models.spm_swin.SPMSwinTransformer`),
    so a classifier trained with it initialises the SPM-Swin of detection and
    segmentation configs, SPM layers included.

    Args:
        arch (str | dict): ``'tiny'``/``'t'``, ``'small'``/``'s'``,
            ``'base'``/``'b'``, ``'large'``/``'l'`` or a dict of
            ``embed_dims``, ``depths`` and ``num_heads``. Default: 'tiny'.
        with_cp (bool): mmpretrain's; also checkpoints the SPM layers.
            Default: False.
        spm_stages (Sequence[int] | None): The merges that are SPM, as in
            :class:`mmspm.models.spm_swin.SPMSwinTransformer` (the others
            stay mmpretrain's ``PatchMerging``). Default: None, all of them.
        **kwargs: mmpretrain's ``SwinTransformer`` arguments.
            ``frozen_stages`` (mmpretrain's: ``i`` freezes the patch
            embedding and stages 0..i, their SPM included) holds from
            construction on; ``norm_eval`` covers SPM's BatchNorms.
            ``init_cfg``: a dict or list as mmengine documents
            (:meth:`init_weights`); its ``Pretrained`` checkpoint may be an
            mmpretrain, mmdet or mmseg Swin checkpoint, one in the Swin
            authors' layout or an SPM-Swin one (:meth:`load_pretrained`);
            ``attn_mask`` and ``relative_position_index`` are recomputed, and
            bias tables of another window size resized.
    """

    def __init__(self, arch: Union[str, dict] = 'tiny', *, with_cp: bool = False,
                 spm_stages: Optional[Sequence[int]] = None, **kwargs) -> None:
        super().__init__(arch=arch, with_cp=with_cp, **kwargs)
        self._use_spm(with_cp, spm_stages)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        # mmpretrain upgrades the state of its older Swin versions (< 2: the
        # last norm was `norm.`; < 3: `attn_mask` was saved) only when
        # `self.__class__ is SwinTransformer`: the same here, through its code.
        version = local_metadata.get('version', None)
        if version is None or version < 3:
            upgraded = copy.copy(self)
            upgraded.__class__ = SwinTransformer
            # Its own method, not the subclass's: it renames in place, then
            # loads this module's own tensors (children load themselves).
            return SwinTransformer._load_from_state_dict(upgraded, state_dict, prefix,
                                                         local_metadata, *args, **kwargs)
        return super()._load_from_state_dict(state_dict, prefix, local_metadata, *args,
                                             **kwargs)
