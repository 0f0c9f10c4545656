"""The training driver behind `python -m tinymoon.petra train`: builds the data, the model and its stages
from the options, runs one executor (simulator, MPI, or the backprop baseline), evaluates, reports.

Every rank builds the whole model from the seed (so all start from the same parameters) and keeps its own
stages; only stage 0 reads the data (the labels travel with the activations).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

from .. import data
from ..serialization import save
from .baselines import evaluate, recalibrate_batchnorm, train_backprop
from .batches import MicroBatches
from .models import revnet_mnist, tiny_mlp
from .mpi import FAULT_MODES, fire
from .recipe import Recipe
from .schedule import Schedule
from .simulator import Simulator
from .stages import PetraError, split
from .watchdog import launcher_rank_size, supervise

__all__ = ["parser", "build", "train"]

MNIST_NORM = (0.1307, 0.3081)


def parser():
    p = argparse.ArgumentParser(prog="python -m tinymoon.petra train",
                                description="Train with PETRA (decoupled reversible stages) or a baseline.")
    a = p.add_argument
    a("--dataset", choices=("synthetic", "mnist"), default="synthetic")
    a("--limit", type=int, default=None, help="use only the first N training samples")
    a("--test-limit", type=int, default=None, help="evaluate on the first N test samples")
    a("--synthetic-n", type=int, default=512, help="synthetic training samples")
    a("--model", choices=("tiny", "revnet"), default="tiny")
    a("--width", type=int, default=8)
    a("--blocks", type=int, default=2, help="RevBlocks (one stage piece each)")
    a("--dtype", choices=("float32", "float64"), default="float32")
    a("--stages", type=int, default=None, help="J >= 1 (default: one per top-level piece: blocks + 2)")
    a("--epochs", type=float, default=1.0)
    a("--micro-batch", type=int, default=32)
    a("--k", type=int, default=1, help="gradient accumulation: an optimiser step every k micro-batches")
    a("--lr", type=float, default=0.1)
    a("--momentum", type=float, default=0.9)
    a("--no-nesterov", action="store_true")
    a("--weight-decay", type=float, default=0.0, help="never applied to biases and norm parameters")
    a("--lr-scaling", action="store_true", help="Goyal scaling: lr * micro_batch * k / 256")
    a("--warmup-epochs", type=float, default=0.0, help="linear warm-up length, in epochs")
    a("--seed", type=int, default=0)
    a("--method", choices=("petra", "sync", "delayed", "backprop"), default="petra",
      help="petra: decoupled; sync: PETRA stages without delay; delayed: stored activations with delay; "
           "backprop: the plain reference")
    a("--executor", choices=("auto", "sim", "mpi"), default="auto",
      help="auto: mpi when started by mpiexec with more than one process, else the simulator")
    a("--checkpoint", default=None, help="checkpoint directory (one stage-<j>.npz per stage)")
    a("--checkpoint-every", type=int, default=None, help="ticks between checkpoints")
    a("--stop-at-tick", type=int, default=None, help="stop (and checkpoint) at this tick")
    a("--resume", action="store_true", help="resume from --checkpoint")
    a("--timeout", type=float, default=60.0,
      help="MPI: seconds a rank may go unheard (no heartbeat) before it is presumed dead or hung; also bounds "
           "MPI start-up and shut-down (docs/petra.md, Failure model)")
    a("--inject-fault", default=None, metavar="RANK:WHEN[:MODE]",
      help="MPI: make a rank fail (tests). WHEN: a tick, 'init' (before MPI start-up) or 'setup' (after it, "
           "before tick 0); MODE: raise (default), exit, kill, term, hang")
    a("--out", default=None, help="write the final model state_dict here (tm.save)")
    a("--json", default=None, help="write the run's report (losses, accuracy, timings, per-stage stats) here")
    a("--trace", action="store_true", help="simulator: print who holds what at every tick")
    a("--quiet", action="store_true")
    return p


def _data(args):
    if args.dataset == "mnist":
        xtr, ytr = data.mnist("train")
        xte, yte = data.mnist("test")
        norm = MNIST_NORM
    else:
        size = 28 if args.model == "revnet" else 4
        xtr, ytr = data.synthetic(args.synthetic_n, shape=(1, size, size), classes=10 if args.model == "revnet"
                                  else 4, seed=args.seed, split="train")
        xte, yte = data.synthetic(max(256, args.synthetic_n // 4), shape=(1, size, size),
                                  classes=10 if args.model == "revnet" else 4, seed=args.seed, split="test")
        norm = None
    if args.test_limit is not None:
        xte, yte = xte[:args.test_limit], yte[:args.test_limit]
    train = MicroBatches(xtr, ytr, args.micro_batch, seed=args.seed, normalize=norm, dtype=args.dtype,
                         limit=args.limit)
    return train, xte, yte


def _model(args):
    if args.model == "revnet":
        return revnet_mnist(width=args.width, blocks=args.blocks, seed=args.seed, dtype=args.dtype)
    return tiny_mlp(in_features=16, width=args.width, classes=4, blocks=args.blocks, seed=args.seed, dtype=args.dtype)


def meta(args, microbatches):
    """What a checkpoint must agree on to be resumed (not the executor: sim and MPI checkpoints mix)."""
    keys = ("dataset", "limit", "synthetic_n", "model", "width", "blocks", "dtype", "stages", "micro_batch", "k",
            "lr", "momentum", "no_nesterov", "weight_decay", "lr_scaling", "warmup_epochs", "seed", "method")
    out = {k: getattr(args, k) for k in keys}
    out["microbatches"] = microbatches
    return out


def build(args, beat=None):
    """(model, stages, schedule, micro-batches, test images, test labels, recipe). `beat()` is called between
    the slow parts (an MPI rank's heartbeat, so that its peers hear from it while it loads the data)."""
    beat = beat or (lambda: None)
    batches, xte, yte = _data(args)
    beat()
    model = _model(args)
    beat()
    microbatches = int(math.floor(args.epochs * batches.per_epoch))
    k = args.k
    steps_per_epoch = max(1, batches.per_epoch // k)
    recipe = Recipe(lr=args.lr, momentum=args.momentum, nesterov=not args.no_nesterov and args.momentum > 0,
                    weight_decay=args.weight_decay, k=k, micro_batch=args.micro_batch, lr_scaling=args.lr_scaling,
                    warmup_steps=int(round(args.warmup_epochs * steps_per_epoch)))
    if args.stages is not None and args.stages < 1:
        raise PetraError(f"--stages must be at least 1, got {args.stages} (leave it out for one stage per piece)")
    J = len(model) if args.stages is None else args.stages
    stages = None
    if args.method != "backprop":
        stages = split(model, J, recipe=recipe, method="tape" if args.method == "delayed" else "petra")
    mode = "sync" if args.method == "sync" else "petra"
    schedule = Schedule(J, microbatches, mode)
    return model, stages, schedule, batches, xte, yte, recipe


def _use_mpi(args):
    if args.executor == "sim":
        return False
    if args.executor == "mpi":
        return True
    _, size = launcher_rank_size()
    if size is not None:              # never import mpi4py here: MPI_Init would wait without a deadline
        return size > 1
    if "PMIX_RANK" not in os.environ:
        return False
    from mpi4py import MPI
    return MPI.COMM_WORLD.Get_size() > 1


def _parse_fault(spec):
    if spec is None:
        return None
    parts = spec.split(":")
    mode = parts[2] if len(parts) > 2 else "raise"
    try:
        if len(parts) not in (2, 3) or mode not in FAULT_MODES:
            raise ValueError
        when = parts[1] if parts[1] in ("init", "setup") else int(parts[1])
        return int(parts[0]), when, mode
    except ValueError:
        raise ValueError(f"--inject-fault: expected RANK:WHEN[:MODE] with WHEN a tick, 'init' or 'setup' and "
                         f"MODE one of {', '.join(FAULT_MODES)}; got {spec!r}") from None


def check_args(args):
    """Refuse option values that would otherwise be silently replaced or make no sense."""
    if args.stages is not None and args.stages < 1:
        raise ValueError(f"--stages must be at least 1, got {args.stages} (leave it out for one per piece)")
    if not args.timeout > 0:
        raise ValueError(f"--timeout must be > 0 seconds, got {args.timeout}")
    if args.checkpoint_every is not None and args.checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every must be at least 1 tick, got {args.checkpoint_every}")
    _parse_fault(args.inject_fault)


def train(args, channel=None, log=print):
    """Run one training as the options say; returns the report dict (on rank 0; None on other ranks)."""
    model, stages, schedule, batches, xte, yte, recipe = build(args, None if channel is None else channel.beat)
    info = meta(args, schedule.microbatches)
    rank, stats, executor = 0, None, None
    t0 = time.perf_counter()
    if args.method == "backprop":
        start = 0
        losses = train_backprop(model, batches, recipe, schedule.microbatches, start=start)
        loop_s = time.perf_counter() - t0
        head_losses = [(m, v) for m, v in enumerate(losses)]
    else:
        if channel is not None:
            from .mpi import MPIExecutor
            executor = MPIExecutor(stages, schedule, batches, channel=channel, timeout=args.timeout, meta=info,
                                   inject=_parse_fault(args.inject_fault))
            rank = executor.rank
        else:
            executor = Simulator(stages, schedule, batches, trace=args.trace, meta=info)
        if args.resume:
            if not args.checkpoint:
                raise ValueError("--resume needs --checkpoint DIR")
            executor.resume(args.checkpoint)
            if not args.quiet and rank == 0:
                log(f"resumed from {args.checkpoint} at tick {executor.tick}")
        t1 = time.perf_counter()
        executor.run(until=args.stop_at_tick, checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every)
        loop_s = time.perf_counter() - t1
        if channel is not None:
            stats = executor.gather()
            channel.finish()            # the distributed part is over: MPI is finalised on every rank
        else:
            from .mpi import stage_stats
            stats = [dict(stage_stats(s), rank=0, loop_s=loop_s) for s in stages]
        if rank != 0:
            return None
        head_losses = [(m, v) for m, v, _, _ in stages[-1].losses]
        if args.trace:
            log(executor.render_trace())
    finished = executor is None or executor.tick >= schedule.ticks
    report = {"config": vars(args), "microbatches": schedule.microbatches, "ticks": schedule.ticks,
              "finished": finished, "loop_s": loop_s, "stages": stats,
              "losses": [float(v) for _, v in head_losses]}
    if executor is not None and schedule.mode == "petra" and not args.resume:
        # steady state: one micro-batch per tick from tick 2(J-1) on, until the pipeline drains
        a, b = 2 * (schedule.stages - 1), schedule.microbatches - 1
        tt = executor.tick_times
        if b - a >= 2 and len(tt) > b:
            report["steady_microbatches_per_s"] = (b - a) / (tt[b] - tt[a])
    if finished:
        report["test_accuracy_running_stats"] = evaluate(model, xte, yte, prepare=batches.prepare)
        if args.out:
            save({k: v for k, v in model.state_dict().items()}, args.out)
        recalibrate_batchnorm(model, batches)
        report["test_accuracy"] = evaluate(model, xte, yte, prepare=batches.prepare)
        report["microbatches_per_s"] = schedule.microbatches / loop_s if loop_s > 0 else None
    n_last = min(len(head_losses), batches.per_epoch)
    report["final_train_loss"] = float(np.mean([v for _, v in head_losses[-n_last:]])) if n_last else None
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=float)
    if not args.quiet:
        what = f"{args.method} J={schedule.stages}" + (f" on {executor.size} MPI ranks" if channel is not None else "")
        acc = f", test accuracy {report['test_accuracy']:.2f}%" if finished else f", stopped at tick {executor.tick}"
        log(f"{what}: {schedule.microbatches} micro-batches in {loop_s:.2f} s, final train loss "
            f"{report['final_train_loss']}{acc}")
    return report


def main(argv, log=print):
    p = parser()
    args = p.parse_args(argv)
    try:
        check_args(args)
    except ValueError as e:
        p.error(str(e))
    if not _use_mpi(args):
        train(args, None, log)
        return 0
    rank, size = launcher_rank_size()
    return supervise(lambda link: _mpi_main(args, log, link), 0 if rank is None else rank, size or 1, args.timeout)


def _mpi_main(args, log, link):
    """One MPI rank (the watchdog's child), with the fault protocol: never hang, always name the failed rank."""
    import traceback
    fault = _parse_fault(args.inject_fault)
    env_rank, _ = launcher_rank_size()
    if fault is not None and fault[1] == "init" and fault[0] == env_rank:
        try:
            fire(*fault)
        except RuntimeError as e:
            print(f"petra rank {env_rank}: failed before MPI start-up: {type(e).__name__}: {e}", file=sys.stderr,
                  flush=True)
            link.reported()
            return 2
    link.phase("init")
    from mpi4py import MPI                   # MPI_Init: bounded by the watchdog (it may wait for a stalled rank)
    link.phase("ready")

    from .mpi import Channel, PeerFailed, PeerTimeout
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    channel = Channel(comm, args.timeout, link=link)
    grace = min(args.timeout, 10.0, max(1.0, args.timeout / 4))
    try:
        if fault is not None and fault[1] == "setup" and fault[0] == rank:
            fire(*fault)
        train(args, channel, log)
        return 0
    except PeerFailed as e:
        if e.rank < 0:
            print(f"petra rank {rank}: stopping: {e.reason}", file=sys.stderr, flush=True)
        else:
            print(f"petra rank {rank}: stopping because rank {e.rank} failed: {e.reason}", file=sys.stderr,
                  flush=True)
        link.reported()
        channel.ack(e.sender)
        time.sleep(grace + min(5.0, args.timeout))   # the failing rank aborts the job; if it cannot, leave
        os._exit(3)
    except BaseException as e:               # noqa: BLE001  (this rank failed: tell everyone, then abort)
        if channel.closed:                   # after MPI_Finalize: a failure of rank 0's own epilogue
            traceback.print_exc()
            print(f"petra rank {rank}: failed after the distributed run: {type(e).__name__}: {e}",
                  file=sys.stderr, flush=True)
            link.reported()
            return 1
        if isinstance(e, PeerTimeout):
            culprit, reason = e.rank, f"{e} (detected by rank {rank})"
        else:
            at = f" at tick {channel.tick}" if channel.tick is not None else " during set-up (before tick 0)"
            culprit, reason = rank, f"rank {rank} failed{at}: {type(e).__name__}: {e}"
            traceback.print_exc()
        print(f"petra rank {rank}: {reason}", file=sys.stderr, flush=True)
        link.reported()
        channel.broadcast_abort(reason, culprit)
        missing = channel.wait_acks(grace)
        if missing:
            print(f"petra rank {rank}: ranks {missing} did not acknowledge (dead?); aborting all",
                  file=sys.stderr, flush=True)
        sys.stdout.flush()
        comm.Abort(2)
        os._exit(2)
