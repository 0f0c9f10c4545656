"""The tensor-level functions: each converts its operands and applies one primitive (tinymoon.ops).

One module per family; this package re-exports them all, and `tm.<name>` re-exports this package.
"""
from .elementwise import *  # noqa: F401,F403
from .elementwise import _pair, abs, pow  # noqa: F401,A004

from .shape import *  # noqa: F401,F403
from .reduce import *  # noqa: F401,F403
from .linalg import *  # noqa: F401,F403
from .nn import *  # noqa: F401,F403
