"""Train an mmspm config with its codebase (mmdet, mmseg or mmpretrain).

Usage: python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
       [--cfg-options K=V ...] [--launcher {none,pytorch,slurm}]
The options are those of the codebase's own tools/train.py.
"""
import sys

from mmspm.launch import run_upstream

if __name__ == '__main__':
    run_upstream('train', sys.argv[1:])
