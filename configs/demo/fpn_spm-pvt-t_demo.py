# Stage 3 of `make demo`: the ADE20K recipe (configs/semantic_fpn/) on the
# embedded demo data (tools/make_demo_data.py: ADE20K's layout, background and
# three shape classes), its backbone initialised from the demo classifier
# (stage 1, configs/demo/spm-pvt-t_cls_demo.py) through
# `model.backbone.init_cfg`, as the ADE20K config initialises it from
# ImageNet. `make demo` passes the classifier it has just trained:
#   --cfg-options model.backbone.init_cfg.checkpoint=WORK_DIR/cls/epoch_12.pth
# Run alone, the default below is where `python tools/train.py
# configs/demo/spm-pvt-t_cls_demo.py --work-dir work_dirs/demo/cls` writes it.
#
# What differs from the paper's recipe, and why (a CPU, about three minutes):
# - 128x128 crops and short side 128 at test (512), 4 classes (150) named as
#   the shapes they are: mmseg's BaseSegDataset reads ADE20K's layout with any
#   class names (ADE20KDataset allows only its own).
# - BN instead of SyncBN: one process.
# - Batch 4 (8 GPUs x 2), lr 1e-3 (1e-4 for batch 16) for 400 iterations
#   (40k) with the same poly decay, a fixed seed so that the demo's numbers
#   can be rerun.
# - paddings: the stage-1 patch embedding pads at the bottom/right ('corner')
#   instead of dropping the pixels beyond a multiple of 4 (mmdet's PVT v1
#   default, the recipe's), so that images of any size, down to 1x1, are
#   segmented at their native size (tests/test_robustness.py).
_base_ = '../semantic_fpn/fpn_spm-pvt-t_8xb2-40k_ade20k-512x512.py'

pretrained = 'work_dirs/demo/cls/epoch_12.pth'

data_root = 'data/demo/ade/'
metainfo = dict(
    classes=('background', 'square', 'disk', 'triangle'),
    palette=[(120, 120, 120), (220, 60, 60), (60, 200, 80), (70, 90, 230)])
crop_size = (128, 128)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=dict(checkpoint=pretrained), paddings=('corner', 0, 0, 0)),
    decode_head=dict(num_classes=4, norm_cfg=norm_cfg))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(256, 128), ratio_range=(0.75, 1.25),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo,
                 reduce_zero_label=True, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo,
                 reduce_zero_label=True, pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 400
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=0.001))
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=max_iters,
         by_epoch=False)
]
randomness = dict(seed=0)
default_hooks = dict(
    logger=dict(interval=25),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
