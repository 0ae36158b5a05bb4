_base_ = './spm-pvt-t_8xb128_in1k.py'

model = dict(backbone=dict(arch='large'))
