# Semantic FPN on ADE20K with an SPM-PVT-Tiny backbone: 40k iterations,
# batch 16 (8 GPUs x 2), AdamW lr 1e-4, poly decay (power 0.9), 512x512 crops,
# test with short side 512.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_40k.py',
]
custom_imports = dict(imports=['mmspm'], allow_failed_imports=False)
# RNGStateHook: resumed runs draw the same dropout/drop-path masks as
# uninterrupted ones. ReferenceCheckpointHook: load_from / --checkpoint also
# take the SPM-PVT authors' checkpoints (their key layout).
custom_hooks = [dict(type='RNGStateHook'), dict(type='ReferenceCheckpointHook')]

# ImageNet-1K SPM-PVT checkpoint that initialises the backbone (any layout
# mmspm reads, see README). From the command line:
# --cfg-options model.backbone.init_cfg.checkpoint=PATH
pretrained = 'checkpoints/spm-pvt-t_8xb128_in1k.pth'

# No SPM-PVT weights are published. To start from the public PVT v1 ImageNet
# weights (pvt_tiny/small/medium/large.pth from
# https://github.com/whai362/PVT/releases/tag/v2) for every tensor but the SPM
# layers, which keep SPM-PVT's own initialisation, use the commented init_cfg
# of the backbone below; from_pvt_v1=True says it is meant (a PVT v1
# checkpoint without it is refused).

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,  # the base's ResNet weights; the backbone has init_cfg
    backbone=dict(
        _delete_=True,
        type='SPMPVT',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
        # init_cfg=dict(type='Pretrained', checkpoint='checkpoints/pvt_tiny.pth',
        #               from_pvt_v1=True)),
    neck=dict(in_channels=[64, 128, 320, 512]),
    decode_head=dict(num_classes=150))

train_dataloader = dict(batch_size=2)

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.0001),
    clip_grad=None)
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=40000,
         by_epoch=False)
]
