"""Registers mmspm's models in the MODELS registry of every installed codebase.

After ``import mmspm`` (or ``custom_imports=dict(imports=['mmspm'])``) a config
of mmdet, mmsegmentation or mmpretrain can say ``type='SPMPVT'``,
``type='SPMSwinTransformer'``, ``type='SPMPVTv2'`` or
``type='StepwisePatchMerging'``, and any of them ``type='mmdet.SPMPVT'`` and
the like.
"""
import importlib

from .models import SPMPVT, SPMPVTv2, SPMSwinTransformer, StepwisePatchMerging

SPM_MODELS = (SPMPVT, SPMSwinTransformer, SPMPVTv2, StepwisePatchMerging)

CODEBASES = ('mmdet', 'mmseg', 'mmpretrain')


def register_all() -> list[str]:
    """Register the models where the codebase is installed; return their names."""
    registered = []
    for scope in CODEBASES:
        try:
            registry = importlib.import_module(f'{scope}.registry').MODELS
        except ModuleNotFoundError as e:
            if e.name != scope:  # installed but broken: let the user see why
                raise
            continue
        for module in SPM_MODELS:
            registry.register_module(module=module, force=True)
        registered.append(scope)
    return registered


REGISTERED_IN = register_all()
