"""SPM-Swin: mmdet's Swin Transformer with Stepwise Patch Merging in place of
its patch merging between stages."""
import re
from collections import OrderedDict

from mmdet.models.backbones.swin import SwinTransformer, swin_converter
from torch import Tensor

from .spm_plugin import SPMPluginMixin


class SPMSwinTransformer(SPMPluginMixin, SwinTransformer):
    """mmdet's ``SwinTransformer`` (same arguments, defaults and parameter
    names; Swin-T/S/B through ``embed_dims``, ``depths`` and ``num_heads``)
    whose ``PatchMerging`` at the end of stages 1-3 is SPM: C -> 2C channels,
    ``ceil(H/2) x ceil(W/2)`` tokens, under the same names
    (``stages.{i}.downsample``).

    Dense mode (``out_indices=(0, 1, 2, 3)``): four normed NCHW maps, strides
    4/8/16/32. As an mmpretrain classifier backbone: ``out_indices=(3,)`` with
    ``GlobalAveragePooling`` and ``LinearClsHead``.

    ``init_cfg=dict(type='Pretrained', checkpoint=...)`` takes an mmdet or
    mmpretrain Swin checkpoint (bare, or with ``backbone.`` keys), one in the
    Swin authors' layout, or an SPM-Swin one (:meth:`load_pretrained`).
    """

    spm_key = re.compile(r'^stages\.\d+\.downsample\.')
    # mmdet's norm{i} after each output stage; the authors' final `norm`.
    optional_key = re.compile(r'^norm\d?\.')

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for stage in self.stages:
            merge = stage.downsample
            if merge is not None:
                stage.downsample = self._spm_for(merge.sampler.stride, merge.in_channels,
                                                 merge.out_channels)

    def _to_model_layout(self, state: 'OrderedDict[str, Tensor]') -> 'OrderedDict[str, Tensor]':
        if 'patch_embed.proj.weight' not in state:
            return state
        # The Swin authors' layout, as mmdet converts it; their final norm is
        # the norm of the last stage's output.
        last = len(self.stages) - 1
        return OrderedDict(
            (re.sub(r'^norm\.', f'norm{last}.', k[len('backbone.'):]), v)
            for k, v in swin_converter(state).items())
