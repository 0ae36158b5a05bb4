"""What SPM-Swin and SPM-PVTv2 share: an upstream backbone whose downsampling
layers (all, or those ``spm_stages`` names) are
:class:`TokenStepwisePatchMerging`, initialised by the upstream scheme with
the SPM layers at the SPM reference's (or as ``init_cfg`` says), and loaded
from upstream checkpoints with only the SPM layers left at init.
"""
import re
from collections import OrderedDict
from typing import ClassVar, Optional, Sequence, Union

from mmengine.logging import print_log
from mmengine.model import initialize
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from ..safe_load import CheckpointError, backbone_of, check_shapes, load_checkpoint, unwrap
from .checkpointing import checkpointed
from .spm import TokenStepwisePatchMerging, check_spm_stages, reference_init

InitCfg = Union[dict, Sequence[dict], None]


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


def init_cfg_list(init_cfg: InitCfg, owner: str) -> list[dict]:
    """``init_cfg`` as mmengine reads it, as a list.

    Args:
        init_cfg (dict | Sequence[dict] | None): None, a dict or a list of
            dicts, each with a ``type``; anything else is refused
            (``TypeError``), naming the form expected.
        owner (str): The name of the caller, used in the error message.

    Returns:
        list[dict]: The entries of ``init_cfg``.
    """
    cfgs = [] if init_cfg is None else [init_cfg] if isinstance(init_cfg, dict) else init_cfg
    if not isinstance(cfgs, (list, tuple)) or not all(
            isinstance(c, dict) and 'type' in c for c in cfgs):
        raise TypeError(f'{owner}: init_cfg must be None, a dict with a `type` or a '
                        f'list of such dicts (as mmengine documents), got {init_cfg!r}.')
    return list(cfgs)


def is_pretrained(cfg: dict) -> bool:
    """Whether an ``init_cfg`` entry loads a checkpoint.

    Args:
        cfg (dict): The entry.

    Returns:
        bool: True for the types 'Pretrained' and 'PretrainedInit'.
    """
    return cfg['type'] in ('Pretrained', 'PretrainedInit')


def with_prefix(state: 'OrderedDict[str, Tensor]', prefix: str,
                filename: str) -> 'OrderedDict[str, Tensor]':
    """The entries of ``state`` under ``prefix``, prefix removed.

    Args:
        state (OrderedDict[str, Tensor]): The state dict.
        prefix (str): The prefix; a trailing dot is added as mmengine's
            ``PretrainedInit`` adds it.
        filename (str): The checkpoint's name, used in the error message.

    Returns:
        OrderedDict[str, Tensor]: The entries under ``prefix``.

    Raises:
        CheckpointError: If ``state`` has no tensors under ``prefix``.
    """
    prefix = prefix if prefix.endswith('.') else prefix + '.'
    sub = OrderedDict((k[len(prefix):], v) for k, v in state.items() if k.startswith(prefix))
    if not sub:
        raise CheckpointError(f'{filename!r} has no tensors under the prefix {prefix!r} of '
                              f'init_cfg; its keys start with '
                              f'{sorted({k.split(".")[0] + "." for k in state})[:8]}.')
    return sub


