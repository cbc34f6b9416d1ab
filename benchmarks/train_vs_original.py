"""One ProGAN training step (D step + EMA update + G step) of `progan` against NVIDIA's original TensorFlow code,
on the same CPU, threads, config and minibatch: images/s and peak RSS per working resolution, and the ratio.

    git --git-dir=/path/to/progressive_growing_of_gans.git archive HEAD | tar -x -C /tmp/pgan   # or a clone
    python3 -m venv /work/venvs/tf && /work/venvs/tf/bin/pip install tensorflow-cpu
    python benchmarks/train_vs_original.py --original /tmp/pgan --tf-python /work/venvs/tf/bin/python [--record]

`--original` is a checkout of tkarras/progressive_growing_of_gans (a folder holding networks.py, loss.py,
tfutil.py, train.py and misc.py, or a bare git directory: its HEAD is read). Nothing of it is copied into this
project: at run time its networks.py, loss.py and tfutil.py are written to a temporary folder with the one
change TensorFlow 2 requires (`import tensorflow as tf` becomes `tensorflow.compat.v1` with v2 behaviour off),
and train.py's `process_reals` and misc.py's `adjust_dynamic_range` are taken from their files as they are.
The step is built as train.py builds it (tfutil.Network G, D and Gs = moving average of G, tfutil.Optimizer
Adam, loss.G_wgan_acgan / loss.D_wgangp_acgan, the lod assigned before each loss) with three differences a CPU
and a benchmark need: no `tf.device('/gpu:0')`, the optimizer class named `tensorflow.compat.v1.train.
AdamOptimizer` (a config value), and a fixed uint8 minibatch in a variable instead of the TFRecord pipeline
(labels: an empty [N, 0] tensor, as the original's unlabelled datasets give).

Both sides use the same config (default: the released celebahq-1024 preset with `--fmap-base` 2048 so a CPU can
run it, output resolution R = the largest measured one, `fused_scale` as the TF release), the 1-GPU preset's
minibatch at each resolution, the stable phase at that resolution (lod = log2 R - log2 r), fp32 and `--threads`
intra-op threads (TensorFlow: one inter-op thread). As in training, the original's networks work on R×R images
at every lod (its reals are upscaled to R×R, its D box-downsamples them); ours work at r×r. Each side runs in
its own process (peak RSS = that process's ru_maxrss, which includes the framework's own footprint, shown
separately as the RSS after import). Besides images per wall second the table gives images per CPU second
(user + system time of the process): on a machine shared with other jobs the wall figures swing with the
share of the cores each side happens to get, the CPU-time figures much less.

To say how far either side could still go, our side also counts the arithmetic of one step (convolutions and
matrix products, forward, backward and the penalty's double backward, by torch's FLOP formulas; the original
does the same arithmetic on the same shapes) and measures the best rate of a plain 3×3 convolution on these
cores; the table gives the GFLOP/s each side achieves beside that peak.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import results_record

TF_IMPORT = "import tensorflow as tf"
TF_COMPAT_IMPORT = "import tensorflow.compat.v1 as tf; tf.disable_v2_behavior()"
ORIGINAL_MODULES = ("networks.py", "loss.py", "tfutil.py")


def rss_mb() -> float:
    """This process's peak resident set size so far, MiB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------------------------------------------
# The original's side (runs under the TensorFlow interpreter: standard library, numpy and tensorflow only)


def read_original_file(checkout: Path, name: str) -> str:
    """The text of `name` in a checkout folder, or at HEAD of a bare git directory."""
    if (checkout / name).is_file():
        return (checkout / name).read_text()
    return subprocess.run(["git", f"--git-dir={checkout}", "show", f"HEAD:{name}"], check=True,
                          capture_output=True, text=True).stdout


def adapted_for_tf2(source: str) -> str:
    """The one change TensorFlow 2 requires of the original's modules: the compat.v1 API, v2 behaviour off."""
    if TF_IMPORT not in source:
        raise SystemExit("error: the original's module does not import tensorflow as expected")
    return source.replace(TF_IMPORT, TF_COMPAT_IMPORT, 1)


