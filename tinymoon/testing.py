"""check_grads: the one helper every gradient test goes through.

For f: tensors -> tensor, in float64, with random directions from a fixed seed, it checks
- "jvp":  forward mode against central finite differences, J t ~ (f(x + eps t) - f(x - eps t)) / 2 eps;
- "vjp":  reverse mode against forward mode by the adjoint identity <u, J t> = <u J, t>;
- "vijp": inverse mode along args[0] (the others held fixed): for x_bar = u J,
          vijp(x_bar, fragment(u)) = u and vjp(vijp(x_bar, fragment(u))) = x_bar; and where the chain
          erased something (a fragment is not None), that calling the vijp without fragments raises
          instead of returning a wrong cotangent;
- "hvp":  second order, for φ(x) = <u, f(x)>: the Hessian-vector product H t forward-over-reverse
          (tm.jvp of tm.grad) and reverse-over-reverse (tm.grad of <tm.grad φ, t>) against central finite
          differences of the gradient, (∇φ(x + eps t) - ∇φ(x - eps t)) / 2 eps, the two against each other
          (both exact: to rounding), and the symmetry of the Hessian, <s, H t> = <H s, t>.
Each failure raises GradCheckError naming the mode, the function, the shapes and the worst entry.
"""
from __future__ import annotations

import numpy as np

from . import backend
from .autodiff.forward import jvp
from .autodiff.inverse import vijp
from .autodiff.reverse import grad, vjp
from .errors import GradCheckError, NotInvertibleError
from .tensor import Tensor, as_tensor


def _np(x):
    return x.numpy() if isinstance(x, Tensor) else backend.to_device(x, "cpu")


def _fname(f):
    return getattr(f, "__name__", type(f).__name__)


