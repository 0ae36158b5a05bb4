"""Registers mmspm's models in the MODELS registry of every installed codebase.

After ``import mmspm`` (or ``custom_imports=dict(imports=['mmspm'])``) a config
of mmdet, mmsegmentation or mmpretrain can say ``type='SPMPVT'``,
``type='SPMSwinTransformer'``, ``type='SPMPVTv2'`` or
``type='StepwisePatchMerging'``, and any of them ``type='mmdet.SPMPVT'`` and
the like. ``SPMSwinTransformer`` is built on the codebase's own Swin: mmdet's
in mmdet and mmseg, mmpretrain's in mmpretrain (:func:`models_for`).
"""
import importlib

from .models import SPMPVT, SPMPVTv2, SPMSwinTransformer, StepwisePatchMerging

SPM_MODELS = (SPMPVT, SPMSwinTransformer, SPMPVTv2, StepwisePatchMerging)

CODEBASES = ('mmdet', 'mmseg', 'mmpretrain')


def models_for(scope: str) -> dict[str, type]:
    """The models registered in ``scope``'s registry, by name: in mmpretrain's,
    ``SPMSwinTransformer`` is the SPM-Swin built on mmpretrain's Swin (its
    configs' ``arch``, its checkpoints); in mmdet's and mmseg's, on mmdet's."""
    models = {m.__name__: m for m in SPM_MODELS}
    if scope == 'mmpretrain':
        # Imported here: mmpretrain is optional (mmspm[cls]).
        from .models import spm_swin_pretrain
        models['SPMSwinTransformer'] = spm_swin_pretrain.SPMSwinTransformer
    return models


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
        for name, module in models_for(scope).items():
            registry.register_module(name=name, module=module, force=True)
        registered.append(scope)
    return registered


REGISTERED_IN = register_all()