def function_source(source: str, name: str) -> str:
    """The source of the top-level function `name` in a module's text."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.get_source_segment(source, node)
    raise SystemExit(f"error: no function {name} in the original's file")


class UnlabelledSet:
    """What the original's losses ask of a training set when it has no labels."""

    label_size = 0

    def __init__(self, tf):
        self.tf = tf

    def get_random_labels_tf(self, minibatch_size):
        return self.tf.zeros([minibatch_size, 0])


def original_step(checkout: Path, plan: dict) -> dict:
    """Build the original's training step for `plan` and time it; returns the measurement as a dict. The adapted
    modules live in a temporary folder for the call (tfutil.Network reads its module's source file)."""
    with tempfile.TemporaryDirectory(prefix="progan-original-") as folder:
        for name in ORIGINAL_MODULES:
            (Path(folder) / name).write_text(adapted_for_tf2(read_original_file(checkout, name)))
        for name in ("tfutil.py", "networks.py", "loss.py"):  # importable by name (tfutil imports networks so)
            _load_module(Path(folder) / name)
        return _original_step_from(checkout, plan)


def _load_module(path: Path) -> None:
    """Import the file `path` as the top-level module named after it (no change to sys.path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)


def _original_step_from(checkout: Path, plan: dict) -> dict:
    import loss  # noqa: F401  (imported by name through tfutil.call_func_by_name)
    import numpy as np
    import tensorflow.compat.v1 as tf
    import tfutil

    tf.disable_v2_behavior()
    after_import = rss_mb()
    misc = type("misc", (), {})
    exec(function_source(read_original_file(checkout, "misc.py"), "adjust_dynamic_range"),  # noqa: S102 (the original's own function)
         {"np": np}, namespace := {})
    misc.adjust_dynamic_range = staticmethod(namespace["adjust_dynamic_range"])
    exec(function_source(read_original_file(checkout, "train.py"), "process_reals"),  # noqa: S102 (the same)
         scope := {"tf": tf, "tfutil": tfutil, "misc": misc})
    process_reals = scope["process_reals"]

    np.random.seed(plan["seed"])
    tfutil.init_tf({"graph_options.place_pruned_graph": True, "intra_op_parallelism_threads": plan["threads"],
                    "inter_op_parallelism_threads": 1})
    c, batch = plan["config"], plan["minibatch"]
    shared = {"num_channels": 3, "resolution": c["resolution"], "label_size": 0, "fmap_base": c["fmap_base"],
              "fmap_max": c["fmap_max"], "use_wscale": c["use_wscale"], "fused_scale": c["fused_scale"]}
    G = tfutil.Network("G", func="networks.G_paper", latent_size=c["latent_size"],
                       normalize_latents=c["normalize_latents"], **shared)
    D = tfutil.Network("D", func="networks.D_paper", mbstd_group_size=c["mbstd_group_size"], **shared)
    Gs = G.clone("Gs")
    Gs_update_op = Gs.setup_as_moving_average_of(G, beta=c["G_ema_beta"])
    lod_in = tf.placeholder(tf.float32, name="lod_in", shape=[])
    lrate_in = tf.placeholder(tf.float32, name="lrate_in", shape=[])
    minibatch_in = tf.placeholder(tf.int32, name="minibatch_in", shape=[])
    rng = np.random.RandomState(plan["seed"])
    r = plan["working_resolution"]
    reals = tf.Variable(rng.randint(0, 256, size=[batch, 3, r, r]).astype(np.uint8), trainable=False)
    adam = {"tf_optimizer": "tensorflow.compat.v1.train.AdamOptimizer", "beta1": c["adam_beta1"],
            "beta2": c["adam_beta2"], "epsilon": c["adam_epsilon"]}
    G_opt = tfutil.Optimizer(name="TrainG", learning_rate=lrate_in, **adam)
    D_opt = tfutil.Optimizer(name="TrainD", learning_rate=lrate_in, **adam)
    lod_assign_ops = [tf.assign(G.find_var("lod"), lod_in), tf.assign(D.find_var("lod"), lod_in)]
    reals_net = process_reals(reals, lod_in, c["mirror"], [0, 255], [-1, 1])
    unlabelled = UnlabelledSet(tf)
    with tf.name_scope("G_loss"), tf.control_dependencies(lod_assign_ops):
        G_loss = tfutil.call_func_by_name(G=G, D=D, opt=G_opt, training_set=unlabelled, minibatch_size=minibatch_in,
                                          func="loss.G_wgan_acgan")
    with tf.name_scope("D_loss"), tf.control_dependencies(lod_assign_ops):
        D_loss = tfutil.call_func_by_name(G=G, D=D, opt=D_opt, training_set=unlabelled, minibatch_size=minibatch_in,
                                          reals=reals_net, labels=tf.zeros([minibatch_in, 0]),
                                          wgan_lambda=c["wgan_lambda"], wgan_epsilon=c["wgan_epsilon"],
                                          wgan_target=c["wgan_target"], func="loss.D_wgangp_acgan")
    G_opt.register_gradients(tf.reduce_mean(G_loss), G.trainables)
    D_opt.register_gradients(tf.reduce_mean(D_loss), D.trainables)
    G_train_op, D_train_op = G_opt.apply_updates(), D_opt.apply_updates()
    tfutil.init_uninited_vars()
    feed = {lod_in: plan["lod"], lrate_in: c["G_lr"], minibatch_in: batch}

    def step():
        tfutil.run([D_train_op, Gs_update_op], feed)
        tfutil.run([G_train_op], feed)

    return timed_steps(step, plan, after_import)


def timed_steps(step, plan: dict, after_import: float) -> dict:
    """Run `step` plan["warmup"] times, then time plan["steps"] runs; images/s counts reals shown to D."""
    for _ in range(plan["warmup"]):
        step()
    started, cpu_started = time.perf_counter(), cpu_seconds()
    for _ in range(plan["steps"]):
        step()
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    images = plan["steps"] * plan["minibatch"]
    return {"images_per_second": images / seconds, "images_per_cpu_second": images / cpu, "seconds": seconds,
            "peak_rss_mb": rss_mb(), "rss_after_import_mb": after_import}


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (all its threads): the work a step costs, whatever share
    of the cores a loaded machine gives it."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ----------------------------------------------------------------------------------------------------------------
# Our side and the parent (the project's interpreter)


def ours_step(plan: dict) -> dict:
    """Our training step for `plan` (the real step functions of progan.training_loop), timed."""
    import torch

    from progan.configs import TrainingConfig
    from progan.dataset import to_float_reals
    from progan.loss import make_loss
    from progan.networks import build_networks
    from progan.training_loop import discriminator_step, generator_step, make_optimizers, update_ema

    after_import = rss_mb()
    torch.set_num_threads(plan["threads"])
    torch.manual_seed(plan["seed"])
    config = TrainingConfig.from_dict(plan["config"])
    device = torch.device("cpu")
    G, D = build_networks(config)
    G_ema = build_networks(config)[0].requires_grad_(False)
    G_ema.load_state_dict(G.state_dict())
    G_opt, D_opt = make_optimizers(G, D, config)
    loss = make_loss(config)
    autocast = torch.autocast("cpu", enabled=False)
    batch, r, lod = plan["minibatch"], plan["working_resolution"], plan["lod"]
    reals_uint8 = torch.randint(0, 256, (batch, 3, r, r), dtype=torch.uint8)

    def step():
        reals = to_float_reals(reals_uint8, r, device)
        flips = torch.rand(batch) < 0.5
        reals = torch.where(flips.reshape(-1, 1, 1, 1), reals.flip(3), reals)
        z = torch.randn(batch, config.latent_size)
        discriminator_step(G, D, D_opt, loss, reals, z, torch.rand(batch, 1, 1, 1), lod, autocast)
        update_ema(G_ema, G, config.G_ema_beta)
        generator_step(G, D, G_opt, loss, torch.randn(batch, config.latent_size), lod, autocast)

    result = timed_steps(step, plan, after_import)
    result["gflop_per_step"] = counted_gflop(step)
    result["conv_peak_gflops"] = conv_peak()
    return result


def counted_gflop(function) -> float:
    """GFLOP of the convolutions and matrix products `function()` runs (forward, backward and the penalty's
    double backward), by torch's FLOP formulas; counted by a dispatch mode of its own, since FlopCounterMode's
    module hooks refuse `autograd.grad`."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Counter(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            if func._overloadpacket in flop_registry:
                Counter.total += flop_registry[func._overloadpacket](*args, **kwargs, out_val=out)
            return out

    with Counter():
        function()
    return Counter.total / 1e9


