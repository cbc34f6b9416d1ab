"""The ProGAN training loop (spec 5.1-5.6), one process per GPU under torchrun.

`run_training` builds a `TrainingRun` (data, networks, optimizers, random streams, counters), resumes it,
prepares the run folder and trains: rounds, a tick's maintenance when a tick's images are done. Each round
(minibatch_repeats × {D_repeats × [D step + EMA update]; G step}) uses one schedule point; Adam moments are
reset when floor(lod) or ceil(lod) changes. Every tick appends to stats.jsonl; image snapshots write
fakes<kimg>.png from fixed latents; network snapshots write network-snapshot-<kimg>.pt (everything needed to
continue exactly) and score the EMA generator with ganeval.

Multi-GPU: every rank builds the same networks from the same seed and draws the same latents; rank r takes the
r-th slice of each global minibatch (so minibatch stddev groups are taken per GPU, as the original); gradients
are averaged by `GradientReducer`: bucketed all-reduces launched during the backward pass, as DDP does, with the
buckets re-learnt whenever the lod bounds change (growth changes which layers get gradients).

Preemption: SIGTERM or SIGINT asks the loop to stop; at the end of the current round it writes
interrupted-<nimg>.pt (a full checkpoint, the partial tick's statistics included) and returns with
`Progress.interrupted` set. Resuming truncates stats.jsonl to the checkpoint's tick: one row per tick.
"""

from __future__ import annotations

import contextlib
import copy
import json
import resource
import signal
import threading
import time
import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from gancore import distributed
from gancore.errors import UserError
from gancore.imagefiles import write_png
from gancore.locking import FolderLock
from gancore.outputs import append_text, atomic_output
from gancore.runtime import resolve_device
from ganeval.registry import MetricSettings, metric_spec, parse_metric_names

from .checkpoint import images_to_uint8, load_checkpoint, save_checkpoint
from .configs import TrainingConfig
from .dataset import RealsSource, TrainingData, to_float_reals
from .evaluation import score_generator_source
from .interpolation import tile
from .loss import make_loss
from .networks import build_networks, shared_weights
from .runs import (  # noqa: F401  (find_checkpoint, resume_setup: the API's old home)
    INTERRUPTED_NAME,
    ResumeSetup,
    check_new_run_dir,
    find_checkpoint,
    resume_setup,
    truncate_stats,
)
from .schedule import Phase, check_gpu_split, training_phase

SWD_MIN_RESOLUTION = 16


@dataclass
class Progress:
    """Counters that a checkpoint stores besides the networks."""

    cur_nimg: int = 0
    tick: int = 0
    tick_start_nimg: int = 0
    lod_bounds: tuple[int, int] | None = None
    skipped_steps: int = 0
    interrupted: bool = False


class StopRequest:
    """SIGTERM / SIGINT as a flag the loop checks between rounds (a second SIGINT interrupts at once). Handlers
    are installed only in the main thread, and the previous ones restored on exit."""

    def __init__(self):
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> typing.Self:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGTERM, signal.SIGINT):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number, frame) -> None:
        if self.signal is not None and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = number

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def requested(self, device: torch.device) -> bool:
        """Whether any rank was asked to stop (one scalar all-reduce under torchrun, so all ranks agree)."""
        flag = torch.tensor(float(self.signal is not None))
        return bool(distributed.all_reduce_sum(flag.to(device)) > 0)


