"""DomainNet, the 40-class SENTRY version (Tan et al., 2020; Prabhu et al., 2021) the paper uses.

Train on sketch; ID = sketch test, OOD = real test (Section 2.1); painting and clipart test accuracy are logged
too when their images are present. SENTRY gives each domain only a train and a test list, so, as in Kumar et al.
(2022), the sketch test set is the ID evaluation set ``id_val`` (model selection and the paper's ID number).

Two layouts:
- SENTRY: ``<root>/<domain>/<class>/<file>.jpg`` and ``<root>/SENTRY_splits/{domain}_{train|test}_mini.txt``,
  lines like ``sketch/airplane/sketch_002_000033.jpg 0``. Labels come from these files (they are not in
  alphabetical order) and must agree with the class folder, so a shuffled file cannot train on wrong labels.
- WILDS ``domainnet_v1.0`` with ``sentry_metadata.csv``, read through ``wilds.get_dataset(use_sentry=True)``.
"""
from __future__ import annotations

import os
import warnings

import numpy as np

from freeze_embed.data.download import download
from freeze_embed.data.errors import DataFormatError, missing_files, missing_root
from freeze_embed.data.images import ImageSamples
from freeze_embed.data.transforms import paper_transform
from freeze_embed.data.wilds import WildsDataModule, split_indices

# SENTRY's label order (label = index): take labels from the split files, never from folder order.
CLASSES = ["airplane", "ambulance", "apple", "backpack", "banana", "bathtub", "bear", "bed", "bee", "bicycle",
           "bird", "book", "bridge", "bus", "cake", "calculator", "camera", "car", "cat", "chair", "clock", "cow",
           "dog", "dolphin", "duck", "elephant", "fence", "fork", "horse", "house", "rabbit", "scissors",
           "strawberry", "table", "telephone", "truck", "butterfly", "sheep", "drums", "donut"]
SOURCE, TARGET, EXTRA = "sketch", "real", ("painting", "clipart")
SPLIT_DIR = "SENTRY_splits"
IMAGE_URLS = {"sketch": "http://csr.bu.edu/ftp/visda/2019/multi-source/sketch.zip",
              "real": "http://csr.bu.edu/ftp/visda/2019/multi-source/real.zip",
              "painting": "http://csr.bu.edu/ftp/visda/2019/multi-source/groundtruth/painting.zip",
              "clipart": "http://csr.bu.edu/ftp/visda/2019/multi-source/groundtruth/clipart.zip"}
SPLIT_URL = "https://raw.githubusercontent.com/virajprabhu/SENTRY/HEAD/data/DomainNet/txt/{domain}_{split}_mini.txt"
WILDS_FOLDER = "domainnet_v1.0"
LAYOUT = (f"<root>/<domain>/<class>/*.jpg with <root>/{SPLIT_DIR}/{{domain}}_{{train|test}}_mini.txt (SENTRY) for "
          f"sketch and real, or <root>/{WILDS_FOLDER}/ with RELEASE_v1.0.txt and sentry_metadata.csv (WILDS)")
HOW = ("set data.init_args.download: true to fetch the images from http://ai.bu.edu/M3SDA and the split files from "
       "https://github.com/virajprabhu/SENTRY (data/DomainNet/txt)")


def split_file(domain: str, split: str) -> str:
    return f"{domain}_{split}_mini.txt"


def read_split(root: str, domain: str, split: str) -> tuple[list[str], np.ndarray]:
    """(image paths, labels) of one SENTRY list; CRLF or LF, label checked against the class folder."""
    path = os.path.join(root, SPLIT_DIR, split_file(domain, split))
    paths, labels = [], []
    with open(path, newline=None) as f:  # universal newlines: the released files use CRLF
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            rel, _, label = line.rpartition(" ")
            parts = rel.split("/")
            if not label.isdigit() or int(label) >= len(CLASSES) or len(parts) != 3 or parts[0] != domain:
                raise DataFormatError(f"{path}:{n}: expected '<{domain}>/<class>/<file> <label 0-39>', got '{line}'.")
            if parts[1] != CLASSES[int(label)]:
                raise DataFormatError(f"{path}:{n}: label {label} is '{CLASSES[int(label)]}' in SENTRY's order but the "
                                      f"image is in folder '{parts[1]}'; the split file is corrupt.")
            paths.append(os.path.join(root, rel))
            labels.append(int(label))
    return paths, np.asarray(labels, dtype=np.int64)


