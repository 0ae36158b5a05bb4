# The effectiveness of the guide token: the window's average (global average
# pooling of its 2x2 pixels) as GLE's query token instead of the GTG's guide
# token.
# The paper's recipe of the full model (../spm-pvt-t_8xb128_in1k.py) with only
# this option changed; the variant is defined in docs/reference_model.md
# ("Ablation variants").
_base_ = '../spm-pvt-t_8xb128_in1k.py'

model = dict(backbone=dict(guide='gap'))
