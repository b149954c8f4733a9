"""Run a relevance graph over a whole data set: batched, resumable, on this machine or on Ray.

The images are cut into shards of ``shard_size`` (the last may be shorter); a per-batch function
turns a batch into per-image arrays, and each finished shard is written to its own folder under the
output directory, atomically (a temporary folder renamed into place), so that a killed run leaves
complete shards and at most a temporary folder that the next run deletes and redoes.

Storage: per shard, one ``.npy`` per array (dense relevance maps and per-channel vectors; ``numpy.load(...,
mmap_mode="r")`` maps them without reading) and ``table.parquet`` with the per-image scalars (dataset
index, label, and every 1-D array of the batch function) as columns; when all shards are done, the
tables are joined into ``index.parquet``, which pandas, polars or DuckDB read directly. Parquet
alone would not do for the maps: its pages are encoded and compressed, so it is not memory-mappable
as a float array, while an ``.npy`` is exactly that. ``manifest.json`` records the model, data and
function fingerprints: a run with other settings refuses to reuse the folder.

Execution: ``backend="local"`` runs one onnxruntime session in this process with all cores
(``threads``); ``backend="ray"`` runs Ray Data ``map_batches`` over the shards with one onnxruntime
session per actor (the model shipped as bytes, the images through the object store), and the
driver writes the shards as they come back. Both compute the same batches, so their results agree.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from onnxlrp.errors import OnnxLrpError
from onnxlrp.explaining import run_batched
from onnxlrp.loading import write_text, writing
from onnxlrp.runtime import RelevanceSession, session_options

BatchFn = Callable[[RelevanceSession, np.ndarray, np.ndarray], dict[str, np.ndarray]]
"""(session, inputs [n, ...], targets int64 [n], -1 = predicted) -> per-image arrays, each with first
dimension n."""

MANIFEST = "manifest.json"
INDEX = "index.parquet"
TABLE = "table.parquet"
TMP_SUFFIX = ".tmp"


class ScanError(OnnxLrpError):
    """A scan folder holds another run's results, or a batch function returned bad arrays."""


def shard_name(shard: int) -> str:
    """The folder of shard number ``shard``."""
    return f"shard-{shard:05d}"


def fingerprint(data: bytes | np.ndarray) -> str:
    """sha256 of model bytes or of an array's shape, dtype and contents."""
    digest = hashlib.sha256()
    if isinstance(data, np.ndarray):
        digest.update(f"{data.shape}{data.dtype}".encode())
        digest.update(np.ascontiguousarray(data).data)
    else:
        digest.update(data)
    return digest.hexdigest()


