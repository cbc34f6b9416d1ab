"""Import the official pretrained networks (the TensorFlow release's `karras2018iclr-*.pkl`) without TensorFlow.

A release pickle holds a tuple of three `tfutil.Network` objects (G, D, Gs = the long-term average of G). Each
pickles the dictionary of `Network.__getstate__` (tfutil.py): version 2, name, static_kwargs (the keyword
arguments of the build function, e.g. `resolution`, `fused_scale`), build_module_src (the source of networks.py,
which TensorFlow `exec`s on load), build_func_name (G_paper / D_paper) and variables (a list of (local name,
NumPy array), e.g. ('8x8/Conv0_up/weight', float32 [3, 3, 512, 512])).

We read it with a restricted unpickler: `find_class` answers only the Network class (as a plain record), NumPy's
array, scalar and dtype reconstructors (guarded so that memory stays bounded by the file's size) and OrderedDict;
any other class or function (os.system, builtins.eval …) stops the load before it runs. build_module_src is never
executed: the build function's default arguments are read from it with `ast` (literals only), then overridden by
static_kwargs, as the original's call does.

Variables map onto progan/networks.py one to one: TF kernels HWIO -> OIHW; dense [in, out] -> [out, in]; the
fused upsampling kernel of G (`Conv0_up`, TF layout [k, k, out, in], a stride-2 transposed convolution) -> our
`conv0_up` ([in, out, k, k]), or, when the config is not fused, our upsample + `conv0` with the kernel flipped
in space (the two are the same function); the equalized-LR scale (wscale = gain / sqrt(fan_in)) is applied at
run time by both codes on the same raw variable, so values are copied unchanged.
"""

from __future__ import annotations

import ast
import collections
import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gancore.errors import UserError

from .checkpoint import load_checkpoint, save_checkpoint
from .configs import TrainingConfig
from .networks import Discriminator, Generator, count_parameters

NETWORK_CLASS = ("tfutil", "Network")
THEANO_NETWORK_CLASS = ("network", "Network")  # the Theano code's pickles (legacy.py's LegacyUnpickler maps them)


class NetworkRecord:
    """What an unpickled `tfutil.Network` becomes here: its `__getstate__` dictionary, nothing executed."""

    def __setstate__(self, state):
        self.state = state


def _latin1_encode(text, encoding="latin1"):
    """`_codecs.encode` as protocol-2 pickles use it for bytes (latin-1 only)."""
    if str(encoding).lower().replace("-", "") != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class _NdarrayToken:
    """Stands for numpy.ndarray in a pickle: it may only be passed to `_reconstruct`, never called (a direct
    `ndarray(shape)` would allocate whatever size the file asks for)."""


def _reconstruct(subtype, shape, dtype):
    """numpy's `_reconstruct` as pickles use it: an empty ndarray that BUILD then fills (`__setstate__` checks
    the data against the shape, so memory stays bounded by the file's size)."""
    if subtype is not _NdarrayToken or math.prod(shape) > 1:
        raise pickle.UnpicklingError("an ndarray reconstruction unlike numpy's own")
    return _numpy_core().multiarray._reconstruct(np.ndarray, shape, dtype)


def _scalar(dtype, *data):
    """numpy's `scalar` for plain numeric dtypes (a huge void dtype would allocate its size)."""
    if not isinstance(dtype, np.dtype) or dtype.itemsize > 16:
        raise pickle.UnpicklingError(f"a NumPy scalar of dtype {dtype}")
    return _numpy_core().multiarray.scalar(dtype, *data)


def _numpy_core():
    return np._core if hasattr(np, "_core") else np.core


