"""Import an optional dependency of the data set loaders, or say how to install it."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (numpy, sklearn, PIL, ...) or raise an ImportError saying how to get it.

    The loaders import these lazily, so that ``import adabatch`` needs only torch.

    Args:
        module: the module to import, e.g. ``"sklearn.datasets"``.
        purpose: what needs it, for the message (e.g. ``"reading LIBSVM files"``).

    Raises:
        ImportError: the module is not installed; the message names the extra to install.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{purpose} needs the optional dependency {module.split('.')[0]!r}, which is not "
            f'installed: pip install "adabatch[data]"'
        ) from exc