def run_shard(
    session: RelevanceSession, fn: BatchFn, x: np.ndarray, targets: np.ndarray, batch_size: int
) -> dict[str, np.ndarray]:
    """``fn`` over ``x`` in batches of ``batch_size``, the results concatenated per key."""

    def checked(batch: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
        out = {key: np.asarray(value) for key, value in fn(session, batch, target).items()}
        for key, value in out.items():
            if value.ndim == 0 or value.shape[0] != len(batch):
                raise ScanError(
                    f"the batch function returned {key!r} with shape {value.shape}; "
                    f"its first dimension must be the batch size {len(batch)}"
                )
        return out

    return run_batched(checked, x, batch_size=batch_size, target=targets)


def _to_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


def _from_bytes(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as loaded:
        return {key: loaded[key] for key in loaded.files}


@dataclass(frozen=True)
class InputRelevance:
    """Batch function: the input relevance of each image (the graph's "relevance" output)."""

    def __call__(self, session: RelevanceSession, x: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
        return {"relevance": session.run(x, target=target)["relevance"]}


@dataclass
class ScanResult:
    """A finished scan folder: arrays per key (memory-mapped per shard) and the per-image table."""

    folder: Path
    shards: int

    def keys(self) -> list[str]:
        """The arrays each shard holds."""
        return sorted(p.stem for p in (self.folder / shard_name(0)).glob("*.npy"))

    def shard_arrays(self, key: str) -> Iterator[np.ndarray]:
        """``key``'s array of every shard in order, memory-mapped."""
        for shard in range(self.shards):
            yield np.load(self.folder / shard_name(shard) / f"{key}.npy", mmap_mode="r")

    def array(self, key: str) -> np.ndarray:
        """``key`` over all images (read into memory)."""
        if key not in self.keys():
            raise ScanError(f"{self.folder}: no array {key!r} (arrays: {', '.join(self.keys())})")
        return np.concatenate(list(self.shard_arrays(key)))

    def table(self) -> Any:
        """The per-image scalars as a pyarrow Table (columns ``index``, ``label``, ``row`` (the
        position in the scanned inputs) and the 1-D arrays)."""
        import pyarrow.parquet as pq

        return pq.read_table(self.folder / INDEX)


def _write_shard(folder: Path, shard: int, first: int, arrays: dict[str, np.ndarray]) -> None:
    """Write a shard's arrays and table (its rows start at input ``first``) into a temporary folder,
    then rename it into place."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    final = folder / shard_name(shard)
    tmp = folder / (shard_name(shard) + TMP_SUFFIX)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for key, value in arrays.items():
        np.save(tmp / f"{key}.npy", value)
    rows = len(next(iter(arrays.values())))
    columns = {"row": np.arange(first, first + rows), **{k: v for k, v in arrays.items() if v.ndim == 1}}
    pq.write_table(pa.table(columns), tmp / TABLE)
    os.replace(tmp, final)


def _prepare(folder: Path, manifest: dict, force: bool) -> set[int]:
    """Create or check the scan folder; the shards already complete."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MANIFEST
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = None
        if old != manifest:
            if not force:
                raise ScanError(
                    f"{folder}: holds a scan with other settings (model, data, function or sizes); "
                    "pass --force (force=True) to start it again, or choose another folder"
                )
            for child in folder.iterdir():
                if child.name.startswith("shard-") or child.name in (INDEX, MANIFEST):
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
    elif any(folder.iterdir()) and not force:
        raise ScanError(f"{folder}: exists and is not a scan folder; choose an empty or new folder")
    if not path.is_file():
        write_text(path, json.dumps(manifest, indent=1))
    for leftover in folder.glob(f"shard-*{TMP_SUFFIX}"):  # a shard a killed run did not finish
        shutil.rmtree(leftover)
    done = set()
    for child in folder.glob("shard-*"):
        if child.is_dir() and (child / TABLE).is_file():
            done.add(int(child.name.split("-")[1]))
    return done


def _finish(folder: Path, shards: int, indices: np.ndarray, labels: np.ndarray | None) -> ScanResult:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables([pq.read_table(folder / shard_name(s) / TABLE) for s in range(shards)])
    table = table.add_column(0, "index", pa.array(indices))
    if labels is not None:
        table = table.add_column(1, "label", pa.array(labels))
    with writing(folder / INDEX, force=True) as tmp:
        pq.write_table(table, tmp)
    return ScanResult(folder, shards)


def scan(
    model: bytes,
    x: np.ndarray,
    fn: BatchFn,
    out: str | os.PathLike,
    *,
    targets: np.ndarray | None = None,
    indices: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    batch_size: int = 64,
    shard_size: int = 1024,
    backend: str = "local",
    threads: int | None = None,
    workers: int = 2,
    address: str | None = None,
    progress: bool = True,
    force: bool = False,
    describe: str | None = None,
) -> ScanResult:
    """Run ``fn`` over ``x`` ([N, ...] model inputs) with the relevance graph ``model`` (bytes),
    writing shards under ``out``; an interrupted scan of the same settings resumes where it stopped.

    ``targets``: the class explained per image (int64, -1 = predicted; default all -1).
    ``indices``/``labels`` (per image, e.g. positions in the data set) go into the table.
    ``describe`` names the batch function in the manifest (default ``repr(fn)``; a dataclass's repr
    lists its settings). ``backend``: "local" (this process, ``threads`` onnxruntime threads, None =
    all cores) or "ray" (``workers`` actors with ``threads`` threads each, on the cluster at
    ``address``, the one ``ray.init`` connected to, or a local one started here)."""
    if backend not in ("local", "ray"):
        raise ScanError(f"backend must be 'local' or 'ray', got {backend!r}")
    if batch_size < 1 or shard_size < 1:
        raise ScanError(f"batch_size and shard_size must be positive, got {batch_size}, {shard_size}")
    n = len(x)
    if n == 0:
        raise ScanError("no inputs to scan")
    indices = np.arange(n) if indices is None else np.asarray(indices)
    targets = np.full(n, -1, np.int64) if targets is None else np.asarray(targets, np.int64)
    if targets.shape != (n,):
        raise ScanError(f"targets must have shape ({n},), got {targets.shape}")
    folder = Path(out)
    manifest = {
        "model_sha256": fingerprint(model),
        "data_sha256": fingerprint(np.asarray(x)),
        "targets_sha256": fingerprint(targets),
        "function": describe or repr(fn),
        "n": n,
        "batch_size": batch_size,
        "shard_size": shard_size,
    }
    shards = -(-n // shard_size)
    done = _prepare(folder, manifest, force)
    todo = [s for s in range(shards) if s not in done]
    bar = _progress(n, sum(min(shard_size, n - s * shard_size) for s in done), progress)
    try:
        work = _Shards(model, x, targets, fn, shard_size, batch_size, threads)
        results = _local(work, todo) if backend == "local" else _ray(work, todo, workers, address)
        for shard, arrays in results:
            _write_shard(folder, shard, shard * shard_size, arrays)
            bar.update(len(next(iter(arrays.values()))))
    finally:
        bar.close()
    return _finish(folder, shards, indices, labels)


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="scan", unit="img", disable=not enabled, file=sys.stderr)


@dataclass(frozen=True)
class _Shards:
    """The shards of one scan and how each is computed, in this process or in a Ray actor."""

    model: bytes
    x: np.ndarray
    targets: np.ndarray
    fn: BatchFn
    shard_size: int
    batch_size: int
    threads: int | None

    def session(self) -> RelevanceSession:
        """An onnxruntime session of the relevance graph with ``threads`` threads."""
        return RelevanceSession(self.model, options=session_options(self.threads))

    def compute(self, session: RelevanceSession, shard: int) -> dict[str, np.ndarray]:
        """The batch function's arrays of shard number ``shard``."""
        part = slice(shard * self.shard_size, (shard + 1) * self.shard_size)
        return run_shard(session, self.fn, self.x[part], self.targets[part], self.batch_size)


def _local(shards: _Shards, todo: Sequence[int]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    if not todo:
        return
    session = shards.session()
    for shard in todo:
        yield shard, shards.compute(session, shard)


class _ShardActor:
    """A Ray Data actor: one onnxruntime session, computing whole shards."""

    def __init__(self, shards: _Shards, data: list):
        import ray

        x, targets = ray.get(data)  # in a list, so that Ray hands over references, not arrays
        self.shards = replace(shards, x=x, targets=targets)
        self.session = self.shards.session()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        payloads = [_to_bytes(self.shards.compute(self.session, shard)) for shard in batch["shard"]]
        return {"shard": batch["shard"], "payload": np.array(payloads, dtype=object)}


def _ray(
    shards: _Shards, todo: Sequence[int], workers: int, address: str | None
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    if not todo:
        return
    try:
        import ray
    except ImportError:
        raise ScanError("backend 'ray' needs ray: pip install 'onnxlrp[scale]'") from None
    threads = shards.threads
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers * (threads or 1), include_dashboard=False, log_to_driver=False)
    data = ray.data.from_items([{"shard": s} for s in todo])
    computed = data.map_batches(
        _ShardActor,
        fn_constructor_kwargs={
            "shards": replace(shards, x=np.empty(0), targets=np.empty(0)),  # the arrays go by reference
            "data": [ray.put(np.ascontiguousarray(shards.x)), ray.put(shards.targets)],
        },
        batch_size=1,
        concurrency=workers,
        num_cpus=threads or 1,
        batch_format="numpy",
    )
    for row in computed.iter_rows():
        yield int(row["shard"]), _from_bytes(row["payload"])
