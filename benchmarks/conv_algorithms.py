"""Could a different convolution algorithm make the CPU training step faster? The trainer's 3×3 convolutions
(torch's direct oneDNN kernel) against Winograd F(2×2, 3×3) written with torch operations (2.25× fewer
multiplications: the only way to fewer FLOP for the same function), on the shapes of train_vs_original.py's
step (celebahq-1024 at `--fmap-base`, the 1-GPU preset's minibatch, the block's C -> C convolution at each
resolution), forward alone and forward + backward (weights and inputs), fp32, in one process and one run.

First the rates of matrix products (a square one, and the 4×4 block's dense layers as products, as 1×1
convolutions and through oneDNN's inner product). Then per resolution: direct and Winograd milliseconds, their
ratio (> 1: Winograd faster), Winograd's tile transforms alone (input and output, forward: what it costs whatever
the product's speed) and its batched product alone (MKL's batched sgemm: what it would cost if the transforms were
free), the largest error of Winograd relative to the output's largest value, and the GFLOP/s of the direct forward.
Then D's fused conv + downscale (a 4×4 stride-2 convolution) as the trainer runs it, in channels_last, and as a
2×2 convolution of space-to-depth blocks. Last, what one trainer step (train_step_variants' step, the same
shapes) spends in convolutions, in matrix products and in everything else (torch.profiler), and so the most that
speeding up everything else could give.

    python benchmarks/conv_algorithms.py [--resolutions 4,8,16,32,64] [--fmap-base 2048] [--threads 2]
        [--repeats 3] [--record]
"""

from __future__ import annotations

import math
import time

import results_record
import torch
import torch.nn.functional as F
from train_step_variants import make_step, parse_step_shapes, step_shape_parser

from progan.networks import feature_maps

FILTER_TRANSFORM = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def winograd_input_tiles(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] (H, W even) -> [16, C, N·H/2·W/2]: B^T d B of every 4×4 tile (stride 2, zero padding 1)."""
    N, C, H, W = x.shape
    tiles = F.pad(x, (1, 1, 1, 1)).unfold(2, 4, 2).unfold(3, 4, 2).permute(4, 5, 1, 0, 2, 3)  # 4 4 C N T S
    rows = (tiles[0] - tiles[2], tiles[1] + tiles[2], tiles[2] - tiles[1], tiles[1] - tiles[3])
    columns = [part for row in rows for part in (row[0] - row[2], row[1] + row[2], row[2] - row[1], row[1] - row[3])]
    return torch.stack(columns).reshape(16, C, N * (H // 2) * (W // 2))


def winograd_output(products: torch.Tensor, N: int, H: int, W: int) -> torch.Tensor:
    """[16, K, N·H/2·W/2] -> [N, K, H, W]: A^T m A of every tile, tiles put back in place."""
    K = products.shape[1]
    m = products.reshape(4, 4, K, N, H // 2, W // 2)
    top, bottom = m[0] + m[1] + m[2], m[1] - m[2] - m[3]
    corners = [torch.stack((row[0] + row[1] + row[2], row[1] - row[2] - row[3]), -1) for row in (top, bottom)]
    return torch.stack(corners, -2).permute(1, 0, 2, 4, 3, 5).reshape(N, K, H, W)


def winograd_conv3x3(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """F.conv2d(x, weight, padding=1) by Winograd F(2×2, 3×3). x: [N, C, H, W], weight: [K, C, 3, 3]."""
    G = FILTER_TRANSFORM.to(weight)
    U = (G @ weight @ G.T).permute(2, 3, 0, 1).reshape(16, weight.shape[0], weight.shape[1])
    N, _, H, W = x.shape
    return winograd_output(torch.bmm(U, winograd_input_tiles(x)), N, H, W)


def direct_conv3x3(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, weight, padding=1)


def strided_conv4x4(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """D's fused conv + downscale as the trainer runs it: a 4×4 stride-2 convolution, padding 1."""
    return F.conv2d(x, weight, stride=2, padding=1)


def strided_conv4x4_channels_last(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x.contiguous(memory_format=torch.channels_last), weight, stride=2, padding=1).contiguous()


