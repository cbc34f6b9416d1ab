"""Where a training step's memory goes, per working resolution, without running it: the networks are built on
PyTorch's meta device (shapes only, no data, no arithmetic) and every tensor autograd saves for a backward pass is
counted through `torch.autograd.graph.saved_tensors_hooks` (each storage once).

    python benchmarks/train_memory.py                                  # celebahq-1024, 1-GPU preset, 4²-1024²
    python benchmarks/train_memory.py --resolutions 64 --minibatch 32 --json
    python benchmarks/train_memory.py --compare-with /tmp/older-checkout [--record]   # before/after columns

Per resolution (stable phase, fp32 unless --bf16): the persistent state (G, D, the EMA copy of G, both Adam
states and one set of gradients), what autograd keeps alive at the D step's backward (the real, fake and mixed
passes and the gradient penalty's first-order graph, which create_graph keeps) and at the G step's backward, and
their sum with the state: the floor of the step's peak. Transients on top of it (a backward's temporaries, the
allocator's cached blocks, cuDNN workspaces) are device-specific and measured by the device suite.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys

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


def measure_with(code_root: str, args) -> list[dict]:
    """The rows of this script run on the progan package found at `code_root` (another checkout)."""
    command = [sys.executable, __file__, "--config", args.config, "--json"]
    command += ["--resolutions", args.resolutions] if args.resolutions else []
    command += ["--minibatch", str(args.minibatch)] if args.minibatch else []
    command += ["--bf16"] if args.bf16 else []
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([code_root, os.environ.get("PYTHONPATH", "")]))
    completed = subprocess.run(command, capture_output=True, text=True, env=environment, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def table(rows: list[dict], before: list[dict] | None) -> str:
    if before is None:
        lines = [("| resolution | minibatch | state (G, D, EMA, grads, Adam) | saved by the D step |"
                  " saved by the G step | floor of the peak |"), "|---:|---:|---:|---:|---:|---:|"]
        for row in rows:
            lines.append(f"| {row['resolution']}² | {row['minibatch']} | {row['state_gib']:.2f} GiB | "
                         f"{row['D_step_saved_gib']:.2f} GiB | {row['G_step_saved_gib']:.2f} GiB | "
                         f"{row['floor_gib']:.2f} GiB |")
        return "\n".join(lines)
    lines = [("| resolution | minibatch | state | D step keeps, before | after | G step keeps, before | after |"
              " floor before | after |"), "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for old, row in zip(before, rows):
        lines.append(f"| {row['resolution']}² | {row['minibatch']} | {row['state_gib']:.2f} GiB | "
                     f"{old['D_step_saved_gib']:.2f} GiB | {row['D_step_saved_gib']:.2f} GiB | "
                     f"{old['G_step_saved_gib']:.2f} GiB | {row['G_step_saved_gib']:.2f} GiB | "
                     f"{old['floor_gib']:.2f} GiB | {row['floor_gib']:.2f} GiB |")
    return "\n".join(lines)


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
    parser.add_argument("--record", action="store_true", help="Write the table into benchmarks/RESULTS.md.")
    args = parser.parse_args()
    config = resolve_config(args.config)
    resolutions = ([int(r) for r in args.resolutions.split(",")] if args.resolutions
                   else [2 ** k for k in range(2, int(math.log2(config.resolution)) + 1)])
    rows = []
    for resolution in resolutions:
        minibatch = args.minibatch or min(config.minibatch_dict.get(resolution, config.minibatch_base),
                                          config.max_minibatch_per_gpu.get(resolution, 1 << 30))
        rows.append(step_memory(config, resolution, minibatch, args.bf16))
    if args.json:
        print(json.dumps(rows))
        return
    body = table(rows, measure_with(args.compare_with, args) if args.compare_with else None)
    print(body)
    if args.record:
        import results_record

        what = f"{args.config}, {'bf16' if args.bf16 else 'fp32'}, the preset's 1-GPU minibatch, GiB"
        results_record.record_section("progan: memory one training step keeps (meta device)",
                                      f"{what}; before = {args.compare_with or '-'}\n\n{body}\n")


if __name__ == "__main__":
    main()
