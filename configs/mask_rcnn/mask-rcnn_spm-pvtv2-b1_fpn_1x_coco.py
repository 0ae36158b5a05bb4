# SPM-PVTv2-B1: mask-rcnn_pvtv2-b1_fpn_1x_coco.py with SPM in place of the
# stage 2-4 overlapping patch embeddings. The PVTv2-B1 ImageNet weights
# initialise every tensor but the SPM layers, which start at the SPM
# reference's initialisation (the log lists them); an SPM-PVTv2-B1 ImageNet
# classifier (configs/imagenet/spm-pvtv2-b1_8xb128_in1k.py) initialises all:
# --cfg-options model.backbone.init_cfg.checkpoint=PATH
_base_ = './mask-rcnn_pvtv2-b1_fpn_1x_coco.py'

model = dict(backbone=dict(type='SPMPVTv2'))
