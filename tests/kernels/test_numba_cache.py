"""The kernels' Numba cache is stamped with the whole package (kernels/numba_cache.py): a kernel that inlines a
neighbour's code must not load from the cache after that neighbour changed."""
import importlib
import pkgutil

from numba.core.registry import CPUDispatcher

import tinymoon.kernels as K
from tinymoon.kernels import numba_cache as C
from tinymoon.kernels.threads import Kernel


def _cached_dispatchers():
    """Every cache=True CPU dispatcher defined in the kernels package (Kernel objects: both compilations)."""
    found = {}
    for info in pkgutil.walk_packages(K.__path__, K.__name__ + "."):
        if ".cuda" in info.name or info.name.endswith("cupy_impl"):
            continue                                   # device code: not Numba's CPU cache
        mod = importlib.import_module(info.name)
        for name, obj in vars(mod).items():
            for d in ((obj.parallel, obj.serial) if isinstance(obj, Kernel) else (obj,)):
                if isinstance(d, CPUDispatcher) and d._cache is not None and hasattr(d._cache, "_impl"):
                    found[f"{info.name}.{name}"] = d
    return found


def test_locators_installed_for_every_cached_kernel():
    assert C.INSTALLED, "numba_cache.install() could not hook Numba's cache locators (internal API changed?)"
    found = _cached_dispatchers()
    assert len(found) > 20, sorted(found)
    for name, d in found.items():
        loc = d._cache._impl._locator
        assert type(loc).__name__.startswith("Package"), (name, type(loc))
        assert loc.get_source_stamp() == C.package_stamp(), name


def test_package_stamp_follows_every_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    (tmp_path / "notes.txt").write_text("not python\n")
    s0 = C.package_stamp(str(tmp_path))
    (tmp_path / "notes.txt").write_text("changed\n")
    assert C.package_stamp(str(tmp_path)) == s0                       # only .py files count
    (tmp_path / "sub" / "b.py").write_text("y = 3\n")                 # a neighbour's body changed
    s1 = C.package_stamp(str(tmp_path))
    assert s1 != s0
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    assert C.package_stamp(str(tmp_path)) == s0                       # content, not time
    (tmp_path / "c.py").write_text("")
    assert C.package_stamp(str(tmp_path)) != s0                       # a new file


def test_functions_elsewhere_keep_numbas_own_locator(tmp_path):
    base = next(b for b in C.cache_impl()._locator_classes
                if not b.__name__.startswith("Package") and "InTree" in b.__name__)
    ours = C._package_locator(base)
    f = tmp_path / "elsewhere.py"
    f.write_text("def g():\n    return 1\n")
    ns = {}
    exec(compile(f.read_text(), str(f), "exec"), ns)
    assert ours.from_function(ns["g"], str(f)) is None               # not this package's: Numba's own answers
    assert C._in_package(C.__file__) and not C._in_package(str(f))


def test_install_is_idempotent():
    n = len(C.cache_impl()._locator_classes)
    C.install()
    C.install()
    assert len(C.cache_impl()._locator_classes) == n
