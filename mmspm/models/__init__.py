from .spm import (GuidedLocalEnhancement, MultiScaleAggregation, StepwisePatchMerging,
                  TokenStepwisePatchMerging)
from .spm_pvt import SPMPVT
from .spm_pvt_args import ARCH_SETTINGS
from .spm_pvtv2 import SPMPVTv2
from .spm_swin import SPMSwinTransformer

__all__ = [
    'MultiScaleAggregation', 'GuidedLocalEnhancement', 'StepwisePatchMerging',
    'TokenStepwisePatchMerging', 'SPMPVT', 'SPMSwinTransformer', 'SPMPVTv2',
    'ARCH_SETTINGS'
]
