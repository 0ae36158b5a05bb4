# Gradually applying SPM: SPM at merge 1 only (into stage 2, low-level features;
# the paper's "stage 1"); merges 2 and 3 are PVT v1's patch embedding.
# The paper's recipe of the full model (../spm-pvt-t_8xb128_in1k.py) with only
# this option changed; the variant is defined in docs/reference_model.md
# ("Ablation variants").
_base_ = '../spm-pvt-t_8xb128_in1k.py'

model = dict(backbone=dict(spm_stages=(1, )))