def conv_peak(repeats: int = 5) -> float:
    """The best GFLOP/s of a plain fp32 forward 3×3 convolution, 512 -> 512 channels, minibatch 64, at 8² and 16²
    in NCHW and channels_last, with this process's threads: what these cores reach at best on this work."""
    import torch
    import torch.nn.functional as F

    best = 0.0
    for size in (8, 16):
        for memory_format in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(64, 512, size, size).to(memory_format=memory_format)
            w = torch.randn(512, 512, 3, 3).to(memory_format=memory_format)
            F.conv2d(x, w, padding=1)
            started = time.perf_counter()
            for _ in range(repeats):
                F.conv2d(x, w, padding=1)
            flop = 2 * 64 * 512 * 512 * 9 * size * size * repeats
            best = max(best, flop / (time.perf_counter() - started) / 1e9)
    return best


def plans(args) -> list[dict]:
    """One plan (config values, working resolution, lod, minibatch, steps) per measured resolution."""
    from progan.configs import resolve_config

    resolutions = [int(text) for text in args.resolutions.split(",")]
    top = args.output_resolution or max(resolutions)
    if top < max(resolutions):
        raise SystemExit(f"error: --output-resolution {top} is below the measured {max(resolutions)}")
    config = resolve_config(args.config, {"resolution": top, "fmap_base": args.fmap_base,
                                          "fused_scale": args.fused_scale})
    return [{"config": config.to_dict(), "working_resolution": r, "lod": math.log2(top) - math.log2(r),
             "minibatch": config.minibatch_dict.get(r, config.minibatch_base), "threads": args.threads,
             "steps": args.steps, "warmup": args.warmup, "seed": 1000} for r in resolutions]


