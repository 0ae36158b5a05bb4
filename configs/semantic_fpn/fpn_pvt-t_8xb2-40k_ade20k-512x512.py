# Baseline: the same recipe with mmdet's PVT v1 (PyramidVisionTransformer).
_base_ = './fpn_spm-pvt-t_8xb2-40k_ade20k-512x512.py'

pretrained = 'https://github.com/whai362/PVT/releases/download/v2/pvt_tiny.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmdet.PyramidVisionTransformer',
        num_layers=[2, 2, 2, 2],
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
