"""The tensor-level functions: each converts its operands and applies one primitive (tinymoon.ops).

One module per family; this package re-exports them all, and `tm.<name>` re-exports this package.
"""
from .elementwise import *  # noqa: F401,F403
from .elementwise import _pair, abs, pow  # noqa: F401,A004

try:
    from .shape import *  # noqa: F401,F403
except ImportError as e:  # pragma: no cover - during bootstrap only
    if "shape" not in str(e):
        raise
try:
    from .reduce import *  # noqa: F401,F403
except ImportError as e:  # pragma: no cover
    if "reduce" not in str(e):
        raise
try:
    from .linalg import *  # noqa: F401,F403
except ImportError as e:  # pragma: no cover
    if "linalg" not in str(e):
        raise
try:
    from .nn import *  # noqa: F401,F403
except ImportError as e:  # pragma: no cover
    if "functional.nn" not in str(e) and "'nn'" not in str(e):
        raise
