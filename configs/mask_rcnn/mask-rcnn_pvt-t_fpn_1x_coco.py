# Baseline: the same recipe with mmdet's PVT v1 (PyramidVisionTransformer).
_base_ = './mask-rcnn_spm-pvt-t_fpn_1x_coco.py'

pretrained = 'https://github.com/whai362/PVT/releases/download/v2/pvt_tiny.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='PyramidVisionTransformer',
        num_layers=[2, 2, 2, 2],
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
