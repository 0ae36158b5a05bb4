# Mask R-CNN + FPN, 1x schedule on COCO 2017 with an SPM-PVT-Tiny backbone
# (the paper's detection recipe: AdamW lr 1e-4, batch 16 = 8 GPUs x 2).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmspm'], allow_failed_imports=False)
# RNGStateHook: resumed runs draw the same dropout/drop-path masks as
# uninterrupted ones. ReferenceCheckpointHook: load_from / --checkpoint also
# take the SPM-PVT authors' checkpoints (their key layout).
custom_hooks = [dict(type='RNGStateHook'), dict(type='ReferenceCheckpointHook')]

# ImageNet-1K SPM-PVT checkpoint that initialises the backbone: the authors'
# key layout, an mmpretrain classifier (configs/imagenet/) or a converted
# checkpoint (tools/model_converters/spm2mmspm.py). Override it from the
# command line with --cfg-options model.backbone.init_cfg.checkpoint=PATH.
pretrained = 'checkpoints/spm-pvt-t_8xb128_in1k.pth'

# No SPM-PVT weights are published. To start from the public PVT v1 ImageNet
# weights (pvt_tiny/small/medium/large.pth from
# https://github.com/whai362/PVT/releases/tag/v2) for every tensor but the SPM
# layers, which keep SPM-PVT's own initialisation, use the commented init_cfg
# of the backbone below; from_pvt_v1=True says it is meant (a PVT v1
# checkpoint without it is refused).

model = dict(
    backbone=dict(
        _delete_=True,
        type='SPMPVT',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
        # init_cfg=dict(type='Pretrained', checkpoint='checkpoints/pvt_tiny.pth',
        #               from_pvt_v1=True)),
    neck=dict(in_channels=[64, 128, 320, 512]))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.0001))
