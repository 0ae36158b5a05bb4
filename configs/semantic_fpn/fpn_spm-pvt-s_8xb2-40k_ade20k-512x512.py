_base_ = './fpn_spm-pvt-t_8xb2-40k_ade20k-512x512.py'

pretrained = 'checkpoints/spm-pvt-s_8xb128_in1k.pth'
model = dict(
    backbone=dict(
        arch='small', init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
