from .spm import (GuidedLocalEnhancement, MultiScaleAggregation, StepwisePatchMerging,
                  TokenStepwisePatchMerging)
from .spm_pvt import ARCH_SETTINGS, SPMPVT
from .spm_pvtv2 import SPMPVTv2
from .spm_swin import SPMSwinTransformer

__all__ = [
    'MultiScaleAggregation', 'GuidedLocalEnhancement', 'StepwisePatchMerging',
    'TokenStepwisePatchMerging', 'SPMPVT', 'SPMSwinTransformer', 'SPMPVTv2',
    'ARCH_SETTINGS'
]
