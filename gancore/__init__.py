"""gancore: what the toolkit's three jobs (ganeval, celebahq, progan) share, and nothing job-specific.

- `gancore.sources`: image sources (folders, zips, arrays, HDF5, registered kinds such as generator checkpoints),
  decoding and streaming uint8 NCHW batches;
- `gancore.runtime`: device choice (no side effects), TF32 guard, progress bars, the cache root, atomic output;
- `gancore.distributed`: rank/world helpers; the torchrun process group is started explicitly by each entry point
  (`distributed.start_from_environment`), never by a helper;
- `gancore.errors`: `UserError`, the toolkit-wide error type that the CLIs print as one line;
- `gancore.cli`: the CLI helpers (one-line errors, rank-0 output, tables, the image-source options).

The import graph is a DAG: gancore <- ganeval <- {celebahq, progan}; gancore imports none of them.
"""

from .errors import SourceError, UserError

__all__ = ["SourceError", "UserError"]
