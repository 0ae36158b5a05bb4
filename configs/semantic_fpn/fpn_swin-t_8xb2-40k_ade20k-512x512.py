# Baseline: the Semantic FPN recipe of this folder with mmdet's
# SwinTransformer-T (the arguments of mmdet's Swin-T recipe), initialised from
# the Swin authors' ImageNet-1K weights.
_base_ = './fpn_pvt-t_8xb2-40k_ade20k-512x512.py'

pretrained = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_tiny_patch4_window7_224.pth'  # noqa
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmdet.SwinTransformer',
        embed_dims=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        convert_weights=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
