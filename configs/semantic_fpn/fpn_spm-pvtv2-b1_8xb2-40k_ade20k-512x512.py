# SPM-PVTv2-B1: fpn_pvtv2-b1_8xb2-40k_ade20k-512x512.py with SPM in place of
# the stage 2-4 overlapping patch embeddings; the SPM layers start at the SPM
# reference's initialisation when the PVTv2-B1 ImageNet weights initialise the
# rest (the log lists them).
_base_ = './fpn_pvtv2-b1_8xb2-40k_ade20k-512x512.py'

model = dict(backbone=dict(type='SPMPVTv2'))
