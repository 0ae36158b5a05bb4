"""mmspm: Stepwise Patch Merging backbones for OpenMMLab.

Importing it checks that one OpenMMLab stack is installed
(:mod:`mmspm.stacks`), then only registers: the models in the MODELS
registries of mmdet, mmseg and mmpretrain, the hooks in mmengine's HOOKS, and
mmengine's checkpoint types in torch's ``weights_only`` allow-list.
"""
from . import stacks

# Before anything imports the stack: a missing or mixed stack gets an error
# naming the extra to install, not an ImportError from deep inside mmdet.
STACK = stacks.check()

from .hooks import ReferenceCheckpointHook, RNGStateHook
from .models import SPMPVT, SPMPVTv2, SPMSwinTransformer, StepwisePatchMerging
from .registry import REGISTERED_IN
from .safe_load import register_safe_globals
from .version import __version__

register_safe_globals()

__all__ = [
    'SPMPVT', 'SPMSwinTransformer', 'SPMPVTv2', 'StepwisePatchMerging',
    'RNGStateHook', 'ReferenceCheckpointHook', 'REGISTERED_IN', '__version__'
]
