"""Moonwalk: inverse-forward differentiation (Krylov, Karamzade & Fox, arXiv:2402.14212).

    import tinymoon as tm
    from tinymoon import moonwalk
    loss = moonwalk.backward(model, loss_fn, x, y)            # sets p.grad like loss_fn(model(x), y).backward()

Mixed mode (default): phase 1 computes the input cotangent h_0 with a reverse pass that keeps only
input-cotangent residuals (bit masks) and records the fragments of non-submersive layers; phase 2 sweeps
forward from (x_0, h_0), recomputing each layer, restoring its output cotangent with the vijp and taking
its parameter gradient with a local vjp. mode="forward" gets h_0 from jvps instead. anchors=K or "auto"
record true cotangents to bound the rounding error of the sweep. Baselines with the same signature:
`backprop`, `checkpointed_backward` (every √L layers), `revbackprop` (reversible networks), `naive_forward`.
"""
from .anchors import plan_anchors, unit_condition
from .baselines import backprop, checkpointed_backward, revbackprop
from .layers import flatten_units
from .mixed import Phase1, backward, input_cotangent, sweep
from .pure_forward import forward_input_cotangent, naive_forward

__all__ = ["backward", "input_cotangent", "sweep", "Phase1", "forward_input_cotangent", "naive_forward",
           "backprop", "checkpointed_backward", "revbackprop", "flatten_units", "plan_anchors", "unit_condition"]