def strided_conv4x4_space_to_depth(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The same convolution as a stride-1 2×2 convolution of the padded input's 2×2 pixel blocks stacked as
    channels (the same products and sums in another order)."""
    K, C = weight.shape[:2]
    blocks = F.pixel_unshuffle(F.pad(x, (1, 1, 1, 1)), 2)  # channel c·4 + dy·2 + dx
    kernel = weight.reshape(K, C, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(K, 4 * C, 2, 2)
    return F.conv2d(blocks, kernel)


def milliseconds(function, repeats: int) -> float:
    """Best of `repeats` calls after one warm-up, in ms."""
    function()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best * 1e3


def forward_backward(conv, x: torch.Tensor, weight: torch.Tensor):
    def run():
        x.grad = weight.grad = None
        out = conv(x, weight)
        out.backward(torch.ones_like(out))
    return run


def product_rates(repeats: int, minibatch: int, channels: int) -> list[str]:
    """GFLOP/s of matrix products on these cores: a square 2048³ one, and the 4×4 block's dense layers (latent ->
    16·C in G, 16·C -> C in D) at `minibatch`, as products (the trainer: MKL's sgemm), as 1×1 convolutions
    (oneDNN) and, where this torch has it, through oneDNN's inner product (`torch.ops.mkldnn._linear_pointwise`,
    an internal operator of torch's compiler, forward only)."""
    inner_product = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    forms = {"as a matrix product": lambda a, b: a @ b.T,
             "as a 1×1 convolution": lambda a, b: F.conv2d(a[:, :, None, None], b[:, :, None, None])}
    if inner_product is not None:
        forms["as oneDNN's inner product"] = lambda a, b: inner_product(a, b, None, "none", [], "")
    lines = []
    for rows, inner, columns, what in ((2048, 2048, 2048, "2048³"),
                                       (minibatch, channels, 16 * channels, "G's dense layer"),
                                       (minibatch, 16 * channels, channels, "D's dense layer")):
        a, b = torch.randn(rows, inner), torch.randn(columns, inner)
        gflop = 2 * rows * inner * columns / 1e9
        rates = [f"{gflop / milliseconds(lambda form=form, a=a, b=b: form(a, b), repeats) * 1e3:.0f} {name}"
                 for name, form in forms.items()]
        lines.append(f"{what} ({rows}×{inner} by {inner}×{columns}), GFLOP/s: " + ", ".join(rates))
    return lines


CONVOLUTION_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution",
                   "aten::convolution", "aten::conv2d", "aten::conv_transpose2d")
PRODUCT_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul")


def step_shares(config, resolution: int, lod: float, minibatch: int) -> tuple[float, float]:
    """Shares of one trainer step's CPU time (torch.profiler, self time of each operator) spent in convolutions and
    in matrix products."""
    step = make_step(config, resolution, lod, minibatch, "weights once per D step")
    step()  # warm-up
    with torch.profiler.profile() as profile:
        step()
    events = profile.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    convolutions = sum(event.self_cpu_time_total for event in events if event.key in CONVOLUTION_OPS)
    products = sum(event.self_cpu_time_total for event in events if event.key in PRODUCT_OPS)
    return convolutions / total, products / total


def row(resolution: int, minibatch: int, channels: int, repeats: int) -> list[str]:
    torch.manual_seed(resolution)
    x = torch.randn(minibatch, channels, resolution, resolution, requires_grad=True)
    weight = torch.randn(channels, channels, 3, 3, requires_grad=True)
    with torch.no_grad():
        reference = direct_conv3x3(x, weight)
        error = ((winograd_conv3x3(x, weight) - reference).abs().max() / reference.abs().max()).item()
        forward = {conv.__name__: milliseconds(lambda conv=conv: conv(x, weight), repeats)
                   for conv in (direct_conv3x3, winograd_conv3x3)}
        U = torch.randn(16, channels, channels)
        V = winograd_input_tiles(x)
        product = milliseconds(lambda: torch.bmm(U, V), repeats)
        M = torch.bmm(U, V)
        transforms = milliseconds(lambda: winograd_input_tiles(x), repeats) + milliseconds(
            lambda: winograd_output(M, minibatch, resolution, resolution), repeats)
    both = {conv.__name__: milliseconds(forward_backward(conv, x, weight), repeats)
            for conv in (direct_conv3x3, winograd_conv3x3)}
    gflop = 2 * minibatch * channels * channels * 9 * resolution * resolution / 1e9
    return [f"{resolution}²", f"{minibatch}", f"{channels}",
            f"{forward['direct_conv3x3']:.1f}", f"{forward['winograd_conv3x3']:.1f}",
            f"{forward['direct_conv3x3'] / forward['winograd_conv3x3']:.2f}×", f"{transforms:.1f}", f"{product:.1f}",
            f"{both['direct_conv3x3']:.1f}", f"{both['winograd_conv3x3']:.1f}",
            f"{both['direct_conv3x3'] / both['winograd_conv3x3']:.2f}×", f"{error:.1e}",
            f"{gflop / forward['direct_conv3x3'] * 1e3:.0f}"]


