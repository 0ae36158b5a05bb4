# SPM-PVTv2-B1 on ImageNet-1K with the paper's recipe (spm-pvt-t_8xb128_in1k.py):
# mmdet's PVTv2-B1 arguments with SPM in place of the stage 2-4 patch
# embeddings; global average pooling of the last stage's normed map, then a
# linear head, as PVTv2's classifier.
_base_ = './spm-pvt-t_8xb128_in1k.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='SPMPVTv2',
        embed_dims=64,
        num_layers=[2, 2, 2, 2],
        drop_path_rate=0.1,
        out_indices=(3, )),
    neck=dict(_delete_=True, type='GlobalAveragePooling'),
    head=dict(in_channels=512))
