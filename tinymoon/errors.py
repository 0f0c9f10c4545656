"""One small hierarchy of exceptions. Every message names the op, the shapes/dtypes/devices involved,
and what to do about it."""


class TinymoonError(Exception):
    """Base class of every error tinymoon raises on purpose."""


class ArgumentError(TinymoonError, ValueError, TypeError):
    """An argument outside what the function accepts (a negative seed, a missing generator, an unknown
    option). Both a ValueError and a TypeError, like the mistakes it stands for, so either guard catches it."""


class ShapeError(TinymoonError, ValueError):
    """Operands whose shapes do not fit together."""


class OutOfBoundsError(ShapeError, IndexError):
    """An index past the end of an axis. An IndexError too, so `for row in x` and `except IndexError` work."""


class DTypeError(TinymoonError, TypeError):
    """Operands whose dtypes do not fit together (tinymoon never promotes float32 <-> float64 silently)."""


class DeviceError(TinymoonError, RuntimeError):
    """Operands on different devices, or a device that is not available."""


class MissingRuleError(TinymoonError, NotImplementedError):
    """A primitive has no rule for the requested mode (jvp, vjp or vijp)."""


class NotInvertibleError(TinymoonError, ValueError):
    """A vijp that cannot be recovered: the layer erased information and no fragment was given, or the
    data path forks, or the Jacobian is singular there."""


class GradientError(TinymoonError, RuntimeError):
    """Misuse of the differentiation API (backward of a non-scalar without a cotangent, ...)."""


class CheckpointError(TinymoonError, ValueError):
    """A checkpoint that is corrupt, or that does not match what it is loaded into."""


class NonFiniteError(TinymoonError, FloatingPointError):
    """NaN or infinity where a finite number is required."""


class GradCheckError(TinymoonError, AssertionError):
    """A gradient identity failed in tinymoon.testing.check_grads."""


class LabelError(TinymoonError, ValueError):
    """Class labels that are not valid indices for the logits (out of range, wrong dtype or shape)."""


class DataUnavailableError(TinymoonError, ImportError):
    """A data set cannot be provided: its package is missing, of the wrong version, or its file is damaged.
    An ImportError too, so `except ImportError` (the usual guard for optional extras) catches it."""


class FewBitError(TinymoonError, ValueError):
    """Bad input to the few-bit tables: an unknown activation, a bad parameter, an invalid table."""


class AccuracyError(TinymoonError, ArithmeticError):
    """A result whose measured error exceeds the tolerance it was asked for (Moonwalk's sweep with anchors
    turned off, through an ill-conditioned network): raised instead of returning a wrong number."""
