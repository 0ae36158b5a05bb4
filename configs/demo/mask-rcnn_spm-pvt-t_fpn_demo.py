# Stage 2 of `make demo`: the COCO recipe (configs/mask_rcnn/) on the embedded
# demo data (tools/make_demo_data.py: three shape classes in COCO's layout),
# its backbone initialised from the demo classifier (stage 1,
# configs/demo/spm-pvt-t_cls_demo.py) through `model.backbone.init_cfg`, as
# the COCO config initialises it from ImageNet. `make demo` passes the
# classifier it has just trained:
#   --cfg-options model.backbone.init_cfg.checkpoint=WORK_DIR/cls/epoch_12.pth
# Run alone, the default below is where `python tools/train.py
# configs/demo/spm-pvt-t_cls_demo.py --work-dir work_dirs/demo/cls` writes it.
#
# What differs from the paper's recipe, and why (a CPU, about five minutes):
# - Images at most 256x192 (1333x800) and 3 classes (80).
# - Heads sized for a CPU: 128-channel FPN/RPN/RoI features (256), a 256-wide
#   box head (1024), a 2-conv mask head (4); 64 sampled RoIs per image (512)
#   and 100 proposals (1000): a few objects per image need no more, and CPU
#   RoIAlign and the mask head dominate a step otherwise.
# - Batch 4 on one process (8 GPUs x 2), lr 2e-4 (1e-4 for batch 16; 4e-4
#   diverges), 4 epochs of 256 images (12 of 118k) with the lr divided by 10
#   for the last one, a fixed seed so that the demo's numbers can be rerun.
_base_ = '../mask_rcnn/mask-rcnn_spm-pvt-t_fpn_1x_coco.py'

pretrained = 'work_dirs/demo/cls/epoch_12.pth'

data_root = 'data/demo/coco/'
metainfo = dict(
    classes=('square', 'disk', 'triangle'),
    palette=[(220, 60, 60), (60, 200, 80), (70, 90, 230)])
scale = (256, 192)
channels = 128

model = dict(
    backbone=dict(init_cfg=dict(checkpoint=pretrained)),
    neck=dict(out_channels=channels),
    rpn_head=dict(in_channels=channels, feat_channels=channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=channels),
        bbox_head=dict(in_channels=channels, fc_out_channels=256, num_classes=3),
        mask_roi_extractor=dict(out_channels=channels),
        mask_head=dict(num_convs=2, in_channels=channels,
                       conv_out_channels=channels, num_classes=3)),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=128)),
        rpn_proposal=dict(nms_pre=500, max_per_img=100),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100), rcnn=dict(max_per_img=20)))

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
    batch_size=4,
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

max_epochs = 4
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=2e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=max_epochs,
         milestones=[3], gamma=0.1),
]
randomness = dict(seed=0)
default_hooks = dict(
    logger=dict(interval=16),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
