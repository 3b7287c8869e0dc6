"""Reading Python pickles of data (dicts, lists, text, numbers and numpy arrays) without running any code.

A pickle names the functions that rebuild its objects, and ``pickle.load`` calls them: a crafted data file can run
anything. ``load_data_pickle`` admits only the few callables a pickle of plain data and numpy arrays needs (numpy's
array and dtype reconstruction; text-to-bytes encoding in Latin-1, which Python 3 pickles of ``bytes`` use); any
other name in the file is refused before it is looked up.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from weakdml.errors import UserError


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles of bytes call it, limited to Latin-1."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"encoding {encoding!r} is not allowed")
    return codecs.encode(text, "latin1")


_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's array reconstruction, wherever this numpy keeps it
_FROM_BUFFER = np.ndarray.__reduce_ex__(np.zeros(1), 5)[0]  # the same for protocol-5 pickles
_ALLOWED = {
    **{(module, "_reconstruct"): _RECONSTRUCT for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "_frombuffer"): _FROM_BUFFER for module in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a data file has no use for")
        return _ALLOWED[(module, name)]


def load_data_pickle(path: Path) -> Any:
    """The data in the pickle at ``path`` (read as Python 2 pickles are, with Latin-1 text); a file that is not a
    pickle of plain data is a UserError naming it, and nothing in it is run."""
    try:
        with open(path, "rb") as handle:
            return _DataUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise UserError(f"{path} is not a pickle of plain data ({reason}); replace it with the official file") from None
