"""The exception of tinymoon.fewbit (defined in tinymoon.errors, the one hierarchy; re-exported here)."""
from ..errors import FewBitError

__all__ = ["FewBitError"]
