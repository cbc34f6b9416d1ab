"""Where a training step's memory goes, per working resolution, without running it: the networks are built on
PyTorch's meta device (shapes only, no data, no arithmetic) and every tensor autograd saves for a backward pass is
counted through `torch.autograd.graph.saved_tensors_hooks` (each storage once).

    python benchmarks/train_memory.py                                  # celebahq-1024, 1-GPU preset, 4²-1024²
    python benchmarks/train_memory.py --resolutions 64 --minibatch 32 --json
    python benchmarks/train_memory.py --compare-with /tmp/older-checkout [--record]   # before/after columns
    python benchmarks/train_memory.py --real-step --resolutions 1024      # peak RSS of one real step on the CPU

Per resolution (stable phase, fp32 unless --bf16): the persistent state (G, D, the EMA copy of G, both Adam
states and one set of gradients), what autograd keeps alive at the D step's backward (the real, fake and mixed
passes and the gradient penalty's first-order graph, which create_graph keeps) and at the G step's backward, and
their sum with the state: the floor of the step's peak. Transients on top of it (a backward's temporaries, the
allocator's cached blocks, cuDNN workspaces) are device-specific and measured by the device suite.

`--real-step` runs one real D + G step (the trainer's step functions, fp32, one thread) per resolution on the CPU
instead, each in its own process, and reports its peak RSS and what the step added to the RSS before it (minutes
and about 11 GiB at 1024²). With --compare-with both checkouts run it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys

import results_record
import torch

from progan.configs import resolve_config
from progan.loss import make_loss
from progan.networks import build_networks

GIB = 2.0 ** 30


class SavedTensors:
    """Bytes of the distinct storages autograd saves while the context is active."""

    def __init__(self):
        self.storages: dict[tuple, int] = {}

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        self.storages[storage._cdata] = storage.nbytes()  # the StorageImpl's address: one key per storage
        return tensor

    @property
    def bytes(self) -> int:
        return sum(self.storages.values())

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda tensor: tensor)


def step_memory(config, resolution: int, minibatch: int, bf16: bool) -> dict:
    """Autograd-saved bytes of one D step and one G step at `resolution` on the meta device, and the state."""
    lod = math.log2(config.resolution) - math.log2(resolution)
    with torch.device("meta"):
        G, D = build_networks(config)
        reals = torch.empty(minibatch, 3, resolution, resolution)
        z = torch.empty(minibatch, config.latent_size)
        mixing = torch.empty(minibatch, 1, 1, 1)
    used = [p for name, p in [*G.named_parameters(), *D.named_parameters()] if _used(name, resolution)]
    parameter_bytes = sum(p.numel() * p.element_size() for p in used)
    g_bytes = sum(p.numel() * p.element_size() for name, p in G.named_parameters() if _used(name, resolution))
    loss = make_loss(config)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    keep = []  # the graphs (and so their saved storages) stay alive: no storage address is reused
    D_saved, G_saved = SavedTensors(), SavedTensors()
    G.requires_grad_(False)
    with D_saved.hooks(), autocast:
        with torch.no_grad():
            fakes = G(z, lod).float()
        keep.append(loss.D_loss(D, reals, fakes, lod, mixing))
    G.requires_grad_(True)
    D.requires_grad_(False)
    with G_saved.hooks(), autocast:
        keep.append(loss.G_loss(D, G(z, lod), lod))
    state = parameter_bytes * 4 + g_bytes  # weights, gradients, Adam's two moments; the EMA copy of G
    return {"resolution": resolution, "minibatch": minibatch, "precision": "bf16" if bf16 else "fp32",
            "state_gib": state / GIB, "D_step_saved_gib": D_saved.bytes / GIB, "G_step_saved_gib": G_saved.bytes / GIB,
            "floor_gib": (state + max(D_saved.bytes, G_saved.bytes)) / GIB}


def _used(name: str, resolution: int) -> bool:
    """Whether parameter `name` (of G or D) takes part at working resolution `resolution` (stable phase)."""
    parts = name.split(".")
    if parts[0] in ("blocks", "to_rgb", "from_rgb"):
        level = int(parts[1])
        return level == resolution if parts[0] != "blocks" else level <= resolution
    return True


def real_step_rss(config, resolution: int, minibatch: int) -> dict:
    """Peak RSS (GiB) of one real D + G step at `resolution` on the CPU, and what the step added to the RSS."""
    import resource

    from progan.training_loop import discriminator_step, generator_step

    def rss() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20

    torch.set_num_threads(1)
    lod = math.log2(config.resolution) - math.log2(resolution)
    G, D = build_networks(config)
    adam = {"betas": (config.adam_beta1, config.adam_beta2), "eps": config.adam_epsilon}
    G_opt, D_opt = torch.optim.Adam(G.parameters(), **adam), torch.optim.Adam(D.parameters(), **adam)
    loss, autocast = make_loss(config), torch.autocast("cpu", enabled=False)
    reals = torch.rand(minibatch, 3, resolution, resolution) * 2 - 1
    before = rss()
    discriminator_step(G, D, D_opt, loss, reals, torch.randn(minibatch, config.latent_size),
                       torch.rand(minibatch, 1, 1, 1), lod, autocast)
    generator_step(G, D, G_opt, loss, torch.randn(minibatch, config.latent_size), lod, autocast)
    return {"resolution": resolution, "minibatch": minibatch, "peak_rss_gib": rss(), "step_added_gib": rss() - before}


def measure_with(code_root: str, args) -> list[dict]:
    """The rows of this script run on the progan package found at `code_root` (another checkout)."""
    command = [sys.executable, __file__, "--config", args.config, "--json"]
    command += ["--resolutions", args.resolutions] if args.resolutions else []
    command += ["--minibatch", str(args.minibatch)] if args.minibatch else []
    command += ["--bf16"] if args.bf16 else []
    command += ["--real-step"] if args.real_step else []
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([code_root, os.environ.get("PYTHONPATH", "")]))
    completed = subprocess.run(command, capture_output=True, text=True, env=environment, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def rss_table(rows: list[dict], before: list[dict] | None) -> str:
    header = ["resolution", "minibatch", "peak RSS, before", "after", "the step added, before", "after"]
    cells = [[f"{row['resolution']}²", f"{row['minibatch']}", f"{old.get('peak_rss_gib', math.nan):.2f} GiB",
              f"{row['peak_rss_gib']:.2f} GiB", f"{old.get('step_added_gib', math.nan):.2f} GiB",
              f"{row['step_added_gib']:.2f} GiB"] for old, row in zip(before or [{}] * len(rows), rows)]
    return results_record.markdown_table(header, cells)


def table(rows: list[dict], before: list[dict] | None) -> str:
    def gib(value: float) -> str:
        return f"{value:.2f} GiB"

    if before is None:
        header = ["resolution", "minibatch", "state (G, D, EMA, grads, Adam)", "saved by the D step",
                  "saved by the G step", "floor of the peak"]
        cells = [[f"{row['resolution']}²", f"{row['minibatch']}", gib(row["state_gib"]),
                  gib(row["D_step_saved_gib"]), gib(row["G_step_saved_gib"]), gib(row["floor_gib"])] for row in rows]
        return results_record.markdown_table(header, cells)
    header = ["resolution", "minibatch", "state", "D step keeps, before", "after", "G step keeps, before", "after",
              "floor before", "after"]
    cells = [[f"{row['resolution']}²", f"{row['minibatch']}", gib(row["state_gib"]), gib(old["D_step_saved_gib"]),
              gib(row["D_step_saved_gib"]), gib(old["G_step_saved_gib"]), gib(row["G_step_saved_gib"]),
              gib(old["floor_gib"]), gib(row["floor_gib"])] for old, row in zip(before, rows)]
    return results_record.markdown_table(header, cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="celebahq-1024")
    parser.add_argument("--resolutions", default=None, help="Comma-separated [4 to the config's resolution].")
    parser.add_argument("--minibatch", type=int, default=None, help="[the preset's at each resolution]")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--compare-with", metavar="CHECKOUT",
                        help="Another checkout of the project (e.g. git archive of an older commit): its figures "
                             "as the 'before' columns.")
    parser.add_argument("--real-step", action="store_true",
                        help="Peak RSS of one real step per resolution on the CPU instead of the meta-device count.")
    parser.add_argument("--record", action="store_true", help="Write the table into benchmarks/RESULTS.md.")
    args = parser.parse_args()
    config = resolve_config(args.config)
    resolutions = ([int(r) for r in args.resolutions.split(",")] if args.resolutions
                   else [2 ** k for k in range(2, int(math.log2(config.resolution)) + 1)])
    rows = []
    for resolution in resolutions:
        minibatch = args.minibatch or min(config.minibatch_dict.get(resolution, config.minibatch_base),
                                          config.max_minibatch_per_gpu.get(resolution, 1 << 30))
        if args.real_step:
            rows.append(_in_child(args, resolution) if len(resolutions) > 1 else
                        real_step_rss(config, resolution, minibatch))
        else:
            rows.append(step_memory(config, resolution, minibatch, args.bf16))
    if args.json:
        print(json.dumps(rows))
        return
    before = measure_with(args.compare_with, args) if args.compare_with else None
    body = (rss_table if args.real_step else table)(rows, before)
    print(body)
    if args.record:

        what = f"{args.config}, {'bf16' if args.bf16 else 'fp32'}, the preset's 1-GPU minibatch, GiB"
        title = ("progan: peak RSS of one training step (CPU)" if args.real_step
                 else "progan: memory one training step keeps (meta device)")
        results_record.record_section(title,
                                      f"{what}; before = {args.compare_with or '-'}\n\n{body}\n")


def _in_child(args, resolution: int) -> dict:
    """One resolution's real step in a fresh process (its own peak RSS)."""
    command = [sys.executable, __file__, "--config", args.config, "--json", "--real-step",
               "--resolutions", str(resolution)] + (["--minibatch", str(args.minibatch)] if args.minibatch else [])
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])[0]


if __name__ == "__main__":
    main()
