# SPM-Swin-T on ImageNet-1K with the paper's recipe (spm-pvt-t_8xb128_in1k.py:
# 300 epochs, AdamW lr 1e-3 for batch 1024, weight decay 0.05, cosine schedule,
# Mixup/CutMix/label smoothing/random erasing): mmpretrain's Swin-T (the
# backbone of its swin_transformer configs) with SPM in place of patch merging;
# global average pooling of the last stage's normed map, then a linear head, as
# Swin's classifier. Its checkpoints initialise the SPM-Swin-T of the detection
# and segmentation configs (mmdet's Swin, the same parameter names).
_base_ = './spm-pvt-t_8xb128_in1k.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='SPMSwinTransformer',
        arch='tiny',
        img_size=224,
        drop_path_rate=0.2,
        # Windows padded on maps smaller than them (and the last stage's
        # shifted), as in mmdet's Swin of the detection configs: any input
        # size works.
        pad_small_map=True,
        out_indices=(3, )),
    neck=dict(_delete_=True, type='GlobalAveragePooling'),
    head=dict(in_channels=768))
