"""Evaluate a checkpoint of an mmspm config with its codebase.

Usage: python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE]
       [--cfg-options K=V ...] [--launcher {none,pytorch,slurm}]
The options are those of the codebase's own tools/test.py.
"""
import sys

from mmspm.launch import run_upstream

if __name__ == '__main__':
    run_upstream('test', sys.argv[1:])
