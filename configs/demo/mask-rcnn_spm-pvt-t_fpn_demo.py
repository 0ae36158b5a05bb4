# The COCO recipe on the embedded demo data (tools/make_demo_data.py), sized
# for a CPU: small images, a short schedule, no ImageNet init.
_base_ = '../mask_rcnn/mask-rcnn_spm-pvt-t_fpn_1x_coco.py'

data_root = 'data/demo/coco/'
metainfo = dict(
    classes=('square', 'disk', 'triangle'),
    palette=[(220, 60, 60), (60, 200, 80), (70, 90, 230)])
scale = (320, 224)

# Few objects per image: far fewer proposals and RoIs than COCO needs (CPU
# RoIAlign dominates a training step otherwise).
model = dict(
    backbone=dict(init_cfg=None),
    roi_head=dict(
        bbox_head=dict(num_classes=3), mask_head=dict(num_classes=3)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=300), rcnn=dict(max_per_img=50)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor')),
]
train_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# From scratch: a higher lr and a short warm-up.
train_cfg = dict(max_epochs=6, val_interval=6)
optim_wrapper = dict(optimizer=dict(lr=0.0003))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
]
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=3, max_keep_ckpts=2))
