"""python -m tinymoon.bench petra [--quick] [--limit N] [--epochs E] ...

PETRA on a RevNet-style model for MNIST (stem | RevBlock | RevBlock | head: J = 4 stages):

1. memory — bytes each stage keeps between a micro-batch's forward and its backward (input FIFOs and, for the
   tape baselines, the residuals counted by tm.memory), for PETRA, delayed gradients with stored activations,
   and backprop; plus the peak residual bytes of one backward;
2. accuracy — test accuracy of PETRA (the simulator) and of backprop after the same number of epochs
   (BatchNorm statistics re-estimated with the final weights for both; the lagging running averages too);
3. throughput — the MPI executor (`mpiexec -n 4`) against one process doing the same work (the simulator),
   and the measured per-stage compute / communication split with the J-device prediction it implies.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

from .common import markdown, table, write_json


def _args(argv):
    p = argparse.ArgumentParser(prog="python -m tinymoon.bench petra", description=__doc__.split("\n\n")[1])
    p.add_argument("--quick", action="store_true", help="small: --limit 2048, 1 epoch, 1000 test images")
    p.add_argument("--limit", type=int, default=None, help="training samples (default: all 60000)")
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--micro-batch", type=int, default=64)
    p.add_argument("--k", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--warmup-epochs", type=float, default=0.5)
    p.add_argument("--ranks", type=int, default=4)
    p.add_argument("--throughput-limit", type=int, default=None, help="samples for the throughput runs")
    p.add_argument("--dataset", choices=("mnist", "synthetic"), default="mnist")
    p.add_argument("--skip", nargs="*", default=(), choices=("memory", "accuracy", "throughput"))
    p.add_argument("--from-json", nargs=2, metavar=("BACKPROP", "PETRA"), default=None,
                   help="take the accuracy part from two `python -m tinymoon.petra train --json` reports")
    p.add_argument("--out-dir", default="bench_results")
    a = p.parse_args(argv)
    if a.quick:
        a.limit = a.limit or 2048
        a.test_limit = a.test_limit or 1000
        a.epochs = 1.0 if a.epochs == 3.0 else a.epochs
        a.throughput_limit = a.throughput_limit or 1024
    a.throughput_limit = a.throughput_limit or 4096
    return a


def _train_argv(a, method, limit, epochs, extra=()):
    argv = ["train", "--dataset", a.dataset, "--model", "revnet", "--width", str(a.width), "--blocks", "2",
            "--stages", "4", "--micro-batch", str(a.micro_batch), "--k", str(a.k), "--lr", str(a.lr),
            "--warmup-epochs", str(a.warmup_epochs), "--epochs", str(epochs), "--method", method, "--quiet"]
    if limit:
        argv += ["--limit", str(limit)]
    if a.test_limit:
        argv += ["--test-limit", str(a.test_limit)]
    return argv + list(extra)


def memory_table(a):
    """Bytes held per stage, measured by running each method for a few micro-batches in the simulator."""
    from ..petra.baselines import delayed_gradients, pipelined_backprop
    from ..petra.train import _data, parser
    from ..petra.models import revnet_mnist
    from ..petra.recipe import Recipe
    from ..petra.schedule import Schedule
    from ..petra.simulator import Simulator
    from ..petra.stages import split
    args = parser().parse_args(_train_argv(a, "petra", 512, 1)[1:])
    batches, _, _ = _data(args)
    M, rec = 10, Recipe(lr=a.lr, micro_batch=a.micro_batch)
    runs = {
        "petra": Simulator(split(revnet_mnist(a.width, 2), 4, recipe=rec), Schedule(4, M), batches),
        "delayed": delayed_gradients(revnet_mnist(a.width, 2), batches, rec, M, stages=4),
        "backprop": pipelined_backprop(revnet_mnist(a.width, 2), batches, rec, M, stages=4),
    }
    for sim in runs.values():
        sim.run()
    rows = []
    for j in range(4):
        r = {"stage": j, "kind": runs["petra"].stages[j].kind}
        for name, sim in runs.items():
            r[f"{name}_held_B"] = sim.stages[j].max_held
            r[f"{name}_bwd_peak_B"] = sim.stages[j].backward_peak
        r["petra/backprop"] = r["petra_held_B"] / r["backprop_held_B"] if r["backprop_held_B"] else None
        r["petra/delayed"] = r["petra_held_B"] / r["delayed_held_B"] if r["delayed_held_B"] else None
        rows.append(r)
    tot = {"stage": "all", "kind": ""}
    for name in runs:
        tot[f"{name}_held_B"] = sum(r[f"{name}_held_B"] for r in rows)
        tot[f"{name}_bwd_peak_B"] = max(r[f"{name}_bwd_peak_B"] for r in rows)
    tot["petra/backprop"] = tot["petra_held_B"] / tot["backprop_held_B"]
    tot["petra/delayed"] = tot["petra_held_B"] / tot["delayed_held_B"]
    return rows + [tot]


def _run_petra(argv, mpi_ranks=None, timeout=3600):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "report.json")
        cmd = [sys.executable, "-m", "tinymoon.petra", *argv, "--json", out]
        if mpi_ranks:
            cmd = ["mpiexec", "-n", str(mpi_ranks)] + cmd
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
        with open(out) as f:
            return json.load(f)


def accuracy(a):
    if a.from_json:
        reps = [json.load(open(p)) for p in a.from_json]
    else:
        reps = [_run_petra(_train_argv(a, m, a.limit, a.epochs, ["--executor", "sim"])) for m in ("backprop", "petra")]
    bp, pe = reps
    return {"epochs": pe["config"]["epochs"], "train_samples": pe["config"]["limit"] or 60000,
            "backprop_acc": bp["test_accuracy"], "petra_acc": pe["test_accuracy"],
            "gap_points": bp["test_accuracy"] - pe["test_accuracy"],
            "backprop_acc_running_bn": bp.get("test_accuracy_running_stats"),
            "petra_acc_running_bn": pe.get("test_accuracy_running_stats"),
            "backprop_loss": bp["final_train_loss"], "petra_loss": pe["final_train_loss"],
            "backprop_s": bp["loop_s"], "petra_s": pe["loop_s"]}


def throughput(a):
    """The same PETRA run (same micro-batches, same arithmetic) by the simulator in one process and by the
    MPI executor on `ranks` processes; steady-state micro-batches per second (the pipeline full), and per
    stage the CPU seconds of compute (load-independent) and the measured communication, from which the
    J-device steady state is predicted: one micro-batch per max_j (compute_j + comm_j)."""
    argv = _train_argv(a, "petra", a.throughput_limit, 1)
    sim = _run_petra(argv + ["--executor", "sim"])
    M = sim["microbatches"]
    out = {"microbatches": M, "one_process_mb_per_s": sim.get("steady_microbatches_per_s"),
           "one_process_total_s": sim["loop_s"], "stages": []}
    mpi = None
    if shutil.which("mpiexec"):
        mpi = _run_petra(argv + ["--executor", "mpi"], mpi_ranks=a.ranks)
        out["mpi_mb_per_s"] = mpi.get("steady_microbatches_per_s")
        out["mpi_total_s"] = max(s["loop_s"] for s in mpi["stages"])
        if out["mpi_mb_per_s"] and out["one_process_mb_per_s"]:
            out["speedup_measured"] = out["mpi_mb_per_s"] / out["one_process_mb_per_s"]
    cost = []
    for j, s in enumerate(sim["stages"]):
        c = s["cpu_s"] / M
        row = {"stage": j, "kind": None, "compute_cpu_ms": 1e3 * c}
        comm = 0.0
        if mpi:
            m = mpi["stages"][j]
            comm = (m["send_s"] + m["xfer_s"]) / M
            row["mpi_compute_wall_ms"] = 1e3 * (m["forward_s"] + m["backward_s"] + m["step_s"]) / M
            row["mpi_wait_ms"] = 1e3 * m["wait_s"] / M
            row["comm_ms"] = 1e3 * comm
            row["sent_kB_per_mb"] = m["bytes_sent"] / M / 1e3
        cost.append(c + comm)
        out["stages"].append(row)
    seq = sum(s["cpu_s"] for s in sim["stages"]) / M
    out["one_process_cpu_ms_per_mb"] = 1e3 * seq
    out["predicted_J_device_ms_per_mb"] = 1e3 * max(cost)
    out["predicted_speedup_J_devices"] = seq / max(cost)
    out["cores"] = os.cpu_count()
    out["load_average"] = os.getloadavg()[0]
    return out


def run(argv):
    a = _args(argv)
    result = {"options": vars(a)}
    if "memory" not in a.skip:
        rows = memory_table(a)
        result["memory"] = rows
        cols = ["stage", "kind", "petra_held_B", "delayed_held_B", "backprop_held_B", "petra/backprop",
                "petra/delayed", "petra_bwd_peak_B", "backprop_bwd_peak_B"]
        print(table(rows, cols, title="bytes held between forward and backward, per stage (micro-batch "
                                      f"{a.micro_batch}, width {a.width})"))
        result["memory_markdown"] = markdown(rows, cols)
    if "accuracy" not in a.skip:
        acc = accuracy(a)
        result["accuracy"] = acc
        print(table([acc], list(acc), title="test accuracy (%) after the same epochs"))
    if "throughput" not in a.skip:
        th = throughput(a)
        result["throughput"] = th
        for r, st in zip(th["stages"], result.get("memory", [])):
            r["kind"] = st["kind"]
        print(table(th["stages"], list(th["stages"][0]), title=f"per stage, {th['microbatches']} micro-batches"))
        print(table([{k: v for k, v in th.items() if k != "stages"}],
                    [k for k in th if k != "stages"], title="throughput"))
    write_json("petra", result, a.out_dir)
    return result


if __name__ == "__main__":
    run(sys.argv[1:])
