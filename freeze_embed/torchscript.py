"""The weights of a TorchScript archive (OpenAI's original CLIP ``.pt`` files), read without running anything in it.

open_clip reads those files with ``torch.jit.load``, which compiles and runs the archive's code, or
``torch.load(weights_only=False)``. Here only the tensors come out: ``data.pkl`` goes through an unpickler that
knows tensors, storages and a placeholder for the archive's module classes and refuses every other global (the
"restricting globals" recipe of Python's pickle documentation), and which attributes are parameters and buffers is
read, as text, from the class declarations in the archive's code (``__parameters__ = ["weight", "bias", ]``).
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections import OrderedDict

import torch

from freeze_embed.errors import one_line
from freeze_embed.files import UnreadableFileError, refusal

_ALLOWED = {("collections", "OrderedDict"),
            ("torch.jit._pickle", "build_intlist"), ("torch.jit._pickle", "build_tensorlist"),
            ("torch.jit._pickle", "build_doublelist"), ("torch.jit._pickle", "build_boollist"),
            ("torch.jit._pickle", "restore_type_tag")}


_STORAGES = {"FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
             "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
             "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
             "BoolStorage": torch.bool}


def _rebuild_tensor(storage, offset, size, stride, *_):
    """``torch._utils._rebuild_tensor_v2`` on our (bytes, dtype) storages."""
    untyped, dtype = storage
    return torch.empty(0, dtype=dtype).set_(untyped, offset, size, stride)


class _Object:
    """An object of one of the archive's classes: its attributes only (pickle's BUILD fills ``__dict__``)."""
    qualified = ""


def _prefix(zf: zipfile.ZipFile) -> str:
    return zf.namelist()[0].split("/")[0] + "/"


def is_torchscript(path: str | os.PathLike) -> bool:
    """What ``torch.load`` checks before handing a file to ``torch.jit.load``: a zip with ``constants.pkl``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.split("/", 1)[-1] == "constants.pkl" for n in zf.namelist())


class _Unpickler(pickle.Unpickler):
    def __init__(self, zf: zipfile.ZipFile, data: bytes):
        import io
        super().__init__(io.BytesIO(data))
        self.zf, self.root, self.classes = zf, _prefix(zf), {}

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__"):
            qualified = f"{module}.{name}"
            if qualified not in self.classes:
                self.classes[qualified] = type(name, (_Object,), {"qualified": qualified})
            return self.classes[qualified]
        if module == "torch" and name in _STORAGES:
            return _STORAGES[name]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) in _ALLOWED:
            return getattr(__import__(module, fromlist=[name]), name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")

    def persistent_load(self, pid):
        kind, dtype, key, _location, _numel = pid
        if kind != "storage" or not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError(f"persistent id {kind!r} is not a storage")
        raw = bytearray(self.zf.read(f"{self.root}data/{key}"))
        return (torch.frombuffer(raw, dtype=torch.uint8).untyped_storage() if raw else torch.UntypedStorage(0)), dtype


def _declared(zf: zipfile.ZipFile, qualified: str) -> list[str]:
    """The parameters and buffers a class of the archive declares, from its code file read as text."""
    module, _, name = qualified.rpartition(".")
    path = f"{_prefix(zf)}code/{module.replace('.', '/')}.py"
    try:
        code = zf.read(path).decode("utf-8")
    except KeyError:
        return []
    match = re.search(rf"^class {re.escape(name)}\(Module\):\n  __parameters__ = \[(.*)\]\n"
                      rf"  __buffers__ = \[(.*)\]$", code, re.M)
    return re.findall(r'"([^"]+)"', match.group(1) + match.group(2)) if match else []


def load_state_dict(path: str | os.PathLike, what: str = "pretrained weights") -> dict[str, torch.Tensor]:
    """Parameters and buffers of the archive's module, named as ``module.state_dict()`` names them."""
    path = os.fspath(path)
    try:
        with zipfile.ZipFile(path) as zf:
            data = next(n for n in zf.namelist() if n.split("/", 1)[-1] == "data.pkl")
            root = _Unpickler(zf, zf.read(data)).load()
            state: dict[str, torch.Tensor] = OrderedDict()
            todo = [("", root)]
            while todo:
                prefix, obj = todo.pop()
                if not isinstance(obj, _Object):
                    continue
                for name in _declared(zf, obj.qualified):
                    if isinstance(obj.__dict__.get(name), torch.Tensor):
                        state[prefix + name] = obj.__dict__[name]
                todo += [(f"{prefix}{k}.", v) for k, v in obj.__dict__.items() if isinstance(v, _Object)]
    except pickle.UnpicklingError as err:
        raise refusal(path, what) from err
    except (StopIteration, zipfile.BadZipFile, KeyError, IndexError, ValueError, TypeError, AttributeError,
            RuntimeError, EOFError, OSError) as err:
        raise UnreadableFileError(f"Cannot read the {what} '{path}' as a TorchScript archive "
                                  f"({type(err).__name__}: {one_line(err, 200)}).") from err
    if not state:
        raise UnreadableFileError(f"The {what} '{path}' is a TorchScript archive without any declared weights.")
    return state


def openai_clip_state(path: str | os.PathLike, model: torch.nn.Module, what: str = "pretrained weights") -> dict:
    """An OpenAI CLIP archive's weights for open_clip's ``model``, as ``load_openai_model`` prepares them
    (``build_model_from_openai_state_dict``: the same names, minus three scalars the archive keeps as weights); buffers
    the model does not save (the text tower's attention mask) are rebuilt by the model, not loaded."""
    state = load_state_dict(path, what)
    for key in ("input_resolution", "context_length", "vocab_size"):
        state.pop(key, None)
    saved, buffers = model.state_dict(), dict(model.named_buffers())
    return {k: v for k, v in state.items() if k in saved or k not in buffers}
