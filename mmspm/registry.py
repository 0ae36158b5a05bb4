"""Registers mmspm's models in the MODELS registry of every installed codebase.

After ``import mmspm`` (or ``custom_imports=dict(imports=['mmspm'])``) a config
of mmdet, mmsegmentation or mmpretrain can say ``type='SPMPVT'``,
``type='SPMSwinTransformer'``, ``type='SPMPVTv2'`` (the families of
:mod:`mmspm.models.families`), ``type='StepwisePatchMerging'`` or
``type='TokenStepwisePatchMerging'``, and any of
them ``type='mmdet.SPMPVT'`` and the like. ``SPMSwinTransformer`` is built on
the codebase's own Swin: mmdet's in mmdet and mmseg, mmpretrain's in
mmpretrain (:func:`models_for`).
"""
import importlib

from .models import StepwisePatchMerging, TokenStepwisePatchMerging
from .models.families import FAMILIES

CODEBASES = ('mmdet', 'mmseg', 'mmpretrain')


def models_for(scope: str) -> dict[str, type]:
    """The models registered in ``scope``'s registry, by name.

    Each family's SPM backbone (the one its ``per_scope`` names for
    ``scope``, if any, e.g. in mmpretrain the SPM-Swin built on mmpretrain's
    Swin) and the SPM layers (NCHW and token interfaces).

    Args:
        scope (str): The codebase, one of :data:`CODEBASES`.

    Returns:
        dict[str, type]: The models by name.
    """
    models = {cls.__name__: cls for cls in (StepwisePatchMerging, TokenStepwisePatchMerging)}
    for family in FAMILIES:
        cls = family.spm
        if scope in family.per_scope:
            # Imported here: the codebase it builds on is optional.
            module, name = family.per_scope[scope].split(':')
            cls = getattr(importlib.import_module(module), name)
        models[family.spm.__name__] = cls
    return models


def register_all() -> list[str]:
    """Register the models in every codebase that is installed.

    Returns:
        list[str]: The names of the codebases the models were registered in.
    """
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
