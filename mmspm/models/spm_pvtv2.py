"""SPM-PVTv2: mmdet's PVTv2 with Stepwise Patch Merging in place of the
overlapping patch embeddings of stages 2-4 (or of those ``spm_stages`` names)."""
import re
from collections import OrderedDict
from typing import Optional, Sequence

from mmdet.models.backbones.pvt import PyramidVisionTransformerV2, pvt_convert
from mmdet.models.layers import nlc_to_nchw
from torch import Tensor

from .checkpointing import checkpointed
from .spm_plugin import SPMPluginMixin


class SPMPVTv2(SPMPluginMixin, PyramidVisionTransformerV2):
    """mmdet's ``PyramidVisionTransformerV2`` whose stage 2-4 patch embeddings are SPM.

    Same arguments, defaults and parameter names as mmdet's
    ``PyramidVisionTransformerV2`` (B0-B5 through ``embed_dims`` and
    ``num_layers`` as in mmdet's configs); its stage 2-4 overlapping patch
    embeddings are SPM, under the same names (``layers.{1,2,3}.0``). The
    backbone of mmdet's PVTv2 configs with only ``type`` changed.

    Dense mode (``out_indices=(0, 1, 2, 3)``): four NCHW maps, strides
    4/8/16/32. As an mmpretrain classifier backbone: ``out_indices=(3,)``
    with ``GlobalAveragePooling`` and ``LinearClsHead``.

    Args:
        with_cp (bool): Recompute the activations of the encoder layers and
            the SPM layers in the backward pass instead of keeping them
            (``torch.utils.checkpoint``). Default: False.
        frozen_stages (int): ``0`` freezes the first patch embedding, ``i >
            0`` stages 1..i whole (``layers[:i]``: patch embedding or SPM,
            encoder layers, norm); no gradients, eval mode, from construction
            on. Default: -1 (none).
        norm_eval (bool): Keep the BatchNorms (SPM's) in eval mode while
            training. Default: False.
        spm_stages (Sequence[int] | None): The merges that are SPM, numbered
            as the paper's ablation counts them: merge ``k`` leads into stage
            ``k + 1`` (``layers.{k}.0``). The others stay mmdet's overlapping
            patch embedding (``projection``, ``norm``), filled by PVTv2
            checkpoints. Default: None, all of them.
        **kwargs: mmdet's ``PyramidVisionTransformerV2`` arguments.
            ``init_cfg``: a dict or list as mmengine documents
            (:meth:`init_weights`); its ``Pretrained`` checkpoint may be a
            PVTv2 authors' release (``pvt_v2_b0.pth`` .. ``pvt_v2_b5.pth``,
            read as mmdet's ``pvt_convert`` reads them), an mmdet-layout one
            (bare or a detector's) or an SPM-PVTv2 one
            (:meth:`load_pretrained`).
    """

    spm_key = re.compile(r'^layers\.([1-9]\d*)\.0\.')
    _block_key = re.compile(r'^layers\.(\d+)\.(?:(0)|1\.(\d+)|2)\.')

    def __init__(self, *, with_cp: bool = False, frozen_stages: int = -1,
                 norm_eval: bool = False, spm_stages: Optional[Sequence[int]] = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.with_cp = with_cp
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self._check_spm_stages(spm_stages, len(self.layers) - 1)
        for k in self.spm_stages:
            layer = self.layers[k]
            embed = layer[0].projection
            layer[0] = self._spm_for(embed.stride, embed.in_channels, embed.out_channels,
                                     with_cp)
        self._freeze_stages()

    def _freeze_stages(self) -> None:
        frozen = [self.layers[0][0]] if self.frozen_stages == 0 else \
            list(self.layers[:max(self.frozen_stages, 0)])
        for m in frozen:
            m.eval()
            for param in m.parameters():
                param.requires_grad = False

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        # mmdet's forward, with the encoder layers checkpointed under with_cp
        # (mmdet's PVT has no with_cp; the SPM layers checkpoint themselves).
        outs = []
        for i, (embed, blocks, norm) in enumerate(self.layers):
            x, hw_shape = embed(x)
            for block in blocks:
                if self.with_cp and x.requires_grad:
                    x = checkpointed(block, block, x, hw_shape)
                else:
                    x = block(x, hw_shape)
            x = nlc_to_nchw(norm(x), hw_shape)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def _to_model_layout(self, state: 'OrderedDict[str, Tensor]') -> 'OrderedDict[str, Tensor]':
        if any(k.startswith('patch_embed1.') for k in state):
            return pvt_convert(state)
        return state

    def _stage_depths(self) -> list[int]:
        return [len(layer[1]) for layer in self.layers]

    def _layer_depth(self, name: str, depths: list[int]) -> Optional[int]:
        match = self._block_key.match(name)
        if match is None:
            return None
        stage = int(match[1])
        if match[2] is not None:  # patch embedding (stage 0) or SPM into the stage
            return sum(depths[:stage])
        if match[3] is not None:
            return sum(depths[:stage]) + int(match[3]) + 1
        return sum(depths[:stage + 1])  # the norm after the stage