class DomainNet(WildsDataModule):
    """DomainNet (SENTRY, 40 classes): train sketch; ID = sketch test, OOD = real test (+ painting, clipart)."""

    wilds_name, wilds_version, wilds_files, title = "domainnet", "1.0", ("sentry_metadata.csv",), "DomainNet"
    num_classes = 40
    paper_epochs = 50
    class_names = tuple(CLASSES)
    prompt_templates = "openai_imagenet"  # includes "a sketch of", "a painting of" (data/prompts.py)

    def _sentry_ok(self, domain: str, split: str) -> bool:
        return bool(self.root_dir) and not missing_files(
            self.root_dir, [os.path.join(SPLIT_DIR, split_file(domain, split)), domain])

    def prepare_data(self) -> None:
        """Fetch the four SENTRY domains' images and split files into the SENTRY layout (``download: true``)."""
        if not self.download or not self.root_dir or self.wilds_has(self.wilds_release, *self.wilds_files):
            return
        for domain in (SOURCE, TARGET, *EXTRA):
            for split in ("train", "test"):
                if not os.path.exists(os.path.join(self.root_dir, SPLIT_DIR, split_file(domain, split))):
                    download(SPLIT_URL.format(domain=domain, split=split), os.path.join(self.root_dir, SPLIT_DIR))
            if not os.path.isdir(os.path.join(self.root_dir, domain)):
                download(IMAGE_URLS[domain], self.root_dir, extract=True)

    def read(self):
        """("sentry", [present domains]) or ("wilds", {target domain: WILDS dataset with sketch as source})."""
        required = [(SOURCE, "train"), (SOURCE, "test"), (TARGET, "test")]
        if all(self._sentry_ok(d, s) for d, s in required):
            return "sentry", [SOURCE, TARGET] + [d for d in EXTRA if self._sentry_ok(d, "test")]
        if not self.wilds_has(self.wilds_release, *self.wilds_files):
            raise missing_root(self.title, self.root, LAYOUT, HOW)
        sets = {}
        for target in (TARGET, *EXTRA):  # WILDS' SENTRY dataset pairs the source with one target domain
            ds = self.open_wilds(use_sentry=True, source_domain=SOURCE, target_domain=target)
            y = np.asarray(ds.y_array)
            if len(y) and (y.min() < 0 or y.max() >= len(CLASSES)):
                raise DataFormatError(f"{ds.data_dir}/sentry_metadata.csv has labels outside 0-39.")
            if target == TARGET or len(split_indices(ds, "test")):
                sets[target] = ds
        return "wilds", sets

    @property
    def eval_names(self) -> tuple[str, ...]:
        """``id_val``, ``ood_test`` (real) and ``ood_test_<domain>`` for painting / clipart when present."""
        kind, info = self.load()
        present = info if kind == "sentry" else list(info)
        return ("id_val", "ood_test", *(f"ood_test_{d}" for d in EXTRA if d in present))

    def _domain_split(self, name: str) -> tuple[str, str]:
        if name == "train":
            return SOURCE, "train"
        if name == "id_val":
            return SOURCE, "test"
        if name == "ood_test":
            return TARGET, "test"
        return name[len("ood_test_"):], "test"

    def make_split(self, name: str, train: bool):
        kind, info = self.load()
        domain, split = self._domain_split(name)
        tf = paper_transform("domainnet", train, self.mean, self.std)
        if kind == "sentry":
            paths, labels = read_split(self.root_dir, domain, split)
            return ImageSamples(paths, labels, None, tf)
        # in WILDS' SENTRY layout the source's train/test lists are the splits train/id_test, a target's is test
        wilds_split = {"train": "train", "test": "id_test"}[split] if domain == SOURCE else "test"
        return self.samples(info[TARGET if domain == SOURCE else domain], wilds_split, None, tf)

    def setup(self, stage=None) -> None:
        kind, info = self.load()
        if kind == "sentry":  # half an extra domain (images without list, or list without images) is a set-up slip
            for d in EXTRA:
                have = [os.path.isdir(os.path.join(self.root_dir, d)),
                        os.path.isfile(os.path.join(self.root_dir, SPLIT_DIR, split_file(d, "test")))]
                if any(have) and not all(have):
                    warnings.warn(f"DomainNet: {d} has {'images' if have[0] else 'a split file'} but no "
                                  f"{'split file' if have[0] else 'images'} under {self.root_dir}; not evaluated.",
                                  stacklevel=1)
        super().setup(stage)
