"""The official CelebA-HQ from NVIDIA's released deltas (`celebahq official`, `verify`, `check-decoder`).

The release (the original `dataset_tool.py create_celebahq`) ships, for each of the 30,000 images, an encrypted
difference between the final image and a "pre-delta" image that anyone with CelebA can compute:

* `image_list.txt`: a header `idx orig_idx orig_file proc_md5 final_md5`, then one row per image.
* row `idx`: the pre-delta image is the crop recipe on `img_celeba/<orig_file>` with landmark row `orig_idx` of
  `Anno/list_landmarks_celeba.txt` (float32), 1024², uint8 **CHW**; md5 of its bytes = `proc_md5`.
* its delta is member `delta%05d.dat % idx` of `deltas%05d.zip % (idx - idx % 1000)`: Fernet-encrypted with the key
  urlsafe_b64(PBKDF2-HMAC-SHA256(password = the raw JPEG file, salt = orig_file, 100,000 iterations, 32 bytes)),
  bz2-compressed, uint8 (3, 1024, 1024). final = (pre-delta + delta) mod 256, md5 of its CHW bytes = `final_md5`.

Each photo is read once: its bytes derive the key and feed the JPEG decoder (`celebahq.decoding`: IJG libjpeg 8d,
as the original, unless Pillow's decoder is asked for). `build_official` renders each row's pre-delta image
(`legacy=True`: Pillow 3.1.1 and numpy 1.x bit for bit,
`celebahq.legacy_pillow`; `legacy=False`: the current-Pillow reference renderer, to within a grey level), applies
the delta and writes `OUT/images/imgHQ%05d.png` (HWC RGB), one manifest line per row saying whether `proc_md5` and
`final_md5` matched, and `OUT/report.json`. A pre-delta image that differs still gives an image: the official
pixels plus our difference. Resumable (finished rows are kept), parallel (worker processes), one writer per folder.
"""

from __future__ import annotations

import base64
import bz2
import hashlib
import json
import os
import time
import zipfile
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from gancore.errors import UserError, read_text_file
from gancore.imagefiles import write_png
from gancore.locking import FolderLock
from gancore.outputs import atomic_output
from gancore.processes import helper_pool
from gancore.runtime import progress_bar
from gancore.sources import BadImage, decode_image

from .decoding import LIBJPEG_8D, PILLOW, decode_jpeg, decoder_description, jpeg_subsampling, require_decoder
from .landmarks import read_celeba_landmarks
from .manifest import ManifestWriter, latest_records, read_all_manifests, write_manifest
from .selection import ImageListRow, parse_image_list

OFFICIAL_ROWS = 30000
OFFICIAL_RESOLUTION = 1024
PBKDF2_ITERATIONS = 100_000
#: md5 of img_celeba/000001.jpg decoded to HWC uint8 by libjpeg 8d (the original's decoder check).
DECODER_MD5 = "9cad8178d6cb0196b36f7b34bc5eb6d3"
LANDMARK_FILE = Path("Anno") / "list_landmarks_celeba.txt"
IMAGES_DIR = "img_celeba"


# ----------------------------------------------------------------------------------------------------------------
# The release's files


def read_image_list(path: str | os.PathLike) -> list[ImageListRow]:
    """The release's image_list.txt (`selection.parse_image_list`), row i with idx i (the original indexes its
    columns by idx)."""
    path = Path(path)
    text = read_text_file(path, "ascii", "image list", " (the deltas folder holds image_list.txt and deltas*.zip)")
    rows = parse_image_list(text, str(path), in_order=True)
    if not rows:
        raise UserError(f"{path}: no rows after the header")
    return rows


