"""mmspm.visualization draws each codebase's predictions into a file."""
import os.path as osp

import numpy as np
import torch
from mmengine.config import Config
from PIL import Image

from mmspm.visualization import build_visualizer, draw_sample
from tests.utils import ROOT


def test_classifier_prediction_is_drawn(tmp_path):
    """mmpretrain's visualizer has no add_datasample of its own (mmengine's
    draws nothing): the class must still reach the picture."""
    from mmpretrain.structures import DataSample
    cfg = Config.fromfile(osp.join(ROOT, 'configs/imagenet/spm-pvt-t_8xb128_in1k.py'))
    visualizer = build_visualizer(cfg, dict(classes=[f'class{i}' for i in range(5)]),
                                  'test_classifier_prediction_is_drawn')
    image = np.full((96, 128, 3), 200, dtype=np.uint8)
    pictures = []
    for pred in (3, 4):  # the same ground truth, two predictions
        score = torch.full((5, ), 0.1)
        score[pred] = 0.6
        sample = DataSample().set_gt_label(1).set_pred_label(pred).set_pred_score(score)
        out = str(tmp_path / f'cls{pred}.png')
        draw_sample(visualizer, 'mmpretrain', 'x', image, sample, out)
        pictures.append(np.asarray(Image.open(out).convert('RGB')))
    assert pictures[0].shape[2] == 3 and (pictures[0] != 200).any(), 'nothing drawn'
    assert (pictures[0] != pictures[1]).any(), 'the prediction is not in the picture'