def _allowed_globals() -> dict[tuple[str, str], object]:
    allowed = {NETWORK_CLASS: NetworkRecord, ("collections", "OrderedDict"): collections.OrderedDict,
               ("numpy", "ndarray"): _NdarrayToken, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _latin1_encode}
    for package in ("numpy.core", "numpy._core"):  # 2018 pickles name numpy.core, NumPy 2 writes numpy._core
        allowed[(f"{package}.multiarray", "_reconstruct")] = _reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = _scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = _numpy_core().numeric._frombuffer
    return allowed


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle names a class or function outside the allow-list."""


class NetworkUnpickler(pickle.Unpickler):
    """An unpickler that builds only Network records, NumPy arrays/scalars/dtypes and (Ordered)dicts."""

    ALLOWED = _allowed_globals()

    def find_class(self, module: str, name: str):
        if (module, name) == THEANO_NETWORK_CLASS:
            raise pickle.UnpicklingError("a Theano-era network (network.Network): convert it once with the "
                                         "original's misc.load_pkl and pickle.dump, then import that")
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"it names {module}.{name}") from None


@dataclass
class TFNetwork:
    """One `tfutil.Network` of a release pickle. variables: local name -> array (float32 for weights)."""

    name: str
    build_func_name: str
    kwargs: dict            # the build function's literal defaults overridden by the pickle's static_kwargs
    static_kwargs: dict
    variables: dict[str, np.ndarray]


def read_network_pickle(path: str | os.PathLike) -> tuple[TFNetwork, TFNetwork, TFNetwork]:
    """(G, D, Gs) of a release pickle; UserError for anything else (another class is refused unexecuted)."""
    try:
        with open(path, "rb") as file:
            loaded = NetworkUnpickler(file, encoding="latin1").load()
    except RefusedGlobal as error:
        raise UserError(f"{path}: refused: {error}, which is not part of a network pickle (nothing in the file "
                        "was run)") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError) as error:
        raise UserError(f"{path}: not a readable network pickle ({type(error).__name__}: {error})") from None
    if not (isinstance(loaded, tuple) and len(loaded) == 3 and all(isinstance(n, NetworkRecord) for n in loaded)):
        raise UserError(f"{path}: expected the release format, a tuple of three tfutil.Network (G, D, Gs)")
    return tuple(_network(record.state, path) for record in loaded)


def _network(state, path) -> TFNetwork:
    if not isinstance(state, dict) or state.get("version") != 2:
        raise UserError(f"{path}: a tfutil.Network of an unsupported format (expected version 2, as tfutil.py "
                        "writes)")
    try:
        static_kwargs = dict(state["static_kwargs"])
        variables = {str(name): np.asarray(value) for name, value in state["variables"]}
        name, func, source = str(state["name"]), str(state["build_func_name"]), str(state["build_module_src"])
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"{path}: a tfutil.Network without {error}") from None
    for key, value in variables.items():
        if value.dtype.kind != "f":
            raise UserError(f"{path}: variable {key} of {name} holds {value.dtype}, not floating-point values")
    kwargs = {**build_function_defaults(source, func), **static_kwargs}
    return TFNetwork(name, func, kwargs, static_kwargs, variables)


def build_function_defaults(source: str, function: str) -> dict:
    """The literal default arguments of `function` in the Python `source` (parsed, never executed)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            arguments = node.args.args[len(node.args.args) - len(node.args.defaults):]
            defaults = {}
            for argument, default in zip(arguments, node.args.defaults):
                try:
                    defaults[argument.arg] = ast.literal_eval(default)
                except ValueError:
                    pass
            return defaults
    return {}


# ----------------------------------------------------------------------------------------------------------------
# Build-function arguments -> TrainingConfig


@dataclass(frozen=True)
class Requirement:
    """A build argument our networks support only at one value (the original's default)."""

    key: str
    value: object
    why: str


G_REQUIREMENTS = [Requirement("num_channels", 3, "RGB networks only"),
                  Requirement("label_size", 0, "no conditional networks"),
                  Requirement("fmap_decay", 1.0, "feature maps halve per resolution"),
                  Requirement("pixelnorm_epsilon", 1e-8, "pixel norm with epsilon 1e-8")]
D_REQUIREMENTS = G_REQUIREMENTS[:3]
SUPPORTED_FUNCTIONS = ("G_paper", "D_paper")
# The build arguments read or checked here; any other is ignored, as G_paper and D_paper ignore it (**kwargs).
KNOWN_KWARGS = frozenset({"resolution", "fmap_base", "fmap_max", "latent_size", "normalize_latents", "use_wscale",
                          "use_pixelnorm", "use_leakyrelu", "mbstd_group_size", "fused_scale", "dtype", "structure",
                          *(req.key for req in G_REQUIREMENTS)})


def _check_network(net: TFNetwork, function: str, requirements: list[Requirement], path) -> None:
    if net.build_func_name != function:
        raise UserError(f"{path}: network {net.name} is built by {net.build_func_name}; only "
                        f"{' and '.join(SUPPORTED_FUNCTIONS)} (the paper's networks) can be imported")
    for req in requirements:
        if req.key in net.kwargs and net.kwargs[req.key] != req.value:
            raise UserError(f"{path}: {net.name} has {req.key} = {net.kwargs[req.key]!r}; this toolkit supports "
                            f"{req.value!r} only ({req.why})")


