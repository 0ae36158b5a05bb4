# SPM-Swin-T on ImageNet-1K with the paper's recipe (spm-pvt-t_8xb128_in1k.py:
# 300 epochs, AdamW lr 1e-3 for batch 1024, weight decay 0.05, cosine schedule,
# Mixup/CutMix/label smoothing/random erasing): mmdet's Swin-T arguments with
# SPM in place of patch merging; global average pooling of the last stage's
# normed map, then a linear head, as Swin's classifier.
_base_ = './spm-pvt-t_8xb128_in1k.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='SPMSwinTransformer',
        embed_dims=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        drop_path_rate=0.2,
        out_indices=(3, )),
    neck=dict(_delete_=True, type='GlobalAveragePooling'),
    head=dict(in_channels=768))
