# SPM-Swin-T: the Swin-T recipe of mask-rcnn_swin-t_fpn_1x_coco.py with SPM in
# place of Swin's patch merging. The Swin-T ImageNet weights initialise every
# tensor but the SPM layers, which start at the SPM reference's
# initialisation (the log lists them); an SPM-Swin-T ImageNet classifier
# (configs/imagenet/spm-swin-t_8xb128_in1k.py) initialises all of them:
# --cfg-options model.backbone.init_cfg.checkpoint=PATH
_base_ = './mask-rcnn_swin-t_fpn_1x_coco.py'

model = dict(backbone=dict(type='SPMSwinTransformer'))
