# Gradually applying SPM: SPM at merges 1 and 2 (the paper's "stages 1-2");
# merge 3 is PVT v1's patch embedding.
# The paper's recipe of the full model (../spm-pvt-t_8xb128_in1k.py) with only
# this option changed; the variant is defined in docs/reference_model.md
# ("Ablation variants").
_base_ = '../spm-pvt-t_8xb128_in1k.py'

model = dict(backbone=dict(spm_stages=(1, 2)))
