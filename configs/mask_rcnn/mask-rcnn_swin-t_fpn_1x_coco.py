# Baseline: mmdet's Mask R-CNN Swin-T recipe (mask-rcnn_swin-t-p4-w7_fpn_1x_coco:
# AdamW lr 1e-4, weight decay 0.05, 1x schedule, batch 16 = 8 GPUs x 2) with
# mmdet's SwinTransformer, initialised from the Swin authors' ImageNet-1K
# weights.
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'
custom_imports = dict(imports=['mmspm'], allow_failed_imports=False)
# RNGStateHook: resumed runs draw the same dropout/drop-path masks as
# uninterrupted ones.
custom_hooks = [dict(type='RNGStateHook')]