def config_from_networks(G: TFNetwork, D: TFNetwork, Gs: TFNetwork, path="<pickle>") -> TrainingConfig:
    """Our config for the release networks: sizes, normalisation, activations, mbstd group and D's
    `fused_scale` (G's fused upsampling is mapped exactly onto either of our layouts)."""
    for net in (G, Gs):
        _check_network(net, "G_paper", G_REQUIREMENTS, path)
    _check_network(D, "D_paper", D_REQUIREMENTS, path)
    if G.kwargs != Gs.kwargs:
        raise UserError(f"{path}: G and Gs were built with different arguments")
    try:
        values = _config_values(G.kwargs, D.kwargs)
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"{path}: unusable build arguments ({type(error).__name__}: {error})") from None
    try:
        return TrainingConfig.from_dict(values)
    except UserError as error:
        raise UserError(f"{path}: {error}") from None


def _config_values(g: dict, d: dict) -> dict:
    """G's and D's build arguments (defaults applied) -> TrainingConfig values."""
    for key in ("resolution", "fmap_max", "use_wscale"):
        if g.get(key) != d.get(key):
            raise ValueError(f"G and D differ in {key} ({g.get(key)!r} vs {d.get(key)!r}); this toolkit shares it")
    nf0 = min(int(g["fmap_base"]), int(g["fmap_max"]))
    return {"resolution": int(g["resolution"]), "latent_size": int(g.get("latent_size") or nf0),
            "normalize_latents": bool(g["normalize_latents"]), "fmap_base": int(g["fmap_base"]),
            "D_fmap_base": None if d["fmap_base"] == g["fmap_base"] else int(d["fmap_base"]),
            "fmap_max": int(g["fmap_max"]), "use_wscale": bool(g["use_wscale"]),
            "G_norm": "pixel" if g["use_pixelnorm"] else "none",
            "G_activation": "lrelu" if g["use_leakyrelu"] else "relu",
            "mbstd_group_size": max(int(d["mbstd_group_size"]), 0), "fused_scale": bool(d["fused_scale"])}


# ----------------------------------------------------------------------------------------------------------------
# Variables -> state dicts


def _conv(weight: np.ndarray) -> np.ndarray:
    """TF conv kernel [k, k, in, out] -> torch [out, in, k, k] (and the fused up kernel [k, k, out, in] ->
    torch conv_transpose [in, out, k, k])."""
    return weight.transpose(3, 2, 0, 1)


def _conv_flipped(weight: np.ndarray) -> np.ndarray:
    """A stride-2 transposed conv kernel [k, k, out, in] <-> upsample + conv kernel [out, in, k, k], both ways:
    the same function (spatial flip, in/out kept)."""
    return weight.transpose(2, 3, 0, 1)[:, :, ::-1, ::-1]


class _Variables:
    """Pops the variables of one network by TF local name; reports missing and unused ones."""

    def __init__(self, net: TFNetwork, path):
        self.net, self.path, self.remaining = net, path, dict(net.variables)

    def take(self, name: str) -> np.ndarray:
        try:
            return self.remaining.pop(name)
        except KeyError:
            raise UserError(f"{self.path}: {self.net.name} has no variable {name}") from None

    def layer(self, name: str, weight_map) -> tuple[np.ndarray, np.ndarray]:
        return weight_map(self.take(f"{name}/weight")), self.take(f"{name}/bias")

    def finish(self) -> None:
        if self.remaining:
            raise UserError(f"{self.path}: {self.net.name} has variables this network does not use: "
                            f"{sorted(self.remaining)[:5]}")


def generator_state(net: TFNetwork, config: TrainingConfig, path="<pickle>") -> dict[str, torch.Tensor]:
    """A G_paper's variables as our Generator's state dict (config.fused_scale picks `conv0_up` or `conv0`)."""
    v, log2 = _Variables(net, path), int(math.log2(config.resolution))
    state = {"blocks.4.dense.weight": v.take("4x4/Dense/weight").T, "blocks.4.dense_bias": v.take("4x4/Dense/bias")}
    state["blocks.4.conv1.weight"], state["blocks.4.conv1.bias"] = v.layer("4x4/Conv", _conv)
    for res in (2 ** k for k in range(3, log2 + 1)):
        tf_fused = f"{res}x{res}/Conv0_up/weight" in v.remaining
        same = tf_fused == config.fused_scale
        ours = f"blocks.{res}.conv0_up" if config.fused_scale else f"blocks.{res}.conv0"
        state[f"{ours}.weight"], state[f"{ours}.bias"] = v.layer(
            f"{res}x{res}/Conv0_up" if tf_fused else f"{res}x{res}/Conv0", _conv if same else _conv_flipped)
        state[f"blocks.{res}.conv1.weight"], state[f"blocks.{res}.conv1.bias"] = v.layer(f"{res}x{res}/Conv1", _conv)
    for k in range(2, log2 + 1):
        state[f"to_rgb.{2 ** k}.weight"], state[f"to_rgb.{2 ** k}.bias"] = v.layer(f"ToRGB_lod{log2 - k}", _conv)
    state["lod"] = v.take("lod").reshape(())
    v.finish()
    return _tensors(state)


