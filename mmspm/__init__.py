"""mmspm: Stepwise Patch Merging backbones for OpenMMLab."""
from .checkpoint import patch_mmengine_loading, register_safe_globals
from .hooks import RNGStateHook
from .models import SPMPVT, StepwisePatchMerging
from .registry import REGISTERED_IN
from .version import __version__

register_safe_globals()
patch_mmengine_loading()

__all__ = ['SPMPVT', 'StepwisePatchMerging', 'RNGStateHook', 'REGISTERED_IN', '__version__']
