"""A config's model built as the Runner builds it, for tools and tests.

One place says how: the model dict the Runner takes (mmpretrain keeps the
data preprocessor at the top level of a config), built in the config's scope
by that codebase's registry, SyncBN made plain BN, weights initialised only
when asked, and without reading the backbone's pretrained checkpoint unless
asked.
"""
import copy
import importlib
from typing import Optional

from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from torch import nn


def model_config(cfg: Config) -> dict:
    """A copy of the config's model dict as the Runner builds it.

    mmpretrain configs keep ``data_preprocessor`` at the top level.

    Args:
        cfg (Config): The config.

    Returns:
        dict: The model dict.
    """
    model = copy.deepcopy(cfg.model)
    if 'data_preprocessor' not in model and cfg.get('data_preprocessor'):
        model['data_preprocessor'] = copy.deepcopy(cfg.data_preprocessor)
    return model


def _quiet_init_weights(module: nn.Module) -> None:
    """``module.init_weights()`` with mmengine's per-tensor log lines (printed
    when the logger has no file) left out: a tool wants none."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('WARNING')
    try:
        module.init_weights()
    finally:
        logger.setLevel(level)


def _drop_pretrained(backbone: dict) -> None:
    """Remove, in place, what makes ``backbone`` read a checkpoint: a
    ``Pretrained`` ``init_cfg`` (alone or in a list; the class's default
    initialisation then applies) and mmdet's ``pretrained`` argument."""
    backbone.pop('pretrained', None)
    init_cfg = backbone.get('init_cfg')
    if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
        backbone.pop('init_cfg')
    elif isinstance(init_cfg, (list, tuple)):
        kept = [c for c in init_cfg if c.get('type') != 'Pretrained']
        if kept:
            backbone['init_cfg'] = kept
        else:
            backbone.pop('init_cfg')


def build_model(cfg: Config, part: Optional[dict] = None, *, init_weights: bool = False,
                pretrained: bool = False) -> nn.Module:
    """Build ``part`` of ``cfg`` in the config's scope, by that codebase's registry.

    SyncBN layers are made plain BN: SyncBN needs a process group in training,
    and tools and tests run in one process; the two are equal in eval mode.

    Args:
        cfg (Config): The config (its ``default_scope`` names the codebase).
        part (dict | None): A model dict to build instead of the whole model,
            e.g. a changed copy of ``cfg.model`` or a backbone dict. Not
            modified. None: the whole model, see :func:`model_config`.
            Default: None.
        init_weights (bool): Run ``init_weights()`` (without its per-tensor
            log lines). False: the modules' construction-time values.
            Default: False.
        pretrained (bool): With ``init_weights``, keep the backbone's
            ``Pretrained`` ``init_cfg`` (or ``pretrained``), so that its
            checkpoint is read. False: the backbone initialises itself as its
            class does without one, and no file is read. Default: False.

    Returns:
        nn.Module: The built model.
    """
    part = model_config(cfg) if part is None else copy.deepcopy(part)
    if init_weights and not pretrained and isinstance(part.get('backbone'), dict):
        _drop_pretrained(part['backbone'])
    init_default_scope(cfg.default_scope)
    model = importlib.import_module(f'{cfg.default_scope}.registry').MODELS.build(part)
    model = revert_sync_batchnorm(model)
    if init_weights:
        _quiet_init_weights(model)
    return model