def grid_shape(config: TrainingConfig) -> tuple[int, int]:
    """(columns, rows) of the image grids: the original's clip(1920/R, 3, 32) × clip(1080/R, 2, 32)."""
    if config.grid_size:
        return tuple(config.grid_size)
    r = config.resolution
    return int(np.clip(1920 // r, 3, 32)), int(np.clip(1080 // r, 2, 32))


def save_grid(images: torch.Tensor, columns: int, path: Path) -> None:
    """uint8 NCHW images -> one PNG, `columns` per row, written atomically."""
    write_png(path, tile(images, columns))


class GradientReducer:
    """Averages a module's gradients over the torchrun ranks while the backward pass runs, in buckets of about
    `bucket_mb` (DDP's scheme, without its wrapper, which cannot follow growth and the GP's double backward).

    Which parameters receive gradients depends on the lod, so the buckets are learnt: the first backward after
    `relearn()` (called whenever the lod bounds change) is averaged afterwards in one flat all-reduce and records
    the parameters that got gradients; later backwards launch a bucket's asynchronous all-reduce from the
    post-accumulate hook of its last gradient, so communication overlaps the rest of the backward pass. Every
    rank runs the same graph, so buckets complete in the same order everywhere (as DDP assumes too)."""

    def __init__(self, module: torch.nn.Module, bucket_mb: float = 25.0):
        self.params = list(module.parameters())[::-1]   # gradients arrive roughly from the output backwards
        self.bucket_bytes = bucket_mb * 2 ** 20
        self.buckets: list[list[int]] | None = None
        self._bucket_of: dict[int, int] = {}
        self._missing: list[int] = []
        self._launched: list[tuple[int, torch.Tensor, object]] = []
        self.distributed = distributed.is_distributed()
        if self.distributed:
            for index, parameter in enumerate(self.params):
                parameter.register_post_accumulate_grad_hook(lambda p, index=index: self._ready(index))

    def relearn(self) -> None:
        self.buckets = None

    def begin(self) -> None:
        """Call before backward."""
        self._launched = []
        self._missing = [len(bucket) for bucket in self.buckets or []]

    def _ready(self, index: int) -> None:
        bucket = self._bucket_of.get(index) if self.buckets is not None else None
        if bucket is not None:
            self._missing[bucket] -= 1
            if self._missing[bucket] == 0:
                self._launch(bucket)

    def _launch(self, bucket: int) -> None:
        grads = [self._grad(i) for i in self.buckets[bucket]]
        flat = torch.cat([g.flatten() for g in grads])
        self._launched.append((bucket, flat, dist.all_reduce(flat, async_op=True)))

    def _grad(self, index: int) -> torch.Tensor:
        parameter = self.params[index]
        if parameter.grad is None:  # expected but absent: contribute zeros, as DDP does for unused parameters
            parameter.grad = torch.zeros_like(parameter)
        return parameter.grad

    def finish(self) -> bool:
        """Call after backward: wait for the all-reduces, write the averages into .grad; whether all are finite."""
        used = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not self.distributed:
            return all_finite([self.params[i].grad for i in used])
        if self.buckets is None:
            self._learn(used)
            self._launched = []
            for bucket in range(len(self.buckets)):
                self._launch(bucket)
        done = {bucket for bucket, _, _ in self._launched}
        for bucket in range(len(self.buckets)):    # not completed during backward: launched now, in a fixed order
            if bucket not in done:
                self._launch(bucket)
        averages = []
        for bucket, flat, work in self._launched:
            work.wait()
            flat /= distributed.world_size()
            averages.append(flat)
            grads = [self.params[i].grad for i in self.buckets[bucket]]
            for grad, average in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
                grad.copy_(average)
        return all_finite(averages)

    def _learn(self, used: list[int]) -> None:
        self.buckets, size = [], self.bucket_bytes
        for index in used:
            nbytes = self.params[index].numel() * self.params[index].element_size()
            if size + nbytes > self.bucket_bytes and (not self.buckets or self.buckets[-1]):
                self.buckets.append([])
                size = 0
            self.buckets[-1].append(index)
            size += nbytes
        self._bucket_of = {index: b for b, bucket in enumerate(self.buckets) for index in bucket}


def discriminator_step(G, D, D_opt, loss, reals: torch.Tensor, z: torch.Tensor, mixing: torch.Tensor, lod: float,
                       autocast, reducer: GradientReducer | None = None) -> tuple[torch.Tensor, dict, bool]:
    """One D update on float NCHW reals in [-1, 1] and fakes G(z); skipped when a gradient is not finite.
    `reducer` averages D's gradients over ranks (None: one process). Returns (loss, statistics, whether the
    update was applied)."""
    G.requires_grad_(False)
    D.requires_grad_(True)
    with autocast:
        with torch.no_grad():
            fakes = G(z, lod).float()
        with shared_weights(D):  # D's weights made once for its passes (reals, fakes, the penalty's mix)
            D_loss, stats = loss.D_loss(D, reals, fakes, lod, mixing)
    return D_loss, stats, _update(D, D_opt, D_loss, reducer)


def generator_step(G, D, G_opt, loss, z: torch.Tensor, lod: float, autocast,
                   reducer: GradientReducer | None = None) -> tuple[torch.Tensor, dict, bool]:
    """One G update through D on fresh latents z; skipped when a gradient is not finite."""
    G.requires_grad_(True)
    D.requires_grad_(False)
    with autocast:
        G_loss, stats = loss.G_loss(D, G(z, lod), lod)
    return G_loss, stats, _update(G, G_opt, G_loss, reducer)


def _update(module, optimizer, loss: torch.Tensor, reducer: GradientReducer | None) -> bool:
    """Backpropagate, average gradients over ranks and step, unless a gradient is not finite."""
    optimizer.zero_grad(set_to_none=True)
    if reducer is not None:
        reducer.begin()
    loss.backward()
    if reducer is not None:
        finite = reducer.finish()
    else:
        finite = all_finite([p.grad for p in module.parameters() if p.grad is not None])
    if finite:
        optimizer.step()
    return finite


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every element of every tensor is finite, with one wait for the device in all (on CUDA, a `bool()`
    per tensor would stall the queue once per parameter)."""
    if not tensors:
        return True
    return bool(torch.stack([torch.isfinite(tensor).all() for tensor in tensors]).all())


def make_optimizers(G, D, config: TrainingConfig, fused: bool | None = None) -> tuple[torch.optim.Adam,
                                                                                        torch.optim.Adam]:
    """Adam for G and D (the config's betas, epsilon and base learning rates); on CUDA fused: one kernel per step
    for all parameters instead of several per parameter, the same update as the per-parameter implementation to
    fp32 rounding (tests/progan/test_training_speed.py). On the CPU, where fusing gains nothing measurable, torch's
    default implementation, whose roundings a run split over processes reproduces to 1e-5. `fused`: force it
    either way (None: fused on CUDA only)."""
    if fused is None:
        fused = next(G.parameters()).device.type == "cuda"
    adam = {"betas": (config.adam_beta1, config.adam_beta2), "eps": config.adam_epsilon, "fused": fused or None}
    return (torch.optim.Adam(G.parameters(), lr=config.G_lr, **adam),
            torch.optim.Adam(D.parameters(), lr=config.D_lr, **adam))


@torch.no_grad()
def update_ema(G_ema, G, beta: float) -> None:
    """G_ema ← beta · G_ema + (1 - beta) · G for every parameter (one fused foreach lerp); buffers copied."""
    torch._foreach_lerp_(list(G_ema.parameters()), list(G.parameters()), 1.0 - beta)
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)


def _memory_stats(device: torch.device) -> dict:
    stats = {"cpu_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        stats["gpu_max_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1)
        stats["gpu_max_reserved_mb"] = round(torch.cuda.max_memory_reserved(device) / 2 ** 20, 1)
    return stats


@dataclass
class SnapshotMetrics:
    """What the trainer scores at each network snapshot: the metrics (ganeval names), their settings, the
    Inception weights file (None: none needed), and a note for each asked metric it leaves out or cuts down."""

    names: list[str]
    settings: MetricSettings | None
    inception: Path | None
    notes: list[str]


def snapshot_metrics(config: TrainingConfig, num_images: int) -> SnapshotMetrics:
    """The snapshot metrics of `config.metrics` on data of `num_images` images: SWD reads `metric_swd_images` per
    set, MS-SSIM half as many pairs, the Inception metrics (fid, is, kid, pr) `metric_fid_images`, each capped at
    the data's size, and those only when the Inception weights are on disk (training downloads nothing). A
    metric whose count is 0 (or below 2) is off; every such decision gets a note."""
    from ganeval.inception import find_inception_weights
    asked = parse_metric_names(config.metrics) if config.metrics else []
    counts = {"swd": (config.metric_swd_images, "metric_swd_images"),
              "features": (config.metric_fid_images, "metric_fid_images")}
    names, notes = [], []
    for name in asked:
        count, key = counts["features" if metric_spec(name).features else "swd"]
        if min(count, num_images) < 2:
            notes.append(f"note: snapshot metric {name} is off ({key} = {count}, the data holds {num_images})")
        else:
            names.append(name)
            if count > num_images:
                notes.append(f"note: snapshot metric {name} reads {num_images} images per set, all the data holds "
                             f"({key} = {count})")
    weights = None
    featured = [name for name in names if metric_spec(name).features]
    if featured:
        try:
            weights = find_inception_weights(download=False)
        except UserError:
            names = [name for name in names if name not in featured]
            notes.append(f"note: snapshot metric{'s' if len(featured) > 1 else ''} {', '.join(featured)} skipped: no "
                         "Inception weights on this machine (training downloads nothing; set $GANEVAL_INCEPTION "
                         "to the file, or run `ganeval fid` once to fetch them)")
    if names:
        notes.append(f"note: snapshot metrics ({', '.join(names)}) are scored from {SWD_MIN_RESOLUTION}x"
                     f"{SWD_MIN_RESOLUTION} on, at the working resolution")
    swd_count, fid_count = (min(count, num_images) for count in (config.metric_swd_images, config.metric_fid_images))
    settings = None if not names else MetricSettings.from_values(
        config.seed, False, swd_images=swd_count, msssim_pairs=swd_count // 2, fid_images=fid_count,
        allow_singular=True, is_splits=max(1, min(10, fid_count)), pr_k=max(1, min(3, fid_count - 1)))
    return SnapshotMetrics(names, settings, weights, notes)


def score_generator(G_ema, lod: float, data: TrainingData, plan: SnapshotMetrics, device) -> dict:
    """The snapshot metrics of `plan` for the EMA generator against the reals, both at the current working
    resolution, through `progan.evaluation.score_generator_source` (the path of `progan evaluate` too).
    Returns {name: the metric's JSON object + "resolution"}; empty below 16×16 (SWD's smallest level)."""
    resolution = G_ema.working_resolution(lod)
    if resolution < SWD_MIN_RESOLUTION or not plan.names:
        return {}
    return score_generator_source(G_ema, lod, resolution, RealsSource(data, resolution), plan.names, plan.settings,
                                  device, inception=plan.inception)


def run_training(config: TrainingConfig, data_path, run_dir, resume=None, device="auto", log=print,
                 progress_fn=None) -> Progress:
    """Train `config` on the images at `data_path`, writing into `run_dir` (locked against a second writer);
    continue from `resume` (a checkpoint or a run directory) when given. `log(line)` receives one line per tick
    (rank 0); `progress_fn(progress, phase)` is called after every tick. SIGTERM / SIGINT end the run at the next
    round with a checkpoint (see the module docstring). Returns the final counters."""
    run_dir = Path(run_dir)
    if resume is None and not distributed.is_distributed():  # under torchrun the launcher checked (progan.cli)
        check_new_run_dir(run_dir)
    lock = FolderLock(run_dir, "progan train") if distributed.is_main_process() else None
    with lock or contextlib.nullcontext(), StopRequest() as stop:
        run = TrainingRun(config, data_path, run_dir, device, log, stop)
        if resume is not None:
            run.resume_from(resume)
        run.share_networks()
        run.prepare_run_dir()
        return run.train(progress_fn)


class TrainingRun:
    """One training run: its data, networks, optimizers, random streams and counters, and the steps that advance
    them. `run_training` builds one, resumes it, prepares the run folder and calls `train`."""

    def __init__(self, config: TrainingConfig, data_path, run_dir: Path, device, log, stop: StopRequest):
        self.config, self.run_dir, self.log, self.stop = config, run_dir, log, stop
        self.device = resolve_device(device)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.main = distributed.is_main_process()
        torch.backends.cuda.matmul.allow_tf32 = config.allow_tf32
        torch.backends.cudnn.allow_tf32 = config.allow_tf32
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(config.seed)
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=config.bf16)
        self.data = TrainingData(data_path, config.resolution, seed=config.seed, cache_mb=config.data_cache_mb,
                                 workers=config.data_workers)
        self.data_path = str(Path(data_path).resolve())
        config.resolution = self.data.resolution
        check_gpu_split(config, self.world)
        self.metrics_plan = snapshot_metrics(config, self.data.num_images)
        if self.main:
            for line in self.metrics_plan.notes:
                log(line)
        self._build_networks()
        self.state = Progress()
        self.tick_stats: dict[str, list[torch.Tensor]] = {}
        self.grid_columns, rows = grid_shape(config)
        self.grid_latents = torch.randn(self.grid_columns * rows, config.latent_size,
                                        generator=torch.Generator().manual_seed(config.seed + 123))
        self.stats_file = run_dir / "stats.jsonl"
        self.board = None
        self.tick_started, self.maintenance_seconds = time.perf_counter(), 0.0

    def _build_networks(self) -> None:
        """G, D (NHWC on CUDA, for cuDNN's tensor cores), G's moving average, the optimizers, the loss, the shared
        random stream of latents, mixing factors and flips (the same on every rank), the gradient reducers."""
        G, D = build_networks(self.config, channels_last=self.device.type == "cuda")
        self.G, self.D = G.to(self.device), D.to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.G_opt, self.D_opt = make_optimizers(self.G, self.D, self.config)
        self.loss = make_loss(self.config)
        self.rng = torch.Generator().manual_seed(self.config.seed)
        self.G_reducer, self.D_reducer = GradientReducer(self.G), GradientReducer(self.D)

    # ------------------------------------------------------------------------------------------------------------
    # Resume, share, prepare

    def resume_from(self, resume) -> None:
        """Load the newest valid checkpoint of `resume` (a file or a run folder): every state that a snapshot keeps,
        so that training continues exactly."""
        resume_file = find_checkpoint(resume)
        checkpoint = load_checkpoint(resume_file, map_location=self.device)
        _check_resumable(checkpoint, self.config, resume_file)
        for module, key in ((self.G, "G"), (self.D, "D"), (self.G_ema, "G_ema")):
            module.load_state_dict(checkpoint[key])
        self.G_opt.load_state_dict(checkpoint["G_opt"])
        self.D_opt.load_state_dict(checkpoint["D_opt"])
        self.loss.load_state_dict(checkpoint["loss_state"])
        progress = checkpoint["progress"]
        self.state = Progress(**{**progress, "interrupted": False,
                                 "lod_bounds": tuple(progress["lod_bounds"]) if progress["lod_bounds"] is not None
                                 else None})
        self.tick_stats = {key: [torch.tensor(v, device=self.device) for v in values]
                           for key, values in checkpoint.get("partial_tick", {}).items()}
        self.data.indices.position = checkpoint["data_position"]
        self.rng.set_state(checkpoint["rng"]["latents"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if self.device.type == "cuda" and checkpoint["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], self.device)

    def share_networks(self) -> None:
        """Under torchrun, every rank starts from rank 0's weights."""
        if distributed.is_distributed():
            for tensor in [*self.G.parameters(), *self.D.parameters(), *self.G_ema.parameters(),
                           *self.G_ema.buffers()]:
                dist.broadcast(tensor.data, src=0)

    def prepare_run_dir(self) -> None:
        """Rank 0: the resolved config (--resume needs no --data), the reals grid, stats.jsonl cut back to the
        resumed tick, the TensorBoard writer."""
        if not self.main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_output(self.run_dir / "config.json") as temporary:
            temporary.write_text(json.dumps({**self.config.to_dict(), "data_path": self.data_path}, indent=2) + "\n")
        grid_indices = np.arange(min(len(self.grid_latents), self.data.num_images))
        save_grid(self.data.reals_uint8(grid_indices, self.config.resolution), self.grid_columns,
                  self.run_dir / "reals.png")
        truncate_stats(self.stats_file, self.state.tick)
        self.board = _tensorboard_writer(self.run_dir) if self.config.tensorboard else None

    # ------------------------------------------------------------------------------------------------------------
    # Train

    def train(self, progress_fn=None) -> Progress:
        """Rounds until total_kimg, a tick's maintenance (statistics, snapshots, metrics) whenever a tick's images
        are done, and a stop at the end of a round when a signal asked for one. Returns the counters."""
        state, total_nimg = self.state, round(self.config.total_kimg * 1000)
        self.tick_started = time.perf_counter()
        done = state.cur_nimg >= total_nimg
        while not done:
            phase = training_phase(self.config, state.cur_nimg / 1000, self.world)
            self._enter_phase(phase)
            self._train_round(phase, total_nimg)
            done = state.cur_nimg >= total_nimg
            if state.cur_nimg >= state.tick_start_nimg + phase.tick_kimg * 1000 or done:
                self._end_tick(phase, done, progress_fn)
            if not done and self._stop_if_asked(phase):
                break
        self.data.close()
        if self.board is not None:
            self.board.close()
        return state

    def _stop_if_asked(self, phase: Phase) -> bool:
        """After each round that does not end the run: whether a signal asked to stop (on any rank); if so, the
        interrupted checkpoint is written."""
        if self.stop.requested(self.device):
            self._interrupt(phase)
            return True
        return False

    def _enter_phase(self, phase: Phase) -> None:
        """The schedule point of this round: on new lod bounds the Adam moments are reset (config) and the gradient
        buckets re-learnt; learning rates and G's lod set."""
        state = self.state
        if state.lod_bounds != phase.lod_bounds or self.G_reducer.buckets is None:
            if self.config.reset_opt_for_new_lod and state.lod_bounds not in (None, phase.lod_bounds):
                self.G_opt.state.clear()
                self.D_opt.state.clear()
            state.lod_bounds = phase.lod_bounds
            self.G_reducer.relearn()
            self.D_reducer.relearn()
        for group in self.G_opt.param_groups:
            group["lr"] = phase.G_lr
        for group in self.D_opt.param_groups:
            group["lr"] = phase.D_lr
        self.G.lod.fill_(phase.lod)

    def _train_round(self, phase: Phase, total_nimg: int) -> None:
        """minibatch_repeats × {D_repeats × [D step + EMA update]; G step}, ending early at total_nimg."""
        config, state, share = self.config, self.state, phase.minibatch // self.world
        for _repeat in range(config.minibatch_repeats):
            for _d_step in range(config.D_repeats):
                reals = self._reals_for(phase)
                z = self._draw(phase.minibatch, config.latent_size)
                mixing = torch.rand(phase.minibatch, 1, 1, 1, generator=self.rng)[self.rank * share:
                                                                                  (self.rank + 1) * share]
                D_loss, D_stats, finite = discriminator_step(self.G, self.D, self.D_opt, self.loss, reals, z,
                                                             mixing.to(self.device), phase.lod, self.autocast,
                                                             self.D_reducer)
                state.skipped_steps += not finite
                update_ema(self.G_ema, self.G, config.G_ema_beta)
                state.cur_nimg += phase.minibatch
                self._record({"loss_D": D_loss, **D_stats})
            z = self._draw(phase.minibatch, config.latent_size)
            G_loss, G_stats, finite = generator_step(self.G, self.D, self.G_opt, self.loss, z, phase.lod,
                                                     self.autocast, self.G_reducer)
            state.skipped_steps += not finite
            self._record({"loss_G": G_loss, **G_stats})
            if state.cur_nimg >= total_nimg:
                break

    def _record(self, values: dict) -> None:
        for key, value in values.items():
            self.tick_stats.setdefault(key, []).append(value.detach().float())

    def _draw(self, count: int, *shape) -> torch.Tensor:
        """`count` global samples of N(0, 1) of `shape` from the shared generator; this rank's slice."""
        share = count // self.world
        return torch.randn(count, *shape, generator=self.rng)[self.rank * share:(self.rank + 1) * share].to(
            self.device)

    def _reals_for(self, phase: Phase) -> torch.Tensor:
        """This rank's slice of the next minibatch of reals at the phase's resolution, mirrored at random (the
        shared stream's flips) and, while fading in, blended with its 2×2 box average upsampled."""
        images = to_float_reals(self.data.next_batch(phase.minibatch, phase.resolution, (self.rank, self.world)),
                                phase.resolution, self.device)
        share = phase.minibatch // self.world
        flips = torch.rand(phase.minibatch, generator=self.rng)[self.rank * share:(self.rank + 1) * share] < 0.5
        if self.config.mirror:
            images = torch.where(flips.to(self.device).reshape(-1, 1, 1, 1), images.flip(3), images)
        if phase.fade_weight > 0:
            coarse = F.interpolate(F.avg_pool2d(images, 2), scale_factor=2, mode="nearest")
            images = torch.lerp(images, coarse, phase.fade_weight)
        return images

    # ------------------------------------------------------------------------------------------------------------
    # Ticks, snapshots, interruption

    def _end_tick(self, phase: Phase, done: bool, progress_fn) -> None:
        """A tick's maintenance: its stats.jsonl row (the row first, then its snapshot: a resume from any checkpoint
        finds its tick's row), image and network snapshots with their metrics, TensorBoard, the log line,
        `progress_fn(progress, phase)`; all of it timed as the next row's maintenance_sec."""
        maintenance_started = time.perf_counter()
        entry = self._tick_entry(phase, maintenance_started - self.tick_started)
        self.G_ema.lod.fill_(phase.lod)
        if self.main and (self.state.tick % self.config.image_snapshot_ticks == 0 or done):
            self._snapshot_images(phase)
        network_snapshot = self.state.tick % self.config.network_snapshot_ticks == 0 or done
        if network_snapshot:
            entry["snapshot"] = snapshot_name(self.state.cur_nimg)
            entry["metrics"] = score_generator(self.G_ema, phase.lod, self.data, self.metrics_plan, self.device)
        if self.main:
            append_text(self.stats_file, json.dumps(entry) + "\n")  # a full disk: one line naming the file
            if network_snapshot:
                self._snapshot_network(phase)
                _remove_superseded(self.run_dir, self.state.cur_nimg)
            if self.board is not None:
                _write_scalars(self.board, entry)
            self.log(tick_line(entry))
        if progress_fn is not None:
            progress_fn(self.state, phase)
        self.maintenance_seconds = time.perf_counter() - maintenance_started
        self.tick_started = time.perf_counter()

    def _tick_entry(self, phase: Phase, tick_seconds: float) -> dict:
        """The tick's row: schedule point, the steps' statistics averaged over the tick and the ranks, speed,
        the previous tick's maintenance time, memory. Starts the next tick's counters."""
        state = self.state
        tick_images = state.cur_nimg - state.tick_start_nimg
        state.tick += 1
        entry = {"tick": state.tick, "kimg": state.cur_nimg / 1000, "lod": phase.lod,
                 "resolution": phase.resolution, "minibatch": phase.minibatch, "G_lr": phase.G_lr,
                 "D_lr": phase.D_lr}
        for key, values in self.tick_stats.items():
            entry[key] = float(distributed.all_reduce_sum(torch.stack(values).mean().to(self.device)) / self.world)
        entry.update({"sec_per_tick": tick_seconds, "sec_per_kimg": tick_seconds / max(tick_images / 1000, 1e-9),
                      "images_per_second": tick_images / max(tick_seconds, 1e-9),
                      "maintenance_sec": self.maintenance_seconds, "skipped_steps": state.skipped_steps,
                      **_memory_stats(self.device)})
        self.tick_stats.clear()
        state.tick_start_nimg = state.cur_nimg
        return entry

    def _snapshot_images(self, phase: Phase) -> None:
        with torch.no_grad():
            images = self.G_ema(self.grid_latents.to(self.device), phase.lod)
        save_grid(images_to_uint8(images, self.config.resolution).cpu(), self.grid_columns,
                  self.run_dir / f"fakes{self.state.cur_nimg // 1000:06d}.png")

    def _snapshot_network(self, phase: Phase, path: Path | None = None) -> Path:
        """A full checkpoint (everything `resume_from` loads) at `path`, default network-snapshot-<kimg>.pt."""
        state, device = self.state, self.device
        cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        progress = {**state.__dict__, "lod_bounds": list(state.lod_bounds) if state.lod_bounds else None}
        return save_checkpoint(path or self.run_dir / snapshot_name(state.cur_nimg), {
            "config": self.config.to_dict(), "data_path": self.data_path, "kimg": state.cur_nimg / 1000,
            "lod": phase.lod, "G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
            "G_opt": self.G_opt.state_dict(), "D_opt": self.D_opt.state_dict(), "loss_state": self.loss.state_dict(),
            "progress": progress, "data_position": self.data.indices.position,
            "rng": {"latents": self.rng.get_state(), "torch": torch.get_rng_state(), "cuda": cuda_rng},
            "partial_tick": {key: [float(v) for v in values] for key, values in self.tick_stats.items()},
        })

    def _interrupt(self, phase: Phase) -> None:
        """Stop at this round: a full checkpoint (with the partial tick's statistics) that --resume continues."""
        self.state.interrupted = True
        if self.main:
            self.G_ema.lod.fill_(phase.lod)
            path = self._snapshot_network(phase, self.run_dir / f"interrupted-{self.state.cur_nimg:09d}.pt")
            self.log(f"stopped by signal {self.stop.signal or 'on another rank'} at "
                     f"{self.state.cur_nimg / 1000:.3f} kimg: {path.name} written")


def tick_line(entry: dict) -> str:
    """The log line of a tick's stats.jsonl row."""
    return (f"tick {entry['tick']:<4d} kimg {entry['kimg']:<8.1f} lod {entry['lod']:<5.2f} "
            f"res {entry['resolution']:<4d} minibatch {entry['minibatch']:<3d} "
            f"loss_D {entry.get('loss_D', float('nan')):<8.3f} loss_G {entry.get('loss_G', float('nan')):<8.3f} "
            f"{entry['images_per_second']:.0f} img/s"
            + (f" SWD {entry['metrics']['swd']['avg']:.2f}" if "swd" in entry.get("metrics", {}) else ""))


def snapshot_name(nimg: int) -> str:
    """The file name of the network snapshot after `nimg` images: network-snapshot-<whole kimg>.pt."""
    return f"network-snapshot-{nimg // 1000:06d}.pt"


def _remove_superseded(run_dir: Path, nimg: int) -> None:
    """Delete the interrupted-*.pt checkpoints a newer network snapshot (at `nimg` images) replaces."""
    for file in run_dir.glob("interrupted-*.pt"):
        match = INTERRUPTED_NAME.match(file.name)
        if match and int(match.group(1)) <= nimg:
            file.unlink(missing_ok=True)


def _check_resumable(checkpoint: dict, config: TrainingConfig, path: Path) -> None:
    """UserError when the checkpoint's networks differ from `config`'s (a config.json from another run)."""
    stored = TrainingConfig.from_dict(checkpoint["config"])
    shaping = ("resolution", "latent_size", "fmap_base", "D_fmap_base", "fmap_max", "use_wscale", "G_norm",
               "D_norm", "mbstd_group_size", "fused_scale")
    differ = [key for key in shaping if getattr(stored, key) != getattr(config, key)]
    if differ:
        raise UserError(f"{path}: its networks were trained with other settings than this config "
                        f"({', '.join(f'{key} {getattr(stored, key)} vs {getattr(config, key)}' for key in differ)})")


def _tensorboard_writer(run_dir: Path):
    """A TensorBoard SummaryWriter on `run_dir`, or None when the `tensorboard` package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir))


def _write_scalars(board, entry: dict) -> None:
    """One tick of stats.jsonl as TensorBoard scalars (step = images shown): losses, lod, kimg, img/s, metrics."""
    step = round(entry["kimg"] * 1000)
    for key, value in entry.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            board.add_scalar(f"Progress/{key}" if key in ("tick", "kimg", "lod", "resolution", "minibatch")
                             else f"Train/{key}", value, step)
    for name, result in entry.get("metrics", {}).items():
        value = result.get("avg", result.get("value"))
        if isinstance(value, (int, float)):
            board.add_scalar(f"Metrics/{name}", value, step)
    board.flush()
