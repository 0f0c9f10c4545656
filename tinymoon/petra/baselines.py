"""Baselines in the same framework.

- `train_backprop`: the reference — the whole model, one tape per micro-batch, forward, loss, backward,
  an optimiser step every k micro-batches (the same Recipe and the same averaged accumulation as the stages).
- `split(model, ..., method="tape")` + the "sync" schedule: backprop executed by the pipeline (stages keep
  their tape for the one micro-batch in flight) — for the per-stage memory of backprop.
- `split(model, ..., method="tape")` + the "petra" schedule: delayed gradients with stored activations
  (every stage keeps the tape of each of its 2(J-1-j) micro-batches in flight; the parameters used in
  backward are the current ones, as in the PETRA runs: no weight stashing).
"""
from __future__ import annotations

from ..autodiff.state import no_grad
from ..nn import CrossEntropyLoss
from ..tensor import Tensor
from .schedule import Schedule
from .simulator import Simulator
from .stages import Stage, split

__all__ = ["train_backprop", "delayed_gradients", "pipelined_backprop", "evaluate", "recalibrate_batchnorm"]


def train_backprop(model, batches, recipe, microbatches, loss=None, start=0):
    """Synchronous backprop over micro-batches start..microbatches-1; returns the list of losses."""
    whole = Stage(0, model, recipe)          # the same accumulation/step code as a PETRA stage
    loss_fn = loss or CrossEntropyLoss()
    losses = []
    for m in range(start, microbatches):
        x, labels = batches.get(m)
        out = model(Tensor._wrap(x))
        lv = loss_fn(out, Tensor._wrap(labels))
        lv.backward()
        losses.append(float(lv.data))
        whole._after_backward()
        whole.maybe_step()
    whole.flush()
    return losses


def delayed_gradients(model, batches, recipe, microbatches, stages=None, boundaries=None, trace=False):
    """A simulator running delayed gradients with stored activations (not yet run)."""
    st = split(model, stages, boundaries, recipe, method="tape")
    return Simulator(st, Schedule(len(st), microbatches, "petra"), batches, trace=trace)


def pipelined_backprop(model, batches, recipe, microbatches, stages=None, boundaries=None, trace=False):
    """A simulator running plain backprop stage by stage (the sync schedule, tapes kept; not yet run)."""
    st = split(model, stages, boundaries, recipe, method="tape")
    return Simulator(st, Schedule(len(st), microbatches, "sync"), batches, trace=trace)


def recalibrate_batchnorm(model, batches, count=50):
    """Re-estimate every BatchNorm's running statistics as the plain average over `count` training
    micro-batches, with the final weights ("precise BN"). The running averages kept during training lag
    behind weights that move fast (lr 0.1 with momentum), which is worth several points of test accuracy on
    short runs; recalibrating both methods alike makes the comparison about the weights."""
    from ..nn import BatchNorm2d
    norms = [m for m in model.modules() if isinstance(m, BatchNorm2d) and m.track_running_stats]
    if not norms:
        return
    saved = [n.momentum for n in norms]
    for n in norms:
        n.reset_running_stats()
    was = model.training
    model.train()
    with no_grad():
        for i in range(min(count, len(batches))):
            for n in norms:
                n.momentum = 1.0 / (i + 1)          # running = mean of the batch statistics so far
            model(Tensor._wrap(batches.get(i)[0]))
    for n, mom in zip(norms, saved):
        n.momentum = mom
    model.train(was)


def evaluate(model, images, labels, batch=500, prepare=None):
    """Accuracy (in %) of `model` in eval mode on (images, labels); `prepare` maps raw images to inputs."""
    was = model.training
    model.eval()
    correct = 0
    with no_grad():
        for i in range(0, len(labels), batch):
            x = images[i:i + batch]
            x = prepare(x) if prepare is not None else x
            out = model(Tensor._wrap(x)).data
            correct += int((out.argmax(axis=-1) == labels[i:i + batch]).sum())
    model.train(was)
    return 100.0 * correct / len(labels)
