"""Plot f' and its b-bit step approximations (the default tables) for the few-bit activations.

    python scripts/plot_fewbit_tables.py                  # docs/img/fewbit_tables.png (all continuous ones)
    python scripts/plot_fewbit_tables.py --names gelu --out docs/img/fewbit_gelu.png

One panel per activation; f' in black, the 1..4-bit tables as steps. Needs matplotlib.
"""
import argparse
import os

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--names", default=None, help="comma-separated activations (default: every continuous one)")
    p.add_argument("--bits", default="1,2,3,4", help="bit widths to draw (default 1,2,3,4)")
    p.add_argument("--xlim", type=float, default=6.0, help="plot x in [-XLIM, XLIM] (default 6)")
    p.add_argument("--out", default="docs/img/fewbit_tables.png")
    p.add_argument("--dpi", type=int, default=110, help="resolution (default 110: readable on a docs page)")
    args = p.parse_args(argv)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import tinymoon.fewbit as fb
    names = args.names.split(",") if args.names else fb.continuous_names()
    bits = [int(b) for b in args.bits.split(",")]
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    # one panel gets a full-width figure; a grid keeps each panel large enough to read its ticks and legend
    panel = (6.4, 4.2) if len(names) == 1 else (4.0, 3.0)
    fig, axes = plt.subplots(rows, cols, figsize=(panel[0] * cols, panel[1] * rows), squeeze=False)
    x = np.linspace(-args.xlim, args.xlim, 2001)
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(bits)))
    for ax, name in zip(axes.flat, names):
        ax.plot(x, fb.activation(name).derivative(x), color="black", lw=1.6, label="f'")
        for b, c in zip(bits, colors):
            t = fb.get_table(name, b)
            ax.plot(x, t.derivative(x), color=c, lw=1.0, label=f"{b} bit{'s' if b > 1 else ''}")
        ax.set_title(name, fontsize=12)
        ax.tick_params(labelsize=10)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=9, loc="upper left")
    fig.suptitle("f' and its DP-optimal b-bit step approximation (w = 1 on [-10, 10])", fontsize=13)
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    fig.savefig(args.out, dpi=args.dpi)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
