"""LightningDataModules: the built-in demo and the paper's five distribution-shift benchmarks."""
from .base import ShiftDataModule
from .demo import DemoShift

__all__ = ["ShiftDataModule", "DemoShift"]
