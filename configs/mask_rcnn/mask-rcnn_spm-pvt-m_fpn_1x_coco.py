_base_ = './mask-rcnn_spm-pvt-t_fpn_1x_coco.py'

pretrained = 'checkpoints/spm-pvt-m_8xb128_in1k.pth'
model = dict(
    backbone=dict(
        arch='medium', init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
