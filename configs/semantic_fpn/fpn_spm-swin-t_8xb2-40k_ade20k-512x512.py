# SPM-Swin-T: fpn_swin-t_8xb2-40k_ade20k-512x512.py with SPM in place of Swin's
# patch merging; the SPM layers start at the SPM reference's initialisation
# when the Swin-T ImageNet weights initialise the rest (the log lists them).
_base_ = './fpn_swin-t_8xb2-40k_ade20k-512x512.py'

model = dict(backbone=dict(type='SPMSwinTransformer'))
