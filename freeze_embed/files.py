"""Reading and writing files safely: nothing we read can run code, nothing we write is ever half there.

* :func:`atomic_write`: write to a temporary file in the same folder, flush and fsync, then ``os.replace`` it onto
  the target, so at every instant the target is either the previous good file or the new complete one (a kill, a
  preemption or a full disk in the middle leaves the previous file).
* :func:`write_json`: results files as strict JSON (a non-finite number becomes ``null``), written atomically;
  :func:`read_json` reads them back, strictly.
* :func:`load_torch`: ``torch.load(weights_only=True)``; a file that needs arbitrary pickle is refused in one sentence
  naming the file and the opt-in (``trust_pickle``) for files the user trusts.
* :func:`load_state_dict`: a weights file (``.safetensors``, or a torch file read as above) as a ``{name: tensor}``.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import tempfile
from typing import Any, Callable, Iterator, Optional

import torch

from freeze_embed.errors import FreezeEmbedError, one_line


class UnsafeFileError(FreezeEmbedError):
    """A file that can only be read by running arbitrary pickle code, and the user did not say they trust it."""


class UnreadableFileError(FreezeEmbedError):
    """A file that is missing, truncated or not in the expected format."""


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Yield a file object; on success it replaces ``path`` atomically, on any error ``path`` is left untouched."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; the finished file gets open()'s usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (best effort: not every FS allows it)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, inf) replaced by None, recursively: strict JSON has no NaN."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: Any, indent: Optional[int] = 2) -> None:
    """Strict JSON (non-finite numbers as ``null``), written atomically."""
    text = json.dumps(finite_or_none(obj), indent=indent, allow_nan=False)
    with atomic_write(path, "w") as f:
        f.write(text + "\n")



def read_json(path: str | os.PathLike) -> Any:
    """A file :func:`write_json` wrote: strict JSON (a NaN or Infinity in it is refused, as write_json never writes
    one)."""
    def refuse(constant: str):
        raise UnreadableFileError(f"'{os.fspath(path)}' is not strict JSON (it holds {constant}).")
    with open(path) as f:
        return json.load(f, parse_constant=refuse)

MODEL_OPT_IN = "--model.trust_pickle true (or trust_pickle=True)"
PICKLE_ERRORS = (pickle.UnpicklingError,)  # what torch.load(weights_only=True) raises for a file that needs full pickle


def refusal(path: str | os.PathLike, what: str = "file", opt_in: str = MODEL_OPT_IN) -> UnsafeFileError:
    """The one sentence for a file that only arbitrary pickle can read; ``opt_in`` is the flag that trusts it."""
    return UnsafeFileError(f"The {what} '{os.fspath(path)}' holds Python objects that only arbitrary pickle code can "
                           "rebuild, so it was not read (reading it could run code); if you trust the file (e.g. a "
                           f"checkpoint you wrote yourself with an older version), opt in with {opt_in}.")


@contextlib.contextmanager
def refusing_pickle(path: str | os.PathLike, what: str = "file", opt_in: str = MODEL_OPT_IN) -> Iterator[None]:
    """Around a library's own ``torch.load(weights_only=True)`` (timm's, open_clip's): its refusal (many lines of
    advice about torch internals, raised as is or wrapped, as timm does) becomes :func:`refusal`'s sentence."""
    try:
        yield
    except Exception as err:  # re-raised unless the refusal is behind it
        cause: Optional[BaseException] = err
        while cause is not None and not isinstance(cause, PICKLE_ERRORS):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise refusal(path, what, opt_in) from err


def load_torch(path: str | os.PathLike, what: str = "file", trust_pickle: bool = False,
               map_location: Any = "cpu", opt_in: str = MODEL_OPT_IN) -> Any:
    """``torch.load`` that cannot run code unless the user opted in; every failure is one sentence."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UnreadableFileError(f"The {what} '{path}' does not exist.")
    try:
        return torch.load(path, map_location=map_location, weights_only=not trust_pickle)
    except PICKLE_ERRORS as err:
        if trust_pickle:
            raise UnreadableFileError(f"Cannot read the {what} '{path}' ({type(err).__name__}).") from err
        raise refusal(path, what, opt_in) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise UnreadableFileError(f"Cannot read the {what} '{path}': it is truncated or not a PyTorch file "
                                  f"({type(err).__name__}: {one_line(err, 200)}).") from err


def load_strict(model: torch.nn.Module, state: Any, refuse: Callable[[str], FreezeEmbedError]) -> None:
    """``model.load_state_dict(state, strict=True)``; weights that do not fit (missing or unexpected keys, shapes, not
    a state dict at all) become ``refuse(detail)``, the library's message on one line."""
    try:
        model.load_state_dict(state, strict=True)
    except (TypeError, RuntimeError) as err:
        raise refuse(one_line(err)) from err


def load_state_dict(path: str | os.PathLike, what: str = "weights file", trust_pickle: bool = False,
                    opt_in: str = MODEL_OPT_IN) -> dict:
    """``{name: tensor}`` from a ``.safetensors`` file or a torch file (a bare state dict, or one under
    ``state_dict`` / ``model`` / ``module`` as training scripts save them)."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        if not os.path.isfile(path):
            raise UnreadableFileError(f"The {what} '{path}' does not exist.")
        from safetensors.torch import load_file
        try:
            return load_file(path, device="cpu")
        except Exception as err:  # safetensors raises its own error types for malformed files
            raise UnreadableFileError(f"Cannot read the {what} '{path}' as safetensors ({err}).") from err
    state = load_torch(path, what, trust_pickle, opt_in=opt_in)
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise UnreadableFileError(f"The {what} '{path}' holds a {type(state).__name__}, not a state dict of tensors.")
    return state
