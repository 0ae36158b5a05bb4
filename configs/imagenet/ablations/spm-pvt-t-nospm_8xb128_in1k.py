# Gradually applying SPM, row 1: no SPM (PVT-T, PVT v1's patch embedding at
# every merge), the baseline the paper's gains are measured from.
# The paper's recipe of the full model (../spm-pvt-t_8xb128_in1k.py) with only
# this option changed; the variant is defined in docs/reference_model.md
# ("Ablation variants").
_base_ = '../spm-pvt-t_8xb128_in1k.py'

model = dict(backbone=dict(spm_stages=()))
