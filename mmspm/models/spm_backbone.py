"""What every SPM backbone does as an OpenMMLab backbone (:class:`SPMBackbone`):
the ``init_cfg`` order, ``train()`` with ``frozen_stages`` and
``norm_eval``, loading pretrained files, and layer-wise depths; what a family
adds is its initialisation, its checkpoint layouts and its depths."""
from typing import ClassVar, Optional, Sequence, Union

from mmengine.model import initialize
from torch.nn.modules.batchnorm import _BatchNorm

from ..safe_load import load_checkpoint, unwrap, with_prefix

InitCfg = Union[dict, Sequence[dict], None]


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


class SPMBackbone:
    """Put first among the bases of every SPM backbone (before mmengine's
    ``BaseModule`` or the upstream backbone).

    Subclasses give :meth:`_init_without_checkpoint`,
    :meth:`_load_backbone_state`, :meth:`_stage_depths` and
    :meth:`_layer_depth`, and ``_freeze_stages`` (``frozen_stages``, as
    mmdet's backbones have it; the upstream one where there is one), and name in
    ``pretrained_options`` the keys of a ``Pretrained`` ``init_cfg`` entry,
    besides ``checkpoint`` and ``prefix``, that :meth:`load_pretrained`
    takes.
    """

    pretrained_options: ClassVar[tuple[str, ...]] = ()
    norm_eval: bool

    def _init_without_checkpoint(self, pretrained: bool) -> None:
        """The family's initialisation before the ``init_cfg`` entries
        (``pretrained``: whether a checkpoint will be loaded over it)."""
        raise NotImplementedError

    def _load_backbone_state(self, state: dict, filename: str,
                             **options) -> tuple[list[str], list[str]]:
        """Find, adapt, check and load the backbone's tensors in ``state``
        (read from ``filename``); the missing and the unexpected keys."""
        raise NotImplementedError

    def _stage_depths(self) -> list[int]:
        """The number of blocks of each stage."""
        raise NotImplementedError

    def _layer_depth(self, name: str, depths: list[int]) -> Optional[int]:
        """The layer-wise depth of parameter ``name`` (0: the stem, block
        ``j`` of stage ``i``: ``sum(depths[:i]) + j + 1``); None for what
        follows the last block (output norms)."""
        raise NotImplementedError

    def init_weights(self) -> None:
        """Initialise as ``init_cfg`` says, as mmengine documents it.

        ``init_cfg`` is None, a dict or a list of dicts: the family's
        initialisation comes first (the SPM layers at the SPM reference's),
        then every entry but ``Pretrained`` (Kaiming, TruncNormal, Constant,
        ...) on the layers it names, then the ``Pretrained`` checkpoint over
        all of them (:meth:`load_pretrained`, with its ``prefix`` and the
        family's ``pretrained_options``). What the entries do not touch keeps
        the family's initialisation.

        Raises:
            ValueError: If ``init_cfg`` names more than one ``Pretrained``
                checkpoint.
        """
        name = type(self).__name__
        cfgs = init_cfg_list(self.init_cfg, name)
        pretrained = [c for c in cfgs if is_pretrained(c)]
        if len(pretrained) > 1:
            raise ValueError(f'{name}: init_cfg names {len(pretrained)} Pretrained '
                             f'checkpoints; give one.')
        self._init_without_checkpoint(bool(pretrained))
        others = [c for c in cfgs if not is_pretrained(c)]
        if others:
            initialize(self, others)
        for cfg in pretrained:
            self.load_pretrained(cfg['checkpoint'], cfg.get('prefix'),
                                 **{k: cfg[k] for k in self.pretrained_options if k in cfg})
        self._is_init = True

    def load_pretrained(self, filename: str, prefix: Optional[str] = None,
                        **options) -> tuple[list[str], list[str]]:
        """Load a checkpoint of any layout the family knows.

        The file is read safely (:func:`mmspm.safe_load.load_checkpoint`,
        from anything mmengine's CheckpointLoader reads: paths, URLs,
        schemes) and unwrapped; the family finds the backbone's tensors,
        converts its layout, checks that they fit and loads them. Missing
        tensors keep their values from before the load; what was loaded and
        left out is logged.

        Args:
            filename (str): The checkpoint.
            prefix (str | None): If given, only the checkpoint's tensors under
                ``prefix`` (removed) are loaded, as mmengine's ``Pretrained``
                init reads them. Default: None.
            **options: The family's options (``pretrained_options``), e.g.
                SPMPVT's ``from_pvt_v1``.

        Returns:
            tuple[list[str], list[str]]: The missing and the unexpected keys.

        Raises:
            CheckpointError: If the checkpoint does not fit the model.
        """
        unknown = set(options) - set(self.pretrained_options)
        if unknown:
            raise TypeError(f'{type(self).__name__}: load_pretrained takes no '
                            f'{sorted(unknown)}; its options are '
                            f'{list(self.pretrained_options)}.')
        state = unwrap(load_checkpoint(filename))
        if prefix:
            state = with_prefix(state, prefix, filename)
        return self._load_backbone_state(state, filename, **options)

    def train(self, mode: bool = True):
        """Train mode but for the frozen stages and, with ``norm_eval``, the
        BatchNorms (SPM's).

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

    def get_layer_depth(self, param_name: str, prefix: str = '') -> tuple[int, int]:
        """The layer-wise depth of a parameter and the number of depths.

        For mmpretrain's ``LearningRateDecayOptimWrapperConstructor``: as
        mmpretrain's ``SwinTransformer.get_layer_depth``, the stem first (0),
        then one depth per block, a downsampling layer (SPM) at the depth of
        the block before it, and the rest (output norms; names outside
        ``prefix``, as the head) at ``num_layers - 1``, where
        ``num_layers = sum(depths) + 2``.

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
