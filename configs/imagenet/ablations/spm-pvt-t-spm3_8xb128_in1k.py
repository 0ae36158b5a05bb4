# Gradually applying SPM: SPM at merge 3 only (into stage 4, high-level
# features; the paper's "stage 3"); merges 1 and 2 are PVT v1's patch embedding.
# The paper's recipe of the full model (../spm-pvt-t_8xb128_in1k.py) with only
# this option changed; the variant is defined in docs/reference_model.md
# ("Ablation variants").
_base_ = '../spm-pvt-t_8xb128_in1k.py'

model = dict(backbone=dict(spm_stages=(3, )))
