# Baseline: the Mask R-CNN recipe of this folder (AdamW lr 1e-4, weight decay
# 1e-4, 1x schedule, batch 16 = 8 GPUs x 2, as the PVTv2 paper's) with mmdet's
# PyramidVisionTransformerV2-B1, initialised from the PVTv2 authors' ImageNet-1K
# weights.
_base_ = './mask-rcnn_pvt-t_fpn_1x_coco.py'

pretrained = 'https://github.com/whai362/PVT/releases/download/v2/pvt_v2_b1.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='PyramidVisionTransformerV2',
        embed_dims=64,
        num_layers=[2, 2, 2, 2],
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 320, 512]))
