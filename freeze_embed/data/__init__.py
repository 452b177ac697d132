"""LightningDataModules: the built-in demo, the paper's five distribution-shift benchmarks and CIFAR-10 -> STL-10."""
from .base import ShiftDataModule
from .camelyon import Camelyon17
from .cifar10 import CIFAR10
from .demo import DemoShift
from .domainnet import DomainNet
from .errors import DataFormatError, DataRootError, ImageReadError
from .fmow import FMoW
from .folds import HoldOutFold
from .image_folders import ImageFolders
from .living17 import Living17
from .waterbirds import Waterbirds
from .wilds import WildsDataModule

__all__ = ["ShiftDataModule", "WildsDataModule", "HoldOutFold", "ImageFolders", "DemoShift", "Waterbirds", "FMoW", "Camelyon17", "DomainNet",
           "Living17", "CIFAR10", "DataRootError", "DataFormatError", "ImageReadError"]
