"""The tensor-level functions: each converts its operands and applies one primitive (tinymoon.ops).

One module per family; this package re-exports them all (each family's `__all__`), and `tm.<name>`
re-exports this package's `__all__` — never the submodules themselves (so `functional.nn` cannot shadow
`tinymoon.nn`).
"""
from . import elementwise as _elementwise
from . import linalg as _linalg
from . import nn as _nn
from . import reduce as _reduce
from . import shape as _shape
from .elementwise import *  # noqa: F401,F403
from .elementwise import _operands  # noqa: F401
from .linalg import *  # noqa: F401,F403
from .nn import *  # noqa: F401,F403
from .reduce import *  # noqa: F401,F403
from .shape import *  # noqa: F401,F403

__all__ = [name for family in (_elementwise, _shape, _reduce, _linalg, _nn) for name in family.__all__]
