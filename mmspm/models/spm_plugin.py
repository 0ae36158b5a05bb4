"""What SPM-Swin and SPM-PVTv2 share: an upstream backbone whose downsampling
layers (all, or those ``spm_stages`` names) are
:class:`TokenStepwisePatchMerging`, initialised by the upstream scheme with
the SPM layers at the SPM reference's (or as ``init_cfg`` says), and loaded
from upstream checkpoints with only the SPM layers left at init.
"""
import re
from collections import OrderedDict
from typing import ClassVar, Optional, Sequence

from mmengine.logging import print_log
from torch import Tensor

from ..safe_load import CheckpointError, backbone_of, check_shapes
from .checkpointing import checkpointed
from .spm import TokenStepwisePatchMerging, reference_init
from .spm_variants import check_spm_stages
from .spm_backbone import SPMBackbone


class CheckpointedSPM(TokenStepwisePatchMerging):
    """:class:`TokenStepwisePatchMerging` that can recompute its activations.

    With the attribute ``with_cp = True`` (default False) it recomputes its
    activations in the backward pass instead of keeping them
    (``torch.utils.checkpoint``), as the upstream blocks do with their
    ``with_cp``. It takes the arguments of :class:`TokenStepwisePatchMerging`.
    """

    with_cp: bool = False

    def forward(self, x: Tensor,
                hw_shape: Optional[Sequence[int]] = None) -> tuple[Tensor, tuple[int, int]]:
        if self.with_cp and x.requires_grad:
            return checkpointed(self, super().forward, x, hw_shape)
        return super().forward(x, hw_shape)


