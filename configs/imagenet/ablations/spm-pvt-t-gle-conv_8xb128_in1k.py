# The effectiveness of GLE: GLE replaced by a 2x2 stride-2 convolution (then
# GLE's LayerNorm norm1).
# The paper's recipe of the full model (../spm-pvt-t_8xb128_in1k.py) with only
# this option changed; the variant is defined in docs/reference_model.md
# ("Ablation variants").
_base_ = '../spm-pvt-t_8xb128_in1k.py'

model = dict(backbone=dict(gle='conv'))
