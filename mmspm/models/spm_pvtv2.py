"""SPM-PVTv2: mmdet's PVTv2 with Stepwise Patch Merging in place of the
overlapping patch embeddings of stages 2-4."""
import re
from collections import OrderedDict

from mmdet.models.backbones.pvt import PyramidVisionTransformerV2, pvt_convert
from torch import Tensor

from .spm_plugin import SPMPluginMixin


class SPMPVTv2(SPMPluginMixin, PyramidVisionTransformerV2):
    """mmdet's ``PyramidVisionTransformerV2`` (same arguments, defaults and
    parameter names; B0-B5 through ``embed_dims`` and ``num_layers`` as in
    mmdet's configs) whose stage 2-4 overlapping patch embeddings are SPM,
    under the same names (``layers.{1,2,3}.0``).

    Dense mode (``out_indices=(0, 1, 2, 3)``): four NCHW maps, strides
    4/8/16/32. As an mmpretrain classifier backbone: ``out_indices=(3,)``
    with ``GlobalAveragePooling`` and ``LinearClsHead``.

    ``init_cfg=dict(type='Pretrained', checkpoint=...)`` takes the PVTv2
    authors' checkpoints (``pvt_v2_b1.pth``, read as mmdet's ``pvt_convert``
    reads them), mmdet-layout ones (bare or with ``backbone.`` keys) or
    SPM-PVTv2 ones (:meth:`load_pretrained`).
    """

    spm_key = re.compile(r'^layers\.[1-9]\d*\.0\.')

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for layer in self.layers[1:]:
            embed = layer[0].projection
            layer[0] = self._spm_for(embed.stride, embed.in_channels, embed.out_channels)

    def _to_model_layout(self, state: 'OrderedDict[str, Tensor]') -> 'OrderedDict[str, Tensor]':
        if any(k.startswith('patch_embed1.') for k in state):
            return pvt_convert(state)
        return state