def check_deltas(deltas: str | os.PathLike, rows: list[ImageListRow]) -> None:
    """Before any work: every zip the rows need opens and holds its members; UserError naming the first that
    does not (a missing or truncated zip, a missing member)."""
    deltas = Path(deltas)
    needed: dict[str, list[ImageListRow]] = {}
    for row in rows:
        needed.setdefault(row.zip_name, []).append(row)
    for zip_name, members in needed.items():
        path = deltas / zip_name
        if not path.is_file():
            raise UserError(f"{path}: missing (rows {members[0].idx}–{members[-1].idx} need it)")
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except (zipfile.BadZipFile, OSError) as error:
            raise UserError(f"{path}: not a readable zip, truncated or damaged ({error})") from None
        missing = [row.member for row in members if row.member not in names]
        if missing:
            raise UserError(f"{path}: member {missing[0]} missing ({len(missing)} of {len(members)} missing)")


# ----------------------------------------------------------------------------------------------------------------
# Encryption (the release's scheme, through the `cryptography` package)


def _require_cryptography() -> None:
    try:
        import cryptography.fernet  # noqa: F401
    except ImportError:
        raise UserError("the deltas are Fernet-encrypted: this needs the cryptography package "
                        "(pip install cryptography)") from None


def delta_key(jpeg_bytes: bytes, orig_file: str, iterations: int = PBKDF2_ITERATIONS) -> bytes:
    """The Fernet key of one row: urlsafe_b64(PBKDF2-HMAC-SHA256(jpeg bytes, salt = orig_file, 32 bytes))."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=orig_file.encode("ascii"), iterations=iterations)
    return base64.urlsafe_b64encode(kdf.derive(jpeg_bytes))


class DeltaError(Exception):
    """One row's delta cannot be used; the message is the skip reason."""


class DamagedDelta(DeltaError):
    """The delta member itself is at fault (not a Fernet token, not bz2, the wrong size); the message says how."""


class WrongKey(DeltaError):
    """A well-formed token whose HMAC fails under the photo's key: the photo is not the file the delta was made
    from, or the token was changed (only the pre-delta md5 can tell which, `process_row`)."""


#: A Fernet token: urlsafe base64 of version 0x80, 8-byte time, 16-byte IV, AES-CBC blocks of 16, 32-byte HMAC.
_FERNET_OVERHEAD, _AES_BLOCK = 1 + 8 + 16 + 32, 16


