"""Moonwalk: inverse-forward differentiation (Krylov, Karamzade & Fox, arXiv:2402.14212), exact by default.

    import tinymoon as tm
    from tinymoon import moonwalk
    loss = moonwalk.backward(model, loss_fn, x, y)     # sets p.grad like loss_fn(model(x), y).backward()
    print(loss.report)                                 # anchors, bytes, measured error and error bound

Read top-down: units.py (a model as units and their kinds) → phase1.py (the input cotangent by a reverse pass
that keeps bits, fragments and anchors) → anchors.py (where to anchor, from the error the sweep would make)
→ phase2.py (the inverse-forward sweep, its error measured at every segment's end and repaired past
the tolerance) → gradient.py (`backward`, `step`). pure_forward.py gets h_0 from jvps instead; baselines.py
holds backprop, √L checkpointing and RevBackprop with the same signature.
"""
from .anchors import default_tol, forget
from .baselines import backprop, checkpointed_backward, revbackprop
from .gradient import backward, step
from .phase1 import Record, input_cotangent
from .pure_forward import check_sample_independence, forward_input_cotangent, naive_forward
from .report import Report
from .phase2 import relative_error, sweep
from .units import flatten_units

__all__ = ["backward", "step", "input_cotangent", "sweep", "Record", "Report", "forward_input_cotangent",
           "naive_forward", "check_sample_independence", "backprop", "checkpointed_backward", "revbackprop",
           "flatten_units", "default_tol", "forget", "relative_error"]
