# Stage 1 of `make demo`: the ImageNet recipe (configs/imagenet/) pretraining
# SPM-PVT-T on the embedded demo set (tools/make_demo_data.py: three shape
# classes in ImageNet's layout). Its checkpoint initialises the backbones of
# the two dense demo configs, as an ImageNet checkpoint does for COCO/ADE20K.
#
# What differs from the paper's recipe, and why:
# - 3 classes, 112x112 crops (224 in the paper), batch 32 on one CPU process
#   (8 GPUs x 128): the demo must train in about three minutes on 2 cores.
# - 12 epochs with a one-epoch warm-up (300 and 20): the task is small.
# - No Mixup, CutMix or random erasing, and crops keep at least half the image
#   (8% in the paper): these regularise a 300-epoch ImageNet run; on a few
#   hundred steps they only slow learning down. Label smoothing is kept.
# - Top-1 only (top-5 of 3 classes is always 100%).
# - A fixed seed, so that the demo's numbers can be rerun.
_base_ = '../imagenet/spm-pvt-t_8xb128_in1k.py'

data_root = 'data/demo/imagenet/'
metainfo = dict(classes=('square', 'disk', 'triangle'))
img_size = 112
max_epochs = 12

data_preprocessor = dict(num_classes=3)
model = dict(head=dict(num_classes=3), train_cfg=None)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, crop_ratio_range=(0.5, 1.0),
         backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(img_size, img_size), backend='pillow',
         interpolation='bicubic'),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1,
         end=max_epochs),
]
randomness = dict(seed=0)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
