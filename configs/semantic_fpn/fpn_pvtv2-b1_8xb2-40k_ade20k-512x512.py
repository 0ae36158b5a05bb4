# Baseline: the Semantic FPN recipe of this folder with mmdet's
# PyramidVisionTransformerV2-B1, initialised from the PVTv2 authors' ImageNet-1K
# weights.
_base_ = './fpn_pvt-t_8xb2-40k_ade20k-512x512.py'

pretrained = 'https://github.com/whai362/PVT/releases/download/v2/pvt_v2_b1.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmdet.PyramidVisionTransformerV2',
        embed_dims=64,
        num_layers=[2, 2, 2, 2],
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 320, 512]))