def assert_close(actual, expected, rtol, atol, what):
    """Raise GradCheckError with the worst entry when actual and expected differ beyond tolerance."""
    a, e = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        raise GradCheckError(f"{what}: shapes differ, {a.shape} vs {e.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(e))):
        if np.array_equal(np.isnan(a), np.isnan(e)) and np.allclose(np.nan_to_num(a), np.nan_to_num(e), rtol, atol):
            return
        raise GradCheckError(f"{what}: non-finite values (actual has {np.sum(~np.isfinite(a))}, expected "
                             f"{np.sum(~np.isfinite(e))})")
    err = np.abs(a - e) - (atol + rtol * np.abs(e))
    if a.size and err.max() > 0:
        i = np.unravel_index(np.argmax(err), a.shape) if a.ndim else ()
        raise GradCheckError(
            f"{what}: max |actual - expected| = {np.max(np.abs(a - e)):.3e} (rtol={rtol}, atol={atol}); worst "
            f"entry {tuple(int(k) for k in i)}: actual {a[i]!r}, expected {e[i]!r}")


def check_grads(f, args, modes=("jvp", "vjp", "vijp"), eps=1e-6, rtol=1e-6, atol=1e-7, seed=0, wrt=None,
                device=None):
    """Check f's jvp, vjp and vijp rules (and with "hvp" in modes, its second derivatives) at `args` (float64
    arrays/tensors). Returns None or raises.

    wrt: indices of the arguments to differentiate (default: every float argument). The vijp check is
    along args[0]. device: run f there ('cpu', 'cuda'); the arguments, directions and cotangents are moved
    to it, the comparisons happen on the host. Default: where the arguments already are.
    """
    rng = np.random.default_rng(seed)
    xs = [as_tensor(a) for a in args]
    if device is not None:
        xs = [x.to(device).detach() for x in xs]
    dev = xs[0].device if xs else "cpu"

    def on_dev(a):                      # host random directions -> the arguments' device
        return backend.to_device(a, dev)

    if wrt is None:
        wrt = [i for i, x in enumerate(xs) if x.dtype.kind == "f"]
    for i in wrt:
        if xs[i].dtype != np.float64:
            raise GradCheckError(f"check_grads needs float64 inputs (argument {i} is {xs[i].dtype}): finite "
                                 "differences in float32 are too coarse to check anything")
    name = _fname(f)
    shapes = [tuple(x.shape) for x in xs]

    def call_with(sub):
        full = list(xs)
        for i, v in zip(wrt, sub):
            full[i] = v
        return f(*full)

    ts = [on_dev(rng.standard_normal(xs[i].shape)) for i in wrt]
    jt = None
    if "jvp" in modes or "vjp" in modes:
        out, jt = jvp(lambda *v: call_with(v), [xs[i] for i in wrt], ts)
        jt = _np(jt)
    if "jvp" in modes:
        plus = _np(call_with([Tensor._wrap(xs[i].data + eps * t) for i, t in zip(wrt, ts)]))
        minus = _np(call_with([Tensor._wrap(xs[i].data - eps * t) for i, t in zip(wrt, ts)]))
        numeric = (plus - minus) / (2 * eps)
        assert_close(jt, numeric, rtol=max(rtol, 1e-5), atol=max(atol, 1e-6),
                     what=f"check_grads[jvp] {name}{shapes}: jvp vs central finite differences")
    if "vjp" in modes:
        out, vjp_fn = vjp(lambda *v: call_with(v), *[xs[i] for i in wrt])
        u = rng.standard_normal(out.shape)
        cts = vjp_fn(on_dev(u))
        lhs = float(np.sum(u * jt))
        rhs = float(sum(np.sum(_np(c) * _np(t)) for c, t in zip(cts, ts)))
        assert_close(rhs, lhs, rtol=rtol, atol=atol * max(1.0, abs(lhs)),
                     what=f"check_grads[vjp] {name}{shapes}: adjoint identity <u, J t> vs <u J, t>")
    if "vijp" in modes:
        rest = list(xs)

        def along_first(x0):
            rest[0] = x0
            return f(*rest)

        out, vf = vijp(along_first, xs[0])
        u = rng.standard_normal(out.shape)
        frags = vf.fragments(on_dev(u))
        _, vjp_fn = vjp(along_first, xs[0])
        x_bar = _np(vjp_fn(on_dev(u))[0])
        y_rec = _np(vf(on_dev(x_bar), frags))
        scale = max(1.0, float(np.max(np.abs(u)))) if u.size else 1.0
        assert_close(y_rec, u, rtol=rtol * 10, atol=atol * 10 * scale,
                     what=f"check_grads[vijp] {name}{shapes}: vijp(u J, fragment(u)) vs u")
        assert_close(_np(vjp_fn(on_dev(y_rec))[0]), x_bar, rtol=rtol * 10, atol=atol * 10 * scale,
                     what=f"check_grads[vijp] {name}{shapes}: vjp(vijp(x_bar)) vs x_bar")
        if any(fr is not None for fr in frags):
            try:
                vf(on_dev(x_bar), None)
            except NotInvertibleError:
                pass
            else:
                raise GradCheckError(f"check_grads[vijp] {name}{shapes}: the chain erased cotangent components "
                                     "(a fragment was recorded) but the vijp without fragments did not raise")
    if "hvp" in modes:
        _check_second_order(f, xs, wrt, call_with, rng, on_dev, eps, rtol, atol, f"{name}{shapes}")


def _check_second_order(f, xs, wrt, call_with, rng, on_dev, eps, rtol, atol, what):
    """The "hvp" mode of check_grads (see the module docstring), over the arguments `wrt` jointly."""
    from . import functional as F
    from .autodiff.state import no_grad

    with no_grad():
        out = call_with([xs[i] for i in wrt])
    u = Tensor._wrap(on_dev(rng.standard_normal(out.shape)))

    def phi(*v):                                    # a scalar function whose Hessian mixes all of f's outputs
        return (call_with(v) * u).sum()

    nums = tuple(range(len(wrt)))

    def flat_grad(*v):                              # ∇φ(v), every argument's part flattened and joined
        gs = grad(phi, argnums=nums)(*v)
        return F.concatenate([g.reshape(-1) for g in gs])

    primals = [xs[i] for i in wrt]
    t = [on_dev(rng.standard_normal(p.shape)) for p in primals]
    s = [on_dev(rng.standard_normal(p.shape)) for p in primals]
    t_flat = np.concatenate([_np(a).ravel() for a in t])
    s_flat = np.concatenate([_np(a).ravel() for a in s])
    plus = _np(flat_grad(*[Tensor._wrap(p.data + eps * d) for p, d in zip(primals, t)]))
    minus = _np(flat_grad(*[Tensor._wrap(p.data - eps * d) for p, d in zip(primals, t)]))
    numeric = (plus - minus) / (2 * eps)
    h_t = _np(jvp(flat_grad, primals, t)[1])                    # forward-over-reverse
    scale = max(1.0, float(np.max(np.abs(numeric)))) if numeric.size else 1.0
    assert_close(h_t, numeric, rtol=max(rtol, 1e-5), atol=max(atol, 1e-6) * scale,
                 what=f"check_grads[hvp] {what}: forward-over-reverse H t vs finite differences of the gradient")
    t_dev = on_dev(t_flat)

    def along_t(*v):
        return (flat_grad(*v) * Tensor._wrap(t_dev)).sum()
    h_t_rr = np.concatenate([_np(g).ravel() for g in grad(along_t, argnums=nums)(*primals)])   # reverse-over-reverse
    assert_close(h_t_rr, h_t, rtol=1e-9, atol=1e-11 * scale,
                 what=f"check_grads[hvp] {what}: reverse-over-reverse H t vs forward-over-reverse")
    h_s = _np(jvp(flat_grad, primals, s)[1])
    lhs, rhs = float(s_flat @ h_t), float(h_s @ t_flat)
    assert_close(lhs, rhs, rtol=1e-9, atol=1e-11 * max(1.0, abs(lhs), scale),
                 what=f"check_grads[hvp] {what}: symmetry of the Hessian <s, H t> vs <H s, t>")