def discriminator_state(net: TFNetwork, config: TrainingConfig, path="<pickle>") -> dict[str, torch.Tensor]:
    """A D_paper's variables as our Discriminator's state dict (its `lod` variable is returned separately)."""
    v, log2 = _Variables(net, path), int(math.log2(config.resolution))
    state = {}
    for k in range(log2, 1, -1):
        res = 2 ** k
        state[f"from_rgb.{res}.weight"], state[f"from_rgb.{res}.bias"] = v.layer(f"FromRGB_lod{log2 - k}", _conv)
        if k > 2:
            state[f"blocks.{res}.conv0.weight"], state[f"blocks.{res}.conv0.bias"] = v.layer(f"{res}x{res}/Conv0",
                                                                                          _conv)
            ours, theirs = ("conv1_down", "Conv1_down") if config.fused_scale else ("conv1", "Conv1")
            state[f"blocks.{res}.{ours}.weight"], state[f"blocks.{res}.{ours}.bias"] = v.layer(
                f"{res}x{res}/{theirs}", _conv)
    state["epilogue.conv.weight"], state["epilogue.conv.bias"] = v.layer("4x4/Conv", _conv)
    state["epilogue.dense.weight"], state["epilogue.dense.bias"] = v.layer("4x4/Dense0", np.transpose)
    state["epilogue.out.weight"], state["epilogue.out.bias"] = v.layer("4x4/Dense1", np.transpose)
    v.take("lod")
    v.finish()
    return _tensors(state)


def _tensors(state: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)) for key, value in state.items()}


# ----------------------------------------------------------------------------------------------------------------
# The whole import


@dataclass
class ImportResult:
    """What `import_pickle` wrote: the checkpoint, its config, Gs's lod and parameter counts."""

    path: Path
    config: TrainingConfig
    lod: float
    G_params: int
    D_params: int
    ignored_kwargs: list[str] = field(default_factory=list)


def _load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str, path) -> dict:
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shapes that do not fit the build arguments
        reason = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise UserError(f"{path}: {what} does not fit its build arguments ({reason})") from None
    if missing or unexpected:
        raise UserError(f"{path}: {what} does not fit our network (missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]})")
    return module.state_dict()


def import_pickle(pickle_path: str | os.PathLike, out_path: str | os.PathLike) -> ImportResult:
    """Read a release pickle and write a progan checkpoint (config, G, D, G_ema = Gs, lod) to `out_path`
    (atomically); the written file is read back through `load_checkpoint`'s checks."""
    G_tf, D_tf, Gs_tf = read_network_pickle(pickle_path)
    config = config_from_networks(G_tf, D_tf, Gs_tf, pickle_path)
    weights = {"G": generator_state(G_tf, config, pickle_path), "D": discriminator_state(D_tf, config, pickle_path),
               "Gs": generator_state(Gs_tf, config, pickle_path)}  # every variable found before building networks
    G, D, G_ema = Generator(config), Discriminator(config), Generator(config)
    state = {"config": config.to_dict(), "imported_from": Path(pickle_path).name,
             "G": _load_into(G, weights["G"], "G", pickle_path), "D": _load_into(D, weights["D"], "D", pickle_path),
             "G_ema": _load_into(G_ema, weights["Gs"], "Gs", pickle_path)}
    state["lod"] = float(G_ema.lod)
    save_checkpoint(out_path, state)
    load_checkpoint(out_path)
    ignored = sorted(key for key in {**G_tf.static_kwargs, **D_tf.static_kwargs} if key not in KNOWN_KWARGS)
    return ImportResult(Path(out_path), config, state["lod"], count_parameters(G), count_parameters(D), ignored)

