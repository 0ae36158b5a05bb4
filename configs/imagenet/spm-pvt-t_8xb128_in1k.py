# SPM-PVT-Tiny on ImageNet-1K, the paper's recipe: 300 epochs from scratch,
# 8 GPUs x 128 images, AdamW lr 1e-3 (for batch 1024) weight decay 0.05, cosine
# schedule with linear warm-up; random resized crop, flip, label smoothing,
# Mixup, CutMix, random erasing; 224 center-crop evaluation.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmspm'], allow_failed_imports=False)
# RNGStateHook: resumed runs draw the same dropout/drop-path masks as
# uninterrupted ones. ReferenceCheckpointHook: load_from / --checkpoint also
# take the SPM-PVT authors' checkpoints (their key layout).
custom_hooks = [dict(type='RNGStateHook'), dict(type='ReferenceCheckpointHook')]

# No SPM-PVT weights are published. To start from the public PVT v1 ImageNet
# weights (pvt_tiny/small/medium/large.pth from
# https://github.com/whai362/PVT/releases/tag/v2) for every tensor but the SPM
# layers, which keep SPM-PVT's own initialisation, use the commented init_cfg
# of the backbone below (the classifier head is not the backbone's and starts
# at init); from_pvt_v1=True says it is meant (a PVT v1
# checkpoint without it is refused).

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='SPMPVT',
        arch='tiny',
        with_cls_token=True,
        out_indices=(3, ),
        drop_path_rate=0.1,
        # init_cfg=dict(type='Pretrained', checkpoint='checkpoints/pvt_tiny.pth', from_pvt_v1=True)
    ),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=None),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.),
    ],
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0),
    ]))

# The paper lists its augmentations; RandAugment (in the Swin base) is not one.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandomErasing', erase_prob=0.25, mode='rand', min_area_ratio=0.02,
         max_area_ratio=1 / 3, fill_color=[103.53, 116.28, 123.675],
         fill_std=[57.375, 57.12, 58.395]),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=128, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

# Position embeddings and the cls token are not decayed (as DeiT/PVT).
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    '.pos_embeds': dict(decay_mult=0.0),
    '.cls_token': dict(decay_mult=0.0),
}))

# lr 1e-3 is for 8 x 128 = 1024 images per step (the base schedule's lr and
# warm-up); --auto-scale-lr rescales it for other batch sizes.
auto_scale_lr = dict(base_batch_size=1024)