class SPMPluginMixin:
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

    def train(self, mode: bool = True):
        """Train mode but for the frozen stages and, with ``norm_eval``, the BatchNorms.

        The frozen stages are those ``frozen_stages`` names; the BatchNorms
        are SPM's.

        Args:
            mode (bool): Train mode if True, else eval mode. Default: True.

        Returns:
            The module itself.
        """
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        # mmdet's and mmpretrain's SwinTransformer.train return None.
        return self

    def _to_model_layout(self, state: 'OrderedDict[str, Tensor]') -> 'OrderedDict[str, Tensor]':
        """An upstream checkpoint's backbone state dict in this model's keys."""
        return state

    def _fit_to_model(self, own: dict, state: 'OrderedDict[str, Tensor]') -> list[str]:
        """Adapt, in place, checkpoint tensors made for another input or
        window size to the model's (its state dict ``own``); the keys changed."""
        return []

    def _recomputed(self, key: str) -> bool:
        return bool(self.recomputed_key and self.recomputed_key.search(key))

    def _init_from_scratch(self) -> None:
        """The upstream backbone's initialisation without a checkpoint."""
        init_cfg, self.init_cfg = self.init_cfg, None
        try:
            super().init_weights()
        finally:
            self.init_cfg = init_cfg

    def init_weights(self) -> None:
        """Initialise as ``init_cfg`` says, as mmengine documents it.

        ``init_cfg`` is a dict or a list of dicts: without a ``Pretrained``
        entry the upstream scheme and the SPM reference's for the SPM layers,
        then every other entry (Kaiming, TruncNormal, Constant, ...) on the
        layers it names, then the ``Pretrained`` checkpoint (with its
        ``prefix``) over all of them (:meth:`load_pretrained`). SPM layers
        that neither names keep the SPM reference's initialisation.

        Raises:
            ValueError: If ``init_cfg`` names more than one ``Pretrained``
                checkpoint.
        """
        cfgs = init_cfg_list(self.init_cfg, type(self).__name__)
        pretrained = [c for c in cfgs if is_pretrained(c)]
        if len(pretrained) > 1:
            raise ValueError(f'{type(self).__name__}: init_cfg names {len(pretrained)} '
                             f'Pretrained checkpoints; give one.')
        if not pretrained:
            self._init_from_scratch()
        for m in self.modules():
            if isinstance(m, TokenStepwisePatchMerging):
                reference_init(m)
        others = [c for c in cfgs if not is_pretrained(c)]
        if others:
            initialize(self, others)
        if pretrained:
            self.load_pretrained(pretrained[0]['checkpoint'], pretrained[0].get('prefix'))
        self._is_init = True

    def load_pretrained(self, filename: str, prefix: Optional[str] = None) -> list[str]:
        """Load a checkpoint of the upstream model (or of this one).

        The checkpoint is bare, with ``backbone.`` keys (detector, segmentor,
        classifier), under ``prefix`` if given, or in the upstream authors'
        layout. Every tensor but the SPM layers' must be in it, with this
        model's shape, except buffers the model recomputes (skipped, also when
        present); tables of another window size are resized
        (:meth:`_fit_to_model`). The SPM layers not in it keep their values
        from before the load. The keys left out are logged too.

        Args:
            filename (str): The checkpoint.
            prefix (str | None): If given, only the checkpoint's tensors under
                ``prefix`` (removed) are loaded. Default: None.

        Returns:
            list[str]: The keys left out.

        Raises:
            CheckpointError: If the checkpoint does not fit the model.
        """
        name = type(self).__name__
        state = unwrap(load_checkpoint(filename))
        state = with_prefix(state, prefix, filename) if prefix else backbone_of(state)
        state = self._to_model_layout(state)
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
        return missing

    def _stage_depths(self) -> list[int]:
        """The number of blocks of each stage."""
        raise NotImplementedError

    def _layer_depth(self, name: str, depths: list[int]) -> Optional[int]:
        """The layer-wise depth of parameter ``name`` (0: the stem, block
        ``j`` of stage ``i``: ``sum(depths[:i]) + j + 1``); None for what
        follows the last block (output norms)."""
        raise NotImplementedError

    def get_layer_depth(self, param_name: str, prefix: str = '') -> tuple[int, int]:
        """The layer-wise depth of a parameter and the number of depths.

        For mmpretrain's ``LearningRateDecayOptimWrapperConstructor``: as
        mmpretrain's ``SwinTransformer.get_layer_depth``, the stem first (0),
        then one depth per block, a downsampling layer (SPM) at the depth of
        the block before it, and the rest (output norms; names outside
        ``prefix``, as the head) at ``num_layers - 1``.

        Args:
            param_name (str): The name of the parameter.
            prefix (str): The prefix of the backbone's parameter names.
                Default: ''.

        Returns:
            tuple[int, int]: The layer depth of the parameter and
            ``num_layers``.
        """
        depths = self._stage_depths()
        num_layers = sum(depths) + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        depth = self._layer_depth(param_name[len(prefix):], depths)
        return (num_layers - 1 if depth is None else depth), num_layers
