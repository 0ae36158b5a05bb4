"""What SPM-Swin and SPM-PVTv2 share: an upstream backbone whose downsampling
layers are :class:`TokenStepwisePatchMerging`, initialised by the upstream
scheme with the SPM layers at the SPM reference's, and loaded from upstream
checkpoints with only the SPM layers left at init.
"""
import re
from collections import OrderedDict
from typing import ClassVar, Optional, Sequence

from mmengine.logging import print_log
from torch import Tensor

from ..safe_load import CheckpointError, backbone_of, check_shapes, load_checkpoint, unwrap
from .spm import TokenStepwisePatchMerging, reference_init


class SPMPluginMixin:
    """Put first among the bases of an upstream backbone's subclass.

    Subclasses set ``spm_key``, the state-dict keys of the slots the SPM
    layers took (the upstream downsampling layers had the same prefixes), and
    ``optional_key``, keys that upstream checkpoints may hold or lack (output
    norms); they convert an upstream layout in :meth:`_to_model_layout`.
    """

    spm_key: ClassVar[re.Pattern]
    optional_key: ClassVar[Optional[re.Pattern]] = None

    def _spm_for(self, stride: Sequence[int], in_channels: int,
                 out_channels: int) -> TokenStepwisePatchMerging:
        """The SPM layer for an upstream downsampling layer of this ``stride``
        (as built from the upstream ``strides``), which must halve as SPM does."""
        if tuple(stride) != (2, 2):
            raise ValueError(f'{type(self).__name__}: SPM halves the resolution, '
                             f'so strides[1:] must be 2; a layer it would replace '
                             f'has stride {tuple(stride)}.')
        return TokenStepwisePatchMerging(in_channels, out_channels)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        # mmpretrain's necks take tuples only; the upstream forward returns a list.
        return tuple(super().forward(x))

    def train(self, mode: bool = True):
        # mmdet's SwinTransformer.train returns None; nn.Module's returns self.
        super().train(mode)
        return self

    def _to_model_layout(self, state: 'OrderedDict[str, Tensor]') -> 'OrderedDict[str, Tensor]':
        """An upstream checkpoint's backbone state dict in this model's keys."""
        return state

    def init_weights(self) -> None:
        """The upstream initialisation from scratch, or the ``Pretrained``
        checkpoint of ``init_cfg`` (:meth:`load_pretrained`); the SPM layers
        first get the SPM reference's initialisation either way."""
        pretrained = (self.init_cfg or {}).get('type') == 'Pretrained'
        if not pretrained:
            super().init_weights()
        for m in self.modules():
            if isinstance(m, TokenStepwisePatchMerging):
                reference_init(m)
        if pretrained:
            self.load_pretrained(self.init_cfg['checkpoint'])

    def load_pretrained(self, filename: str) -> list[str]:
        """Load a checkpoint of the upstream model (or of this one): bare, with
        ``backbone.`` keys (detector, segmentor, classifier) or in the upstream
        authors' layout. Every tensor but the SPM layers' must be in it, with
        this model's shape; the SPM layers not in it keep their values from
        before the load. Returns (and logs) the keys left out."""
        name = type(self).__name__
        state = self._to_model_layout(backbone_of(unwrap(load_checkpoint(filename))))
        own = self.state_dict()
        check_shapes(own, state)

        def optional(k: str) -> bool:
            return bool(self.optional_key and self.optional_key.match(k))

        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        spm = [k for k in missing if self.spm_key.match(k)]
        absent = [k for k in missing if k not in spm and not optional(k)]
        extra = [k for k in unexpected if not self.spm_key.match(k) and not optional(k)]
        if absent or extra:
            raise CheckpointError(
                f'{filename!r} does not fit {name} with these arguments: '
                f'tensors of the model missing from it: {absent[:8]}'
                f'{" ..." if len(absent) > 8 else ""}; tensors with no place in '
                f'the model: {extra[:8]}{" ..." if len(extra) > 8 else ""}. It '
                f'is a checkpoint of another size or model (check depths, '
                f'embed_dims / num_layers against the checkpoint).')
        self.load_state_dict(state, strict=False)
        replaced = [k for k in unexpected if self.spm_key.match(k)]
        print_log(
            f'{name}: loaded {filename}: {len(own) - len(missing)} of {len(own)} '
            f'tensors; SPM layers left at the SPM reference\'s initialisation: '
            f'{len(spm)} tensors{": " + ", ".join(spm) if spm else ""}; not '
            f'used: {len(replaced)} tensors of the upstream downsampling layers '
            f'SPM replaces; output norms not in the checkpoint (at init): '
            f'{", ".join(k for k in missing if optional(k)) or "none"}',
            logger='current', level=30 if spm else 20)
        return missing
