"""LightningDataModules: the built-in demo, the paper's five distribution-shift benchmarks and CIFAR-10 -> STL-10."""
from freeze_embed.data.base import ShiftDataModule
from freeze_embed.data.camelyon import Camelyon17
from freeze_embed.data.cifar10 import CIFAR10
from freeze_embed.data.demo import DemoShift
from freeze_embed.data.domainnet import DomainNet
from freeze_embed.data.errors import DataFormatError, DataRootError, ImageReadError
from freeze_embed.data.fmow import FMoW
from freeze_embed.data.folds import HoldOutFold
from freeze_embed.data.image_folders import ImageFolders
from freeze_embed.data.living17 import Living17
from freeze_embed.data.waterbirds import Waterbirds
from freeze_embed.data.wilds import WildsDataModule

__all__ = ["ShiftDataModule", "WildsDataModule", "HoldOutFold", "ImageFolders", "DemoShift", "Waterbirds", "FMoW",
           "Camelyon17", "DomainNet", "Living17", "CIFAR10", "DataRootError", "DataFormatError", "ImageReadError"]
