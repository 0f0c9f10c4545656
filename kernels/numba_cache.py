"""Numba's on-disk cache, keyed by the whole kernels package instead of one file.

Numba (cache=True) keeps a compiled kernel next to its source, stamped with a hash of the file the function
is written in, and nothing else.  But the kernels here inline code from their neighbours: the few-bit
kernels inline pointwise.py's activation bodies, which inline vecmath.py's exp and Φ.  Edit vecmath.py and
fewbit.py's cached kernels still load, compiled from the old bodies: a stale kernel computing old numbers
with nothing to show for it (it happened while this package was written; the cure was deleting the cache).

So every function defined in this package gets one stamp: the hash of every .py file in the package
(kernels/ and kernels/cuda/).  A change to any of them makes every cached kernel here a miss, which Numba
then recompiles and overwrites.  An installed package never changes, so there this costs nothing; in a
checkout an edit costs one recompilation of what is used.

How: Numba finds a cache locator for each function by asking its locator classes in turn
(`CacheImpl._locator_classes`, `_CacheImpl` in older Numbas); the ones put first here answer only for files of this package, with the
package stamp, and are otherwise Numba's own (same cache folders).  That list is Numba's internal API: if a
Numba version lacks it, `install` leaves Numba as it is and says so in INSTALLED (the test then fails,
which is the point: a silent fallback would bring the stale kernels back).
"""
import hashlib
import os

PACKAGE = os.path.dirname(os.path.abspath(__file__))
INSTALLED = False


def _sources(root=PACKAGE):
    """Every .py file under root, sorted (relative path, absolute path)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        found += [(os.path.relpath(os.path.join(folder, f), root), os.path.join(folder, f))
                  for f in files if f.endswith(".py")]
    return sorted(found)


_memo = {}


def package_stamp(root=PACKAGE):
    """sha256 over the names and contents of root's .py files; recomputed only when a file's (mtime, size)
    or the set of files changes (Numba asks once per decorated function)."""
    files = _sources(root)
    key = (root, tuple((rel, os.stat(path).st_mtime_ns, os.stat(path).st_size) for rel, path in files))
    if key not in _memo:
        h = hashlib.sha256()
        for rel, path in files:
            with open(path, "rb") as f:
                h.update(rel.encode() + b"\0" + f.read() + b"\0")
        _memo.clear()
        _memo[key] = h.hexdigest()
    return _memo[key]


def _in_package(py_file):
    try:
        return os.path.commonpath([PACKAGE, os.path.abspath(py_file)]) == PACKAGE
    except ValueError:                     # another drive (Windows)
        return False


def _package_locator(base):
    """A subclass of Numba's locator `base` that answers for this package's files only, with the package
    stamp; same cache folder as `base`."""
    class PackageLocator(base):
        def get_source_stamp(self):
            return package_stamp()

        @classmethod
        def from_function(cls, py_func, py_file):
            if not _in_package(py_file):
                return None
            return super().from_function(py_func, py_file)

    PackageLocator.__name__ = PackageLocator.__qualname__ = "Package" + base.__name__.lstrip("_")
    return PackageLocator


def cache_impl():
    """Numba's cache implementation class holding the locator list, or None if this Numba has none."""
    try:
        from numba.core import caching
        impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl     # public name in recent Numbas
        impl._locator_classes
    except (ImportError, AttributeError):
        return None
    return impl


def install():
    """Put the package locators in front of Numba's (once; idempotent)."""
    global INSTALLED
    impl = cache_impl()
    if INSTALLED or impl is None:
        return
    bases = list(impl._locator_classes)
    ours = [_package_locator(b) for b in bases
            if b.__name__.lstrip("_") in ("UserProvidedCacheLocator", "InTreeCacheLocator",
                                          "UserWideCacheLocator")]
    if not ours:
        return
    impl._locator_classes[:0] = ours      # in place: subclasses that copied the list are not ours to touch
    INSTALLED = True


install()
