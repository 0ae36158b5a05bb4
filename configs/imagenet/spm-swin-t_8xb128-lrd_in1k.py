# spm-swin-t_8xb128_in1k.py with layer-wise learning-rate decay (mmpretrain's
# LearningRateDecayOptimWrapperConstructor): the head keeps the base lr, each
# depth below it 0.9 times the one above (patch embedding lowest; an SPM layer
# at the depth of the block before it), as BEiT/ConvNeXt-style fine-tuning
# does. The backbone's get_layer_depth gives the depths.
_base_ = './spm-swin-t_8xb128_in1k.py'

optim_wrapper = dict(
    constructor='LearningRateDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.9))
