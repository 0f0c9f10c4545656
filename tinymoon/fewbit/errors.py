"""The one exception class of tinymoon.fewbit.

It is a `tinymoon.errors.TinymoonError` and a `ValueError`, so `except ValueError` keeps working for
callers that do not know tinymoon. (It can move into `tinymoon/errors.py` when the lead wishes.)
"""
from ..errors import TinymoonError


class FewBitError(TinymoonError, ValueError):
    """Bad input to the few-bit tables: an unknown activation, a bad parameter, an invalid table."""
