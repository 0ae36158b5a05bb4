"""Writes a real mmengine runner checkpoint of a tiny model (2 iterations, lr
0.01) under the numpy installed: its message hub pickles numpy arrays and
scalars, under numpy.core (numpy 1) or numpy._core (numpy 2).

Usage: python tests/data/checkpoints/make_runner_checkpoint.py OUT.pth
"""
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import DataLoader, TensorDataset


class Regression(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)
    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(inputs)
        return dict(loss=out.square().mean()) if mode == 'loss' else [out]


work = tempfile.mkdtemp()
loader = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2,
                    collate_fn=lambda b: dict(inputs=torch.stack([x[0] for x in b])))
runner = Runner(model=Regression(), work_dir=work, train_dataloader=loader,
                optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
                train_cfg=dict(by_epoch=False, max_iters=2),
                default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=False,
                                                   interval=2)),
                randomness=dict(seed=0))
runner.train()
shutil.copy(os.path.join(work, 'iter_2.pth'), sys.argv[1])
print(np.__version__, os.path.getsize(sys.argv[1]))