def run_child(interpreter: str, side: str, plan: dict, original: str | None, wait_policy: str) -> dict:
    """Run one side in its own process; its last stdout line is the JSON measurement. `wait_policy`: the OpenMP
    runtime's (torch's CPU threads; TensorFlow's own thread pool ignores it)."""
    command = [interpreter, str(Path(__file__).resolve()), "--child", side, "--plan", json.dumps(plan)]
    if original:
        command += ["--original", original]
    environment = dict(os.environ, OMP_NUM_THREADS=str(plan["threads"]), OMP_WAIT_POLICY=wait_policy,
                       TF_CPP_MIN_LOG_LEVEL="2",
                       PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    completed = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if completed.returncode != 0:
        tail = "\n".join(completed.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"error: the {side} side failed at {plan['working_resolution']}²:\n{tail}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def arithmetic_cells(row: dict) -> list[str]:
    """GFLOP of one step (ours, counted by torch: the original does the same arithmetic on the same shapes), the
    GFLOP/s each side achieves, and the best plain-convolution rate of these cores measured beside ours."""
    ours, original = row["ours"], row["original"]
    flop = ours["gflop_per_step"]
    steps_per_second = {side: result["images_per_second"] / row["minibatch"]
                        for side, result in (("ours", ours), ("original", original))}
    return [f"{flop:.0f}", f"{flop * steps_per_second['ours']:.0f}", f"{flop * steps_per_second['original']:.0f}",
            f"{ours['conv_peak_gflops']:.0f}"]


def table(rows: list[dict]) -> str:
    header = ["resolution", "minibatch", "ours img/s", "original img/s", "ratio", "ours img/CPU-s",
              "original img/CPU-s", "ratio (CPU time)", "GFLOP per step", "ours GFLOP/s", "original GFLOP/s",
              "conv peak GFLOP/s", "ours peak RSS", "original peak RSS", "ours RSS after import",
              "original RSS after import"]
    cells = []
    for row in rows:
        ours, original = row["ours"], row["original"]
        cells.append([f"{row['resolution']}²", f"{row['minibatch']}", f"{ours['images_per_second']:.1f}",
                      f"{original['images_per_second']:.1f}",
                      f"{ours['images_per_second'] / original['images_per_second']:.2f}×",
                      f"{ours['images_per_cpu_second']:.2f}", f"{original['images_per_cpu_second']:.2f}",
                      f"{ours['images_per_cpu_second'] / original['images_per_cpu_second']:.2f}×",
                      *arithmetic_cells(row),
                      f"{ours['peak_rss_mb']:.0f} MiB", f"{original['peak_rss_mb']:.0f} MiB",
                      f"{ours['rss_after_import_mb']:.0f} MiB", f"{original['rss_after_import_mb']:.0f} MiB"])
    return results_record.markdown_table(header, cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--original", help="Checkout (folder or bare git dir) of tkarras/progressive_growing_of_gans.")
    parser.add_argument("--tf-python", default="/work/venvs/tf/bin/python",
                        help="Python interpreter with tensorflow-cpu (TensorFlow 2) installed.")
    parser.add_argument("--config", default="celebahq-1024")
    parser.add_argument("--fmap-base", type=int, default=2048, help="Network width (the preset's is 8192).")
    parser.add_argument("--fused-scale", type=lambda text: text.lower() in ("1", "true", "yes"), default=True)
    parser.add_argument("--resolutions", default="4,8,16,32,64")
    parser.add_argument("--output-resolution", type=int, default=None,
                        help="R, the networks' output resolution [the largest measured]; the preset's own is 1024. "
                             "The original's networks and reals work at R×R at every lod, ours at the working "
                             "resolution.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--omp-wait-policy", choices=("PASSIVE", "ACTIVE"), default="PASSIVE",
                        help="OpenMP threads sleep (PASSIVE) or spin (ACTIVE) between parallel regions. PASSIVE "
                             "[default] behaves like TensorFlow's thread pool; spinning threads on a machine "
                             "shared with other jobs made our step 4-8x slower.")
    parser.add_argument("--record", action="store_true", help="Write the table into benchmarks/RESULTS.md.")
    parser.add_argument("--child", choices=("ours", "original"), help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        plan = json.loads(args.plan)
        result = ours_step(plan) if args.child == "ours" else original_step(Path(args.original), plan)
        print(json.dumps(result))
        return
    if not args.original:
        parser.error("--original is required")
    load_before = " / ".join(f"{value:.2f}" for value in os.getloadavg())
    rows = []
    for plan in plans(args):
        r = plan["working_resolution"]
        ours = run_child(sys.executable, "ours", plan, None, args.omp_wait_policy)
        original = run_child(args.tf_python, "original", plan, args.original, args.omp_wait_policy)
        rows.append({"resolution": r, "minibatch": plan["minibatch"], "ours": ours, "original": original})
        print(f"{r:>4}²  minibatch {plan['minibatch']:>3}  ours {ours['images_per_second']:8.1f} img/s "
              f"(peak RSS {ours['peak_rss_mb']:.0f} MiB)  original {original['images_per_second']:8.1f} img/s "
              f"(peak RSS {original['peak_rss_mb']:.0f} MiB)  ratio "
              f"{ours['images_per_second'] / original['images_per_second']:.2f}×", flush=True)
    body = table(rows)
    print(body)
    print(f"load before: {load_before}; after: " + " / ".join(f"{value:.2f}" for value in os.getloadavg()))
    if args.record:
        top = args.output_resolution or max(plan["working_resolution"] for plan in plans(args))
        settings = (f"config {args.config} with output resolution {top}, fmap_base {args.fmap_base}, fused_scale "
                    f"{args.fused_scale}, {args.threads} threads (OMP_WAIT_POLICY {args.omp_wait_policy}), "
                    f"{args.steps} timed steps after {args.warmup}, fp32")
        title = "progan: one training step vs the original (CPU)" + (
            f", output resolution {top}" if args.output_resolution else "")
        results_record.record_section(title, textwrap.dedent(f"{settings}\n\n{body}\n"), load_before=load_before)


if __name__ == "__main__":
    main()