STRIDED = (strided_conv4x4, strided_conv4x4_channels_last, strided_conv4x4_space_to_depth)


def strided_row(resolution: int, minibatch: int, channels: int, out_channels: int, repeats: int) -> list[str]:
    """D's conv + downscale at `resolution` (C -> C_out, 4×4, stride 2) three ways: ms forward, forward + backward,
    and the two alternatives' largest error relative to the output's largest value."""
    torch.manual_seed(resolution)
    x = torch.randn(minibatch, channels, resolution, resolution, requires_grad=True)
    weight = torch.randn(out_channels, channels, 4, 4, requires_grad=True)
    with torch.no_grad():
        reference = strided_conv4x4(x, weight)
        errors = [((conv(x, weight) - reference).abs().max() / reference.abs().max()).item() for conv in STRIDED[1:]]
        forward = [milliseconds(lambda conv=conv: conv(x, weight), repeats) for conv in STRIDED]
    both = [milliseconds(forward_backward(conv, x, weight), repeats) for conv in STRIDED]
    return [f"{resolution}²", f"{minibatch}", f"{channels} -> {out_channels}",
            *(f"{value:.1f}" for value in forward), *(f"{value:.1f}" for value in both),
            *(f"{value:.0e}" for value in errors)]


def main() -> None:
    parser = step_shape_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="Timed calls per measurement (the best counts).")
    args, resolutions, config = parse_step_shapes(parser)
    print(f"celebahq-1024 at fmap_base {args.fmap_base}: each resolution's C -> C 3×3 convolution, fp32, "
          f"{args.threads} threads, best of {args.repeats}; ms")
    top_minibatch = config.minibatch_dict.get(4, config.minibatch_base)
    print("\n".join(product_rates(args.repeats, top_minibatch, feature_maps(1, config.fmap_base, config.fmap_max))))
    print()
    print(results_record.markdown_table(
        ["resolution", "minibatch", "C", "forward direct", "forward Winograd", "direct / Winograd",
         "Winograd transforms alone", "Winograd product alone", "fwd+bwd direct", "fwd+bwd Winograd",
         "direct / Winograd (fwd+bwd)", "Winograd error", "direct GFLOP/s"], []))
    for resolution in resolutions:
        minibatch = config.minibatch_dict.get(resolution, config.minibatch_base)
        channels = feature_maps(resolution.bit_length() - 2, config.fmap_base, config.fmap_max)
        print("| " + " | ".join(row(resolution, minibatch, channels, args.repeats)) + " |", flush=True)
    print("\nD's fused conv + downscale (4×4, stride 2): NCHW (the trainer), channels_last, space-to-depth; ms\n")
    print(results_record.markdown_table(
        ["resolution", "minibatch", "C", "forward NCHW", "forward channels_last", "forward space-to-depth",
         "fwd+bwd NCHW", "fwd+bwd channels_last", "fwd+bwd space-to-depth", "error channels_last",
         "error space-to-depth"], []))
    for resolution in resolutions:
        if resolution < 8:
            continue  # the 4×4 block has no downscale
        minibatch = config.minibatch_dict.get(resolution, config.minibatch_base)
        stage = resolution.bit_length() - 2
        channels, out_channels = (feature_maps(s, config.fmap_base, config.fmap_max) for s in (stage, stage - 1))
        print("| " + " | ".join(strided_row(resolution, minibatch, channels, out_channels, args.repeats)) + " |",
              flush=True)
    print("\nOne trainer step (D step, EMA, G step), torch.profiler self CPU time by operator:\n")
    print(results_record.markdown_table(["resolution", "minibatch", "convolutions", "matrix products", "the rest",
                                         "speed-up if the rest took no time"], []))
    for resolution in resolutions:
        minibatch = config.minibatch_dict.get(resolution, config.minibatch_base)
        lod = math.log2(max(resolutions)) - math.log2(resolution)
        convolutions, products = step_shares(config, resolution, lod, minibatch)
        print(f"| {resolution}² | {minibatch} | {convolutions:.0%} | {products:.0%} | "
              f"{1 - convolutions - products:.0%} | {1 / (convolutions + products):.2f}× |", flush=True)


if __name__ == "__main__":
    results_record.run_main("progan: convolution algorithms on the CPU", main)
