"""Drawing predictions with the codebases' own visualizers, shared by
``tools/analysis/show_predictions.py`` (PyTorch, beside the ground truth)
and ``tools/deployment/onnx_demo.py`` (onnxruntime)."""
import importlib

import numpy as np
from mmengine.config import Config


def build_visualizer(cfg: Config, dataset_meta: dict, name: str):
    """The config's visualizer without storage backends.

    Args:
        cfg (Config): The config; its ``visualizer`` entry is built in the
            config's scope.
        dataset_meta (dict): The class names and palette to draw with.
        name (str): Must be unique in the process (mmengine keeps
            visualizers by name).

    Returns:
        The visualizer.
    """
    registry = importlib.import_module(f'{cfg.default_scope}.registry')
    visualizer = registry.VISUALIZERS.build(dict(cfg.visualizer, name=name, vis_backends=None))
    visualizer.dataset_meta = dataset_meta
    return visualizer


def draw_sample(visualizer, scope: str, name: str, image: np.ndarray, sample,
                out_file: str, score_thr: float = 0.3, draw_gt: bool = True) -> None:
    """Draw ``sample``'s prediction on ``image`` into ``out_file``.

    mmdet's boxes, masks and class names above ``score_thr``, mmseg's
    colour-coded classes, mmpretrain's class and score.

    Args:
        visualizer: The visualizer of :func:`build_visualizer`.
        scope (str): The codebase: 'mmdet', 'mmseg' or 'mmpretrain'.
        name (str): The sample's name.
        image (np.ndarray): The image, RGB.
        sample: The data sample with the prediction (and ground truth).
        out_file (str): The file to draw into.
        score_thr (float): mmdet's score threshold. Default: 0.3.
        draw_gt (bool): Draw the ground truth beside the prediction.
            Default: True.
    """
    if scope == 'mmpretrain':
        # mmpretrain's visualizer draws with visualize_cls; the add_datasample
        # it inherits from mmengine draws nothing.
        visualizer.visualize_cls(image, sample, draw_gt=draw_gt, draw_pred=True, show=False,
                                 out_file=out_file)
        return
    extra = dict(pred_score_thr=score_thr) if scope == 'mmdet' else {}
    visualizer.add_datasample(name, image, data_sample=sample, draw_gt=draw_gt,
                              draw_pred=True, show=False, out_file=out_file, **extra)
