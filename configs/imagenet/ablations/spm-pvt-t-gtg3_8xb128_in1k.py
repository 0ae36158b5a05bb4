# Selection of GTG's kernel size: 3x3 depth-wise convolution in the guide token
# generator (the full model's is 7x7).
# The paper's recipe of the full model (../spm-pvt-t_8xb128_in1k.py) with only
# this option changed; the variant is defined in docs/reference_model.md
# ("Ablation variants").
_base_ = '../spm-pvt-t_8xb128_in1k.py'

model = dict(backbone=dict(guide_kernel_size=3))
