"""Loading a model to export: the config's model with a checkpoint's weights
(:func:`load_model`), and the export task it is one of (:func:`task_of`)."""
import importlib
from typing import Optional

from mmengine.config import Config
from torch import nn

from ..builder import build_model
from ..model_weights import load_model_weights

# (task, module, class) of the models :func:`task_of` knows.
TASKS = (('classifier', 'mmpretrain.models', 'ImageClassifier'),
         ('segmentor', 'mmseg.models', 'EncoderDecoder'),
         ('detector', 'mmdet.models', 'MaskRCNN'))


def task_of(model: nn.Module) -> str:
    """The export task of ``model``.

    Args:
        model (nn.Module): The model.

    Returns:
        str: 'classifier' (mmpretrain ``ImageClassifier``), 'segmentor'
        (mmseg ``EncoderDecoder``) or 'detector' (mmdet ``MaskRCNN``).

    Raises:
        ValueError: A clear error for any other model.
    """
    for task, module, name in TASKS:
        try:
            cls = getattr(importlib.import_module(module), name)
        except ImportError:
            continue
        if isinstance(model, cls):
            return task
    raise ValueError(
        f'ONNX export covers mmpretrain image classifiers, mmseg encoder-decoders '
        f'(Semantic FPN) and mmdet Mask R-CNN; got a {type(model).__name__}, which is '
        f'not supported (docs/deploy.md lists what is exported).')


def load_model(cfg: Config, checkpoint: Optional[str] = None) -> nn.Module:
    """The config's whole model in eval mode with SyncBN made BN.

    Args:
        cfg (Config): The config.
        checkpoint (str | None): The weights: a checkpoint trained with this
            config (or in the SPM authors' layout), loaded by
            :func:`mmspm.model_weights.load_model_weights`. None: the model's
            own initialisation (the backbone's pretrained checkpoint, if the
            config names one, is not read). Default: None.

    Returns:
        nn.Module: The model.

    Raises:
        CheckpointError: If ``checkpoint`` does not fit the model.
    """
    model = build_model(cfg, init_weights=checkpoint is None)
    if checkpoint is not None:
        load_model_weights(model, checkpoint)
    return model.eval()