def check_token_form(token: bytes) -> None:
    """DamagedDelta unless `token` has the form of a Fernet token (any key): a damaged member is the delta's
    fault, whoever's photo is used."""
    import binascii

    try:
        raw = base64.b64decode(token.strip(), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise DamagedDelta("not a Fernet token (not urlsafe base64)") from None
    blocks = len(raw) - _FERNET_OVERHEAD
    if not raw or raw[0] != 0x80:
        raise DamagedDelta("not a Fernet token (no version byte 0x80)")
    if blocks < _AES_BLOCK or blocks % _AES_BLOCK:
        raise DamagedDelta(f"not a Fernet token ({len(raw)} bytes decoded: cut short or padded)")


def decrypt_delta(token: bytes, jpeg_bytes: bytes, orig_file: str, resolution: int = OFFICIAL_RESOLUTION
                  ) -> np.ndarray:
    """Fernet-decrypt and bz2-decompress one delta -> uint8 [3, R, R]; DamagedDelta (the member's fault) or
    WrongKey (the photo's, or a changed token) with the reason otherwise."""
    from cryptography.fernet import Fernet, InvalidToken

    check_token_form(token)
    try:
        compressed = Fernet(delta_key(jpeg_bytes, orig_file)).decrypt(token)
    except InvalidToken:
        raise WrongKey(f"decryption failed (InvalidToken): {orig_file} is not the file the deltas were made "
                       "from") from None
    expected = 3 * resolution * resolution
    try:  # at most one byte more than expected is ever inflated: a hostile delta cannot exhaust memory
        raw = bz2.BZ2Decompressor().decompress(compressed, max_length=expected + 1)
    except (OSError, ValueError, EOFError) as error:
        raise DamagedDelta(f"bz2 data does not decompress ({error})") from None
    if len(raw) != expected:
        size = f"more than {expected}" if len(raw) > expected else str(len(raw))
        raise DamagedDelta(f"it has {size} bytes, expected 3×{resolution}×{resolution}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(3, resolution, resolution)


def encrypt_delta(delta: np.ndarray, jpeg_bytes: bytes, orig_file: str) -> bytes:
    """The inverse of `decrypt_delta` (uint8 [3, R, R] -> token), as NVIDIA made the release; for tests."""
    from cryptography.fernet import Fernet

    payload = bz2.compress(np.ascontiguousarray(delta, dtype=np.uint8).tobytes())
    return Fernet(delta_key(jpeg_bytes, orig_file)).encrypt(payload)


# ----------------------------------------------------------------------------------------------------------------
# One row


def md5_hex(array: np.ndarray) -> str:
    return hashlib.md5(np.ascontiguousarray(array).tobytes()).hexdigest()


def pre_delta_image(photo: np.ndarray, landmarks: np.ndarray, legacy: bool = True,
                    resolution: int = OFFICIAL_RESOLUTION) -> np.ndarray:
    """The pre-delta image: uint8 HWC photo + 5 landmarks -> uint8 CHW [3, R, R], landmarks rounded to float32 as
    the original. legacy: Pillow 3.1.1 bit for bit; else the current-Pillow reference render."""
    points = np.asarray(landmarks, dtype=np.float32)
    if legacy:
        from .legacy_pillow import render_legacy

        image = render_legacy(photo, points, resolution)
    else:
        from .render import render_pil

        image = render_pil(photo, points.astype(np.float64), resolution)
    return np.ascontiguousarray(image.transpose(2, 0, 1))


@dataclass
class RowTask:
    """What a worker needs for one row (picklable)."""

    row: ImageListRow
    photo: Path
    landmarks: np.ndarray | None  # float32 [5, 2], None when the landmark row is unusable
    landmark_problem: str | None
    delta_zip: Path
    out: Path
    legacy: bool
    resolution: int
    decoder: str = LIBJPEG_8D  # celebahq.decoding.DECODERS


@dataclass
class RowResult:
    """The outcome of one row, as written to the manifest."""

    source: str  # imgHQ%05d, the manifest key
    idx: int
    orig_file: str
    status: str  # "ok" or "skipped"
    reason: str | None = None
    output: str | None = None
    md5: str | None = None  # of the written PNG's uint8 HWC RGB pixels (the build's manifest convention)
    proc_md5_match: bool | None = None
    final_md5_match: bool | None = None
    legacy: bool = True
    decoder: str = LIBJPEG_8D  # the JPEG decoder of the photo (celebahq.decoding.DECODERS)
    seconds: float = 0.0


def _read_delta(task: RowTask) -> bytes:
    try:
        with zipfile.ZipFile(task.delta_zip) as archive:
            return archive.read(task.row.member)
    except KeyError:
        raise UserError(f"{task.delta_zip}: member {task.row.member} missing") from None
    except (zipfile.BadZipFile, OSError) as error:
        raise DamagedDelta(f"unreadable ({error})") from None


def _delta_of(task: RowTask, jpeg: bytes, pre: np.ndarray) -> np.ndarray:
    """The row's decrypted delta uint8 [3, R, R]. DeltaError naming who is at fault: the zip member (unreadable,
    not a token, not bz2, the wrong size, or a token that the photo's key does not open although the photo renders
    to proc_md5), else the photo (its bytes do not derive the key)."""
    where = f"{task.delta_zip.name}: member {task.row.member} is damaged"
    try:
        return decrypt_delta(_read_delta(task), jpeg, task.row.orig_file, task.resolution)
    except DamagedDelta as error:
        raise DeltaError(f"{where}: {error}") from None
    except WrongKey:
        if md5_hex(pre) != task.row.proc_md5:
            raise
        raise DeltaError(f"{where}: it does not decrypt (InvalidToken) under the key of {task.row.orig_file}, "
                         "whose pre-delta image matches proc_md5 (or the JPEG's bytes were changed without its "
                         "pixels)") from None


def process_row(task: RowTask) -> RowResult:
    """Read the photo once, decode, render, decrypt, apply, check and write one row (runs in a worker). Bad input
    -> a skipped result whose reason blames the photo or the delta member."""
    started = time.perf_counter()
    row = task.row
    result = RowResult(row.name, row.idx, row.orig_file, "skipped", legacy=task.legacy, decoder=task.decoder)
    try:
        if task.landmarks is None:
            raise DeltaError(task.landmark_problem)
        try:
            jpeg = task.photo.read_bytes()  # the only read: these bytes are both the key and the pixels
        except OSError as error:
            raise DeltaError(f"{task.photo}: cannot read ({error.strerror or error})") from None
        try:
            photo = decode_jpeg(jpeg, task.decoder)
        except BadImage as error:
            raise DeltaError(f"{row.orig_file}: unreadable image ({error})") from None
        pre = pre_delta_image(photo, task.landmarks, task.legacy, task.resolution)
        final = pre + _delta_of(task, jpeg, pre)  # uint8: modulo 256, as the original
    except DeltaError as error:
        result.reason = str(error)
    else:
        image = np.ascontiguousarray(final.transpose(1, 2, 0))
        write_png(task.out / row.output, image)
        result.status, result.output, result.md5 = "ok", row.output, md5_hex(image)
        result.proc_md5_match = md5_hex(pre) == row.proc_md5
        result.final_md5_match = md5_hex(final) == row.final_md5
    result.seconds = round(time.perf_counter() - started, 3)
    return result


# ----------------------------------------------------------------------------------------------------------------
# The build


@dataclass
class OfficialOptions:
    """Settings of `celebahq official` (its flags)."""

    legacy: bool = True  # Pillow 3.1.1 / numpy 1.x bit for bit; False: the current-Pillow reference render
    decoder: str = LIBJPEG_8D  # the original's JPEG decoder; PILLOW only when asked for (not the official dataset)
    workers: int | None = None  # worker processes (default: the CPU count); 0 runs in this process
    limit: int | None = None  # only the first N rows (trials; the release has 30,000)
    resolution: int = OFFICIAL_RESOLUTION  # tests only: synthetic deltas at a small size; the release is 1024
    progress: bool = True


@dataclass
class DecoderCounts:
    """Rows of one JPEG decoder: with an image, whose pre-delta (proc) and final md5 match the release."""

    rows: int = 0
    proc_match: int = 0
    final_match: int = 0


def _record_decoder(record: dict) -> str:
    """The decoder a manifest record was made with (records from before the decoder choice: Pillow's)."""
    return record.get("decoder", PILLOW)


@dataclass
class OfficialReport:
    """Counts over every row asked for (this run and earlier ones); idx lists are sorted."""

    rows: int
    processed: int  # rows done by this run
    already_done: int
    ok: int  # rows with an image
    exact: int  # rows whose pre-delta and final md5s both match the release
    proc_mismatch: list[int] = field(default_factory=list)  # imaged rows whose pre-delta image differs
    final_mismatch: list[int] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # imgHQ%05d -> reason
    seconds: float = 0.0
    images_per_second: float = 0.0
    legacy: bool = True
    decoder: str = LIBJPEG_8D  # this run's JPEG decoder
    decoder_version: str = ""  # its library and version (celebahq.decoding.decoder_description)
    by_decoder: dict[str, DecoderCounts] = field(default_factory=dict)  # imaged rows by the decoder that made them

    @property
    def official(self) -> bool:
        """Every imaged row was decoded by libjpeg 8d and rendered by the legacy (Pillow 3.1.1) path."""
        return self.legacy and set(self.by_decoder) <= {LIBJPEG_8D}

    def to_dict(self) -> dict:
        return dict(asdict(self), official=self.official)


def _source_layout(src: Path) -> tuple[Path, Path]:
    images, landmarks = src / IMAGES_DIR, src / LANDMARK_FILE
    if not images.is_dir():
        raise UserError(f"{images}: no such folder (give CelebA's folder with {IMAGES_DIR}/ and {LANDMARK_FILE})")
    if not landmarks.is_file():
        raise UserError(f"{landmarks}: not found (CelebA's landmark file)")
    return images, landmarks


def _landmarks_for(rows: list[ImageListRow], landmark_file: Path) -> dict[int, tuple[np.ndarray | None, str | None]]:
    """{idx: (float32 [5, 2], None) or (None, reason)}: landmark row `orig_idx` of CelebA's file, in file order as
    the original reads it; its file name must be `orig_file`."""
    entries = list(read_celeba_landmarks(landmark_file).items())
    found = {}
    for row in rows:
        if not 0 <= row.orig_idx < len(entries):
            found[row.idx] = (None, f"landmark row {row.orig_idx} missing ({landmark_file} has {len(entries)})")
            continue
        name, points = entries[row.orig_idx]
        if name != row.orig_file:
            found[row.idx] = (None, f"landmark row {row.orig_idx} is {name}, image_list.txt says {row.orig_file}")
            continue
        found[row.idx] = (np.asarray(points, dtype=np.float32), None)
    return found


def _pending(rows: list[ImageListRow], out: Path, decoder: str) -> list[ImageListRow]:
    """Rows without an image finished by `decoder` (skipped rows, and rows of another decoder, are done again);
    temporaries of a killed run are removed."""
    for leftover in (out / "images").glob(".*.partial"):
        leftover.unlink(missing_ok=True)
    latest = latest_records(read_all_manifests(out))
    done = {source for source, record in latest.items()
            if record.get("status") == "ok" and _record_decoder(record) == decoder
            and (out / record["output"]).is_file()}
    return [row for row in rows if row.name not in done]


def _executor(workers: int) -> ProcessPoolExecutor:
    """Worker processes that die with this one (even by SIGKILL) and leave Ctrl-C to it (gancore.processes)."""
    return helper_pool(workers)


def _run(tasks: list[RowTask], workers: int, on_result) -> None:
    """process_row over the tasks, at most 2 per worker in flight; on_result(RowResult) as each finishes."""
    if workers == 0:
        for task in tasks:
            on_result(process_row(task))
        return
    pool = _executor(workers)
    try:
        queue, in_flight = list(reversed(tasks)), set()
        while queue or in_flight:
            while queue and len(in_flight) < 2 * workers:
                in_flight.add(pool.submit(process_row, queue.pop()))
            finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                on_result(future.result())
    except BaseException:  # an error or Ctrl-C: drop the queued rows instead of finishing them first
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _summary(rows: list[ImageListRow], out: Path) -> dict[str, dict]:
    """The latest record of each asked row, and the manifest rewritten in idx order (export follows it)."""
    latest = latest_records(read_all_manifests(out))
    ordered = sorted(latest.values(), key=lambda record: record.get("idx", -1))
    write_manifest(out, ordered)
    return {row.name: latest[row.name] for row in rows if row.name in latest}


def build_official(src: str | os.PathLike, deltas: str | os.PathLike, out: str | os.PathLike,
                   options: OfficialOptions | None = None) -> OfficialReport:
    """Build (or resume) the official CelebA-HQ into `out` from CelebA (`src`) and the released deltas."""
    options = options or OfficialOptions()
    _require_cryptography()
    require_decoder(options.decoder)
    src, deltas, out = Path(src), Path(deltas), Path(out)
    images_dir, landmark_file = _source_layout(src)
    rows = read_image_list(deltas / "image_list.txt")
    rows = rows[:options.limit] if options.limit else rows
    check_deltas(deltas, rows)
    landmarks = _landmarks_for(rows, landmark_file)
    started = time.perf_counter()
    with FolderLock(out, "celebahq official"):
        (out / "images").mkdir(parents=True, exist_ok=True)
        pending = _pending(rows, out, options.decoder)
        tasks = [RowTask(row, images_dir / row.orig_file, *landmarks[row.idx], deltas / row.zip_name, out,
                         options.legacy, options.resolution, options.decoder) for row in pending]
        workers = options.workers if options.workers is not None else (os.cpu_count() or 1)
        if options.legacy and tasks:  # build and check the compiled kernel once here: the workers load it cached
            from .legacy_pillow import kernel_status

            kernel_status()
        with ManifestWriter(out) as manifest, progress_bar(len(tasks), "celebahq official", options.progress) as bar:
            def record(result: RowResult) -> None:
                manifest.append(asdict(result))
                bar.update(1)

            _run(tasks, min(workers, len(tasks)) if workers else 0, record)
        latest = _summary(rows, out)
        elapsed = time.perf_counter() - started
        report = _report(rows, latest, len(pending), elapsed, options)
        with atomic_output(out / "report.json") as temporary:
            temporary.write_text(json.dumps(report.to_dict(), indent=1))
    return report


def _counts_by_decoder(records: list[dict], final_matches: list[bool]) -> dict[str, DecoderCounts]:
    """DecoderCounts of imaged rows' manifest records, the final md5 verdicts given separately (same order)."""
    counts: dict[str, DecoderCounts] = {}
    for record, final_match in zip(records, final_matches):
        entry = counts.setdefault(_record_decoder(record), DecoderCounts())
        entry.rows += 1
        entry.proc_match += bool(record.get("proc_md5_match"))
        entry.final_match += bool(final_match)
    return counts


def _report(rows: list[ImageListRow], latest: dict[str, dict], processed: int, elapsed: float,
            options: OfficialOptions) -> OfficialReport:
    ok = [latest[row.name] for row in rows if latest.get(row.name, {}).get("status") == "ok"]
    return OfficialReport(
        rows=len(rows), processed=processed, already_done=len(rows) - processed, ok=len(ok),
        exact=sum(bool(r["proc_md5_match"] and r["final_md5_match"]) for r in ok),
        proc_mismatch=[r["idx"] for r in ok if not r["proc_md5_match"]],
        final_mismatch=[r["idx"] for r in ok if not r["final_md5_match"]],
        skipped={name: r.get("reason") or "not done" for name, r in latest.items() if r.get("status") != "ok"},
        seconds=round(elapsed, 3), images_per_second=round(processed / elapsed, 3) if elapsed > 0 else 0.0,
        legacy=options.legacy, decoder=options.decoder, decoder_version=decoder_description(options.decoder),
        by_decoder=_counts_by_decoder(ok, [bool(r["final_md5_match"]) for r in ok]))


def export_official(out: str | os.PathLike, report: OfficialReport, h5_path=None, zip_path=None,
                    progress: bool = True) -> list[Path]:
    """The HDF5 (all levels) and/or StyleGAN zip of a finished build, in CelebA-HQ order (idx); refused while a
    row has no image (the files' numbering would no longer be CelebA-HQ's)."""
    from .export import export_hdf5, export_zip

    if report.ok != report.rows:
        raise UserError(f"{out}: {report.rows - report.ok} of {report.rows} rows have no image (see report.json); "
                        "the HDF5/zip would not follow CelebA-HQ's numbering")
    written = []
    if h5_path:
        written.append(Path(export_hdf5(out, h5_path, progress=progress).path))
    if zip_path:
        written.append(Path(export_zip(out, zip_path, progress=progress).path))
    return written


# ----------------------------------------------------------------------------------------------------------------
# Checks of a finished folder and of the JPEG decoder


#: verify's decoder for a PNG whose row has no finished manifest line (a later run of another decoder skipped it)
UNFINISHED = "unknown (no finished manifest line)"


@dataclass
class VerifyReport:
    """`celebahq verify`: rows whose PNG's CHW bytes have the release's final md5, differ, or are missing; the
    present ones counted by the decoder that made them (from OUT/manifest.jsonl: its proc md5 verdict, the final
    md5 checked again here)."""

    rows: int
    exact: int
    mismatched: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    by_decoder: dict[str, DecoderCounts] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.exact == self.rows

    def to_dict(self) -> dict:
        return dict(asdict(self), ok=self.ok)


def _final_md5_of(path: Path) -> str | None:
    try:
        return md5_hex(decode_image(path).transpose(2, 0, 1))
    except (BadImage, OSError):
        return None


def verify_official(out: str | os.PathLike, deltas: str | os.PathLike, limit: int | None = None,
                    workers: int | None = None, progress: bool = True) -> VerifyReport:
    """Re-check a finished folder against image_list.txt's final md5s (decodes every imgHQ%05d.png)."""
    out = Path(out)
    rows = read_image_list(Path(deltas) / "image_list.txt")
    rows = rows[:limit] if limit else rows
    paths = [out / row.output for row in rows]
    workers = workers if workers is not None else (os.cpu_count() or 1)
    with progress_bar(len(rows), "celebahq verify", progress) as bar:
        if workers:
            with _executor(workers) as pool:
                md5s = [bar.update(1) or md5 for md5 in pool.map(_final_md5_of, paths, chunksize=8)]
        else:
            md5s = [bar.update(1) or _final_md5_of(path) for path in paths]
    report = VerifyReport(rows=len(rows), exact=0)
    latest = latest_records(read_all_manifests(out))
    present, verdicts = [], []
    for row, path, md5 in zip(rows, paths, md5s):
        if md5 is None:
            report.missing.append(row.idx)
            continue
        report.exact += md5 == row.final_md5
        if md5 != row.final_md5:
            report.mismatched.append(row.idx)
        record = latest.get(row.name, {})
        present.append(record if record.get("status") == "ok" else {"decoder": UNFINISHED})
        verdicts.append(md5 == row.final_md5)
    report.by_decoder = _counts_by_decoder(present, verdicts)
    return report


@dataclass
class DecoderUse:
    """Which JPEG decoder a command uses, its library and version, and why it cannot run here (None: it can)."""

    command: str
    decoder: str
    version: str
    problem: str | None


@dataclass
class DecoderCheck:
    """The decoders of `official` (libjpeg 8d) and `build` (Pillow's) and, given CelebA, the original's check:
    md5 of img_celeba/000001.jpg decoded to uint8 HWC RGB (`np.array(PIL.Image.open(path)).tobytes()` there)."""

    uses: list[DecoderUse]
    path: str | None = None  # CelebA's 000001.jpg, when a folder was given
    subsampling: str | None = None  # its chroma subsampling: only subsampled chroma decodes differently
    md5s: dict[str, str] = field(default_factory=dict)  # decoder -> md5 of its decode (those that run here)
    expected: str = DECODER_MD5

    @property
    def matches(self) -> bool:
        """The official decoder runs here and, when CelebA was given, decodes 000001.jpg to the original's md5."""
        usable = self.uses[0].problem is None
        return usable and (self.path is None or self.md5s.get(LIBJPEG_8D) == self.expected)


def check_decoder(celeba: str | os.PathLike | None = None) -> DecoderCheck:
    """The decoder of each command; with CelebA's folder, 000001.jpg's md5 by each against libjpeg 8d's."""
    from .decoding import decoder_problem

    uses = [DecoderUse("official", LIBJPEG_8D, decoder_description(LIBJPEG_8D), decoder_problem(LIBJPEG_8D)),
            DecoderUse("build", PILLOW, decoder_description(PILLOW), None)]
    check = DecoderCheck(uses)
    if celeba is None:
        return check
    path = Path(celeba) / IMAGES_DIR / "000001.jpg"
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"{path}: {'not found' if isinstance(error, FileNotFoundError) else error.strerror} "
                        f"(give CelebA's folder, which holds {IMAGES_DIR}/)") from None
    check.path, check.subsampling = str(path), jpeg_subsampling(data)
    for use in uses:
        if use.problem is None:
            try:
                check.md5s[use.decoder] = md5_hex(decode_jpeg(data, use.decoder))
            except BadImage as error:
                raise UserError(f"{path}: unreadable ({error})") from None
    return check
