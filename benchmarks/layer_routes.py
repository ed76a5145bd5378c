"""Per-layer routes to per-sample gradients: the measurements behind the rules' choices.

    python benchmarks/layer_routes.py [--batch 128] [--out benchmarks/results/layer_routes.json]

For the convolution and GroupNorm shapes of ResNet-20 and the small CNN, and the sequence
Linear shapes of the benchmark Transformer, it times the summed weight gradient that a plain
backward computes and the candidate ways of computing the per-sample gradients (or their
squared norms), and prints one table per layer kind (median milliseconds).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from _timing import median_ms
from adabatch.stats.rules.norm import channel_norm_backward


def conv_routes(b: int, c_in: int, c_out: int, side: int, repeats: int) -> dict[str, float]:
    x = torch.randn(b, c_in, side, side)
    w = torch.randn(c_out, c_in, 3, 3)
    d = torch.randn(b, c_out, side, side)
    args = ([1, 1], [1, 1], [1, 1], False, [0, 0])

    def summed() -> Tensor:
        return torch.ops.aten.convolution_backward(d, x, w, None, *args, 1, [False, True, False])[1]

    xx, dd = x.reshape(1, b * c_in, side, side), d.reshape(1, b * c_out, side, side)

    def grouped() -> Tensor:
        proxy = torch.empty(b * c_out, c_in, 3, 3)
        return torch.ops.aten.convolution_backward(
            dd, xx, proxy, None, *args, b, [False, True, False]
        )[1]

    def unfold_bmm() -> Tensor:
        u = F.unfold(x, 3, padding=1)
        return torch.bmm(d.view(b, c_out, -1), u.transpose(1, 2))

    return {
        "summed weight grad": median_ms(summed, repeats),
        "per-sample: batch-as-groups": median_ms(grouped, repeats),
        "per-sample: unfold + bmm": median_ms(unfold_bmm, repeats),
    }


def groupnorm_routes(b: int, channels: int, side: int, repeats: int) -> dict[str, float]:
    groups = 8
    a = torch.randn(b, channels, side, side)
    d = torch.randn(b, channels, side, side)
    _, mean, rstd = torch.native_group_norm(a, None, None, b, channels, side * side, groups, 1e-5)

    def xhat_route() -> tuple[Tensor, Tensor]:
        xhat = F.group_norm(a, groups, None, None, 1e-5)
        return (d * xhat).sum((2, 3)), d.sum((2, 3))

    def kernel_route() -> tuple[Tensor | None, Tensor, Tensor]:
        return channel_norm_backward(a, d, mean, rstd, groups)

    return {
        "x̂ then Σ δ⊙x̂": median_ms(xhat_route, repeats),
        "GroupNorm backward kernel": median_ms(kernel_route, repeats),
    }


def sequence_linear_routes(b: int, t: int, d_in: int, d_out: int, repeats: int) -> dict[str, float]:
    a = torch.randn(b, t, d_in)
    d = torch.randn(b, t, d_out)

    def summed() -> Tensor:
        return d.reshape(-1, d_out).t() @ a.reshape(-1, d_in)

    def materialise() -> tuple[Tensor, Tensor]:
        g = torch.bmm(d.transpose(1, 2), a).reshape(b, -1)
        return torch.ones(b) @ g, torch.dot(g.reshape(-1), g.reshape(-1))

    def gram() -> tuple[Tensor, Tensor]:
        kd = torch.bmm(d, d.transpose(1, 2))
        ka = torch.bmm(a, a.transpose(1, 2))
        return summed(), (kd * ka).sum()

    return {
        "summed weight grad": median_ms(summed, repeats),
        "S2 by block (grad + norms)": median_ms(materialise, repeats),
        "S2 by Gram (grad + norms)": median_ms(gram, repeats),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/layer_routes.json")
    args = parser.parse_args(argv)
    b = args.batch
    results: dict[str, dict[str, float]] = {}
    threads = torch.get_num_threads()
    print(f"per-sample gradient routes, b={b}, torch {torch.__version__}, {threads} threads (ms)\n")
    for c_in, c_out, side in ((3, 32, 32), (16, 16, 32), (32, 32, 16), (32, 64, 16), (64, 64, 8)):
        key = f"conv {c_in}->{c_out}, {side}x{side}"
        results[key] = conv_routes(b, c_in, c_out, side, args.repeats)
        print(f"{key:<30}" + "  ".join(f"{k}: {v:6.2f}" for k, v in results[key].items()))
    print()
    for channels, side in ((16, 32), (32, 16), (64, 8)):
        key = f"GroupNorm {channels} ch, {side}x{side}"
        results[key] = groupnorm_routes(b, channels, side, args.repeats)
        print(f"{key:<30}" + "  ".join(f"{k}: {v:6.2f}" for k, v in results[key].items()))
    print()
    for d_in, d_out in ((128, 384), (128, 128), (128, 512), (512, 128)):
        key = f"Linear {d_in}->{d_out}, b=32 T=64"
        results[key] = sequence_linear_routes(32, 64, d_in, d_out, args.repeats)
        print(f"{key:<30}" + "  ".join(f"{k}: {v:6.2f}" for k, v in results[key].items()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"batch": b, "torch": torch.__version__, "results": results}, indent=2)
    )
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
