from .spm import GuidedLocalEnhancement, MultiScaleAggregation, StepwisePatchMerging
from .spm_pvt import ARCH_SETTINGS, SPMPVT

__all__ = [
    'MultiScaleAggregation', 'GuidedLocalEnhancement', 'StepwisePatchMerging',
    'SPMPVT', 'ARCH_SETTINGS'
]
