"""CLI helpers shared by the toolkit's commands: one-line user errors, rank-0 output, tables, source options."""

from __future__ import annotations

import functools
import os
import sys

import click

from . import distributed
from .errors import UserError, printable
from .locking import TAKE_OVER_ENV_VAR
from .runtime import resolve_device
from .sources import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV_VAR


def emit(message: str = "", err: bool = False) -> None:
    """click.echo on rank 0 only (under torchrun every rank runs the command; one prints the result)."""
    if distributed.is_main_process():
        click.echo(message, err=err)


def user_errors(command):
    """Turn UserError and OSError (and Ctrl-C) into one line on stderr and exit status 2 (1 for an interrupt); under
    torchrun also a collective's failure because another rank stopped or died (`distributed.peer_failure`). The
    line is `printable`: a name with a newline in the message cannot make it two lines."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as error:
            click.echo(f"error: {printable(error)}", err=True)
            sys.exit(2)
        except OSError as error:  # read-only folder, full disk, permission: one line naming the path
            click.echo(f"error: {printable(describe_os_error(error))}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(1)
        except RuntimeError as error:
            reason = distributed.peer_failure(error)
            if reason is None:
                raise
            click.echo(f"error: rank {distributed.rank()} lost the other ranks ({reason})", err=True)
            sys.exit(2)

    return wrapper


def describe_os_error(error: OSError) -> str:
    """'PATH: No space left on device' (or the bare reason when the error names no file)."""
    reason = error.strerror or str(error)
    if error.filename is not None:
        return f"{error.filename}: {reason}"
    return reason


def start_distributed(device: str | None, share_gpus: bool = False) -> None:
    """The CLIs' explicit start of the torchrun process group (a no-op outside torchrun); `share_gpus`: see
    `distributed.start_from_environment`."""
    distributed.start_from_environment(resolve_device(device, share_gpus), share_gpus)


def format_table(columns: list[str], rows: list[tuple[str, list[float]]], precision: int = 3) -> str:
    """A small right-aligned text table: one header line, one line per (label, values) row; every column at
    least one space wider than its name, so that names never run together."""
    label_width = max(len(label) for label, _ in rows)
    width = max(8, *(len(c) + 1 for c in columns), precision + 6)
    lines = [" " * label_width + "".join(f"{c:>{width}}" for c in columns)]
    for label, values in rows:
        lines.append(f"{label:<{label_width}}" + "".join(f"{v:>{width}.{precision}f}" for v in values))
    return "\n".join(lines)


def _environment_for_the_command(context: click.Context, name: str, value: str) -> None:
    """Set $name to `value` while this command runs (its worker processes and torchrun ranks inherit it), and put
    the previous value back when it ends: a command run from Python leaves no setting behind for the next one."""
    previous = os.environ.get(name)
    os.environ[name] = value

    def restore() -> None:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous

    context.call_on_close(restore)


def _set_max_pixels(context, parameter, value):
    if value is not None:  # the environment reaches the decoding worker processes
        _environment_for_the_command(context, MAX_PIXELS_ENV_VAR, str(value))
    return value


max_pixels_option = click.option(
    "--max-pixels", type=click.IntRange(1), default=None, expose_value=False, callback=_set_max_pixels,
    help=f"Refuse (or with --skip-bad skip) images larger than this many pixels, from their headers "
         f"[${MAX_PIXELS_ENV_VAR} or {DEFAULT_MAX_PIXELS:,}].")

def _set_take_over(context, parameter, value):
    if value:  # read by every FolderLock the command takes (gancore.locking)
        _environment_for_the_command(context, TAKE_OVER_ENV_VAR, "1")
    return value


take_over_lock_option = click.option(
    "--take-over-lock", is_flag=True, expose_value=False, callback=_set_take_over,
    help="Take over the output folder's lock when it names a process of another host (which cannot be checked "
         f"from here) [${TAKE_OVER_ENV_VAR}].")

common_source_options = [
    click.option("--device", default="auto", show_default=True, help="cuda, cuda:1, cpu, or auto."),
    click.option("--batch-size", type=click.IntRange(1), default=None, help="Images per batch [auto]."),
    click.option("--workers", "num_workers", type=click.IntRange(0), default=None,
                 help="Decoding worker processes [min(4, cores); 0 for arrays]."),
    click.option("--skip-bad", is_flag=True, help="Skip unreadable or odd-sized images and report them."),
    click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout."),
    click.option("--quiet", is_flag=True, help="No progress bars."),
    max_pixels_option,
]


def report_skipped(skipped: dict[str, list[str]] | list[str]) -> int:
    """Print each skipped file of a metric's sets on stderr as `emit_skipped` does, the set named after the label
    ('skipped (gen) NAME: REASON'; the items are 'NAME: REASON' strings); return how many there were."""
    groups = skipped.items() if isinstance(skipped, dict) else [("", skipped)]
    count = 0
    for name, items in groups:
        for item in items:
            emit(f"skipped{f' ({name})' if name else ''} {printable(item)}", err=True)
            count += 1
    return count


def emit_skipped(skipped: dict[str, str], label: str = "skipped") -> None:
    """Print 'LABEL NAME: REASON' on stderr for each skipped name (names and reasons `printable`): the one shape
    of every command's skip lines."""
    for name, reason in skipped.items():
        emit(f"{label} {printable(name)}: {printable(reason)}", err=True)


def source_options(command):
    for option in reversed(common_source_options):
        command = option(command)
    return command
