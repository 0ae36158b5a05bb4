_base_ = './fpn_spm-pvt-t_8xb2-40k_ade20k-512x512.py'

pretrained = 'checkpoints/spm-pvt-m_8xb128_in1k.pth'
model = dict(
    backbone=dict(
        arch='medium', init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
