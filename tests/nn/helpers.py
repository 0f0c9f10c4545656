"""Shared checks for layer tests: input gradients through check_grads, parameter gradients against central
finite differences along a random direction."""
import numpy as np

import tinymoon as tm
from tinymoon.testing import assert_close, check_grads


def check_input_grads(layer, x, modes=("jvp", "vjp")):
    check_grads(lambda v: layer(v), [x], modes=modes)


def check_param_grads(layer, x, seed=0, eps=1e-6, rtol=1e-5, atol=1e-7):
    """d<u, layer(x)>/dθ from backward vs (L(θ + eps t) - L(θ - eps t)) / 2 eps for each parameter θ."""
    rng = np.random.default_rng(seed)
    x = tm.as_tensor(x)
    layer.zero_grad()
    y = layer(x)
    u = rng.standard_normal(y.shape)
    (y * tm.tensor(u)).sum().backward()
    checked = 0
    for name, p in layer.named_parameters():
        t = rng.standard_normal(p.shape)
        orig = p.data.copy()
        with tm.no_grad():
            p.data[...] = orig + eps * t
            lp = float(np.sum(layer(x).numpy() * u))
            p.data[...] = orig - eps * t
            lm = float(np.sum(layer(x).numpy() * u))
            p.data[...] = orig
        numeric = (lp - lm) / (2 * eps)
        analytic = float(np.sum(p.grad.numpy() * t))
        assert_close(analytic, numeric, rtol=rtol, atol=atol * max(1.0, abs(numeric)),
                     what=f"{type(layer).__name__} parameter {name}: backward vs finite differences")
        checked += 1
    return checked
