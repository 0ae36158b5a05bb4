"""The naive SPM-PVT: the tests' oracle and the benchmarks' baseline."""
from .reference import ARCHS, RefSPM, RefSPMPVT, use_naive_spm

__all__ = ['ARCHS', 'RefSPM', 'RefSPMPVT', 'use_naive_spm']
