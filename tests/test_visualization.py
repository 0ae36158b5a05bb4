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
    sample = DataSample().set_gt_label(1).set_pred_label(3).set_pred_score(
        torch.tensor([0.1, 0.1, 0.1, 0.6, 0.1]))
    out = str(tmp_path / 'cls.png')
    draw_sample(visualizer, 'mmpretrain', 'x', image, sample, out)
    drawn = np.asarray(Image.open(out).convert('RGB'))
    assert drawn.shape[2] == 3 and (drawn != 200).any(), 'nothing drawn'