class SPMPluginMixin(SPMBackbone):
    """Put first among the bases of an upstream backbone's subclass.

    Subclasses set ``spm_key``, the state-dict keys of the slots of the
    downsampling layers (SPM or upstream ones, under the same prefixes), its
    group 1 the slot's number, which is the merge's number (1 for the first
    downsampling, as the paper counts them) less ``merge_offset``;
    ``optional_key``, keys that upstream checkpoints may hold or lack (output
    norms), and ``recomputed_key``, buffers the model computes itself and
    never loads; they build the SPM layers with :meth:`_spm_for`, convert an
    upstream layout in :meth:`_to_model_layout` and give the layer-wise depth
    of their parameters in :meth:`_layer_depth`. They have ``_freeze_stages``
    (``frozen_stages``), ``norm_eval`` and ``with_cp`` as mmdet's backbones
    have them.
    """

    spm_key: ClassVar[re.Pattern]
    merge_offset: ClassVar[int] = 0
    optional_key: ClassVar[Optional[re.Pattern]] = None
    recomputed_key: ClassVar[Optional[re.Pattern]] = None
    norm_eval: bool
    spm_stages: tuple[int, ...]

    def _check_spm_stages(self, spm_stages: Optional[Sequence[int]],
                          num_merges: int) -> tuple[int, ...]:
        """Keep ``spm_stages`` (the merges, 1..``num_merges``, that become SPM;
        None: all; the others stay the upstream downsampling, with its
        parameter names)."""
        self.spm_stages = (tuple(range(1, num_merges + 1)) if spm_stages is None else
                           check_spm_stages(type(self).__name__, spm_stages, num_merges))
        return self.spm_stages

    def _is_spm_key(self, key: str) -> bool:
        """Whether ``key`` is in the slot of a merge that is SPM in this model."""
        match = self.spm_key.match(key)
        return match is not None and int(match[1]) + self.merge_offset in self.spm_stages

    def _spm_for(self, stride: Sequence[int], in_channels: int, out_channels: int,
                 with_cp: bool) -> CheckpointedSPM:
        """The SPM layer for an upstream downsampling layer of this ``stride``
        (as built from the upstream ``strides``), which must halve as SPM does."""
        if tuple(stride) != (2, 2):
            raise ValueError(f'{type(self).__name__}: SPM halves the resolution, '
                             f'so strides[1:] must be 2; a layer it would replace '
                             f'has stride {tuple(stride)}.')
        spm = CheckpointedSPM(in_channels, out_channels)
        spm.with_cp = with_cp
        return spm

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        # mmpretrain's necks take tuples only; mmdet's forward returns a list.
        return tuple(super().forward(x))

    def _to_model_layout(self, state: 'OrderedDict[str, Tensor]') -> 'OrderedDict[str, Tensor]':
        """An upstream checkpoint's backbone state dict in this model's keys."""
        return state

    def _fit_to_model(self, own: dict, state: 'OrderedDict[str, Tensor]') -> list[str]:
        """Adapt, in place, checkpoint tensors made for another input or
        window size to the model's (its state dict ``own``); the keys changed."""
        return []

    def _recomputed(self, key: str) -> bool:
        return bool(self.recomputed_key and self.recomputed_key.search(key))

    def _init_without_checkpoint(self, pretrained: bool) -> None:
        """Without a checkpoint, the upstream backbone's initialisation; the
        SPM layers at the SPM reference's in any case."""
        if not pretrained:
            init_cfg, self.init_cfg = self.init_cfg, None
            try:
                # The upstream backbone's own (SPMBackbone's is the caller).
                super(SPMBackbone, self).init_weights()
            finally:
                self.init_cfg = init_cfg
        for m in self.modules():
            if isinstance(m, TokenStepwisePatchMerging):
                reference_init(m)

    def _load_backbone_state(self, state: 'OrderedDict[str, Tensor]',
                             filename: str) -> tuple[list[str], list[str]]:
        """Load the upstream model's (or this one's) tensors.

        The state dict is bare or a whole model's (``backbone.`` keys:
        detector, segmentor, classifier), in this layout or the upstream
        authors'. Every tensor but the SPM layers' must be in it, with this
        model's shape, except buffers the model recomputes (skipped, also when
        present); tables of another window size are resized
        (:meth:`_fit_to_model`). The SPM layers not in it keep their values
        from before the load.
        """
        name = type(self).__name__
        state = self._to_model_layout(backbone_of(state))
        skipped = [k for k in state if self._recomputed(k)]
        for k in skipped:
            del state[k]
        own = {k: v for k, v in self.state_dict().items() if not self._recomputed(k)}
        resized = self._fit_to_model(own, state)
        check_shapes(own, state)

        def optional(k: str) -> bool:
            return bool(self.optional_key and self.optional_key.match(k))

        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        spm = [k for k in missing if self._is_spm_key(k)]
        absent = [k for k in missing if k not in spm and not optional(k)]
        extra = [k for k in unexpected if not self._is_spm_key(k) and not optional(k)]
        if absent or extra:
            merges = sorted({int(m[1]) + self.merge_offset for m in map(
                self.spm_key.match, absent + extra) if m})
            hint = (f' The misfits are in the downsampling layers of merge(s) {merges}: the '
                    f'model has SPM at spm_stages={self.spm_stages} and the upstream '
                    f'downsampling elsewhere; a checkpoint of another spm_stages does not '
                    f'fit (build the model with its spm_stages).' if merges else '')
            raise CheckpointError(
                f'{filename!r} does not fit {name} with these arguments: '
                f'tensors of the model missing from it: {absent[:8]}'
                f'{" ..." if len(absent) > 8 else ""}; tensors with no place in '
                f'the model: {extra[:8]}{" ..." if len(extra) > 8 else ""}. It '
                f'is a checkpoint of another size or model (check depths, '
                f'embed_dims / num_layers against the checkpoint).{hint}')
        self.load_state_dict(state, strict=False)
        replaced = [k for k in unexpected if self._is_spm_key(k)]
        print_log(
            f'{name}: loaded {filename}: {len(own) - len(missing)} of {len(own)} '
            f'tensors; SPM layers left at init: '
            f'{len(spm)} tensors{": " + ", ".join(spm) if spm else ""}; not '
            f'used: {len(replaced)} tensors of the upstream downsampling layers '
            f'SPM replaces; output norms not in the checkpoint (at init): '
            f'{", ".join(k for k in missing if optional(k)) or "none"}; buffers '
            f'the model recomputes, skipped: {", ".join(skipped) or "none"}; '
            f'resized to the model\'s window size: {", ".join(resized) or "none"}',
            logger='current', level=30 if spm else 20)
        return missing, unexpected
