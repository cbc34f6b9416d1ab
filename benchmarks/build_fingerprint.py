"""The fingerprint of a `celebahq build`'s outputs, to show that a change leaves them byte-identical (no speed
figure): the md5 of every PNG, the manifest records' md5, quality, stages, quad, zoom, output, rank and selected
fields, ranking.json, the md5 of every HDF5 dataset's array (not the file's bytes: the container holds
timestamps) and of every zip member.

    python benchmarks/build_fingerprint.py OUT [H5 ZIP] > before.json    # on the old code
    python benchmarks/build_fingerprint.py OUT [H5 ZIP] > after.json     # on the new code, same options
    python benchmarks/build_fingerprint.py --compare before.json after.json   # IDENTICAL, exit 0; else exit 1

e.g. `celebahq build --src examples/celeba_wild_mini --out OUT && celebahq export OUT --h5 OUT.h5 --zip OUT.zip`.
"""

from __future__ import annotations

import hashlib
import json
import sys
import zipfile
from pathlib import Path

RECORD_FIELDS = ("status", "md5", "quality", "output", "rank", "selected", "stages", "quad", "zoom")


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def fingerprint(out: Path, h5: Path | None = None, zip_path: Path | None = None) -> dict:
    """{"png": {path: md5}, "manifest": {source: [records' fields]}, "ranking.json": …, "h5": {dataset: [md5,
    shape, dtype]}, "zip": {member: md5}} of a build folder and its exports."""
    result = {"png": {p.relative_to(out).as_posix(): md5(p.read_bytes()) for p in sorted(out.rglob("*.png"))},
              "manifest": {}}
    for manifest in sorted(out.glob("manifest*.jsonl")):
        for line in manifest.read_text().splitlines():
            record = json.loads(line)
            result["manifest"].setdefault(record["source"], []).append({k: record.get(k) for k in RECORD_FIELDS})
    if (out / "ranking.json").is_file():
        result["ranking.json"] = json.loads((out / "ranking.json").read_text())
    if h5 is not None:
        result["h5"] = _h5_arrays(h5)
    if zip_path is not None:
        with zipfile.ZipFile(zip_path) as archive:
            result["zip"] = {info.filename: md5(archive.read(info)) for info in archive.infolist()}
    return result


def _h5_arrays(path: Path) -> dict[str, list]:
    import h5py

    arrays = {}

    def visit(name, item):
        if isinstance(item, h5py.Dataset):
            array = item[()]
            arrays[name] = [md5(array.tobytes()), list(array.shape), str(array.dtype)]

    with h5py.File(path, "r") as file:
        file.visititems(visit)
    return arrays


def compare(before: dict, after: dict) -> list[str]:
    """The parts (png, manifest, h5, …) that differ."""
    return [key for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)]


def main() -> int:
    if sys.argv[1] == "--compare":
        before, after = (json.loads(Path(p).read_text()) for p in sys.argv[2:4])
        different = compare(before, after)
        print("compared:", {k: len(v) if isinstance(v, dict) else 1 for k, v in before.items()})
        print("IDENTICAL" if not different else f"DIFFERENT in {different}")
        return 1 if different else 0
    paths = [Path(p) for p in sys.argv[1:4]]
    print(json.dumps(fingerprint(*paths), indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
