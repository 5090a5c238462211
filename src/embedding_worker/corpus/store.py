"""Results as they arrive, and the checkpoint that makes a run resumable.

Beside OUTPUT (a Parquet file) the run keeps:
- `OUTPUT.parts/`: one Parquet file a finished request ("chunk"), written whole and renamed
  into place, so a part is there completely or not at all;
- `OUTPUT.progress.jsonl`: the checkpoint, a line appended (and flushed to disk) as each thing
  happens: the run's header (the corpus and the options: a resumed run must be the same run),
  a queued job sent for a chunk (a resumed run asks for that job's result instead of sending
  the request again), a batch submitted, a chunk done (its rows written, its failed rows and
  their reasons), and the end.
A chunk counts as done only once its "done" line is written; a part without one (the run was
killed between the two) is deleted and the chunk redone, so no row is written twice. At the
end the parts are joined, in corpus order, into OUTPUT, and the failed rows are listed in
`OUTPUT.failed.jsonl`.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROW_GROUP_ROWS = 65_536  # OUTPUT's row groups
INTEGER_TYPES = {"int8": "int8", "binary": "int8", "uint8": "uint8", "ubinary": "uint8"}


@dataclass
class Progress:
    """What the checkpoint says: chunks done, jobs sent, batches submitted, failures."""

    header: dict[str, Any] | None = None
    done: dict[int, int] = field(default_factory=dict)  # chunk -> rows written
    jobs: dict[int, str] = field(default_factory=dict)  # chunk -> queued job id
    batches: dict[str, list[int]] = field(default_factory=dict)  # batch id -> its chunks
    failed: list[tuple[Any, str]] = field(default_factory=list)
    tokens: int = 0
    complete: bool = False


class Store:
    def __init__(self, output: Path) -> None:
        self.output = output
        self.parts = output.with_name(output.name + ".parts")
        self.log_path = output.with_name(output.name + ".progress.jsonl")
        self.failed_path = output.with_name(output.name + ".failed.jsonl")
        self._log = None

    def read(self) -> Progress:
        progress = Progress()
        if not self.log_path.exists():
            return progress
        with self.log_path.open("rb") as handle:
            for line in handle:
                try:
                    entry = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # a line cut short by a kill: it never happened
                if "header" in entry:
                    progress.header = entry["header"]
                elif "sent" in entry:
                    progress.jobs[entry["sent"]] = entry["job"]
                elif "batch" in entry:
                    progress.batches[entry["batch"]] = entry["chunks"]
                elif "done" in entry:
                    progress.done[entry["done"]] = entry["rows"]
                    progress.failed += [tuple(f) for f in entry.get("failed", [])]
                    progress.tokens += entry.get("tokens", 0)
                elif entry.get("complete"):
                    progress.complete = True
        return progress

    def start(self, header: dict[str, Any], progress: Progress) -> None:
        """Open the checkpoint for appending (writing the header on a fresh run) and delete
        the parts of chunks that are not done."""
        self.parts.mkdir(parents=True, exist_ok=True)
        for part in self.parts.iterdir():
            if not part.name.endswith(".parquet") or int(part.name.split(".")[0]) not in progress.done:
                part.unlink()
        self._log = self.log_path.open("ab")
        if progress.header is None:
            self.note({"header": header})

    def note(self, entry: dict[str, Any]) -> None:
        self._log.write(orjson.dumps(entry, default=str) + b"\n")
        self._log.flush()
        os.fsync(self._log.fileno())

    def write_chunk(self, chunk: int, table: Any, failed: list[tuple[Any, str]], tokens: int) -> None:
        if table is not None and table.num_rows:
            import pyarrow.parquet as pq

            temporary = self.parts / f".{chunk:08d}.tmp"
            pq.write_table(table, temporary)
            os.replace(temporary, self.parts / f"{chunk:08d}.parquet")
        self.note({"done": chunk, "rows": 0 if table is None else table.num_rows, "failed": failed, "tokens": tokens})

    def finish(self, failed: list[tuple[Any, str]]) -> int:
        """Join the parts into OUTPUT, list the `failed` rows; return the rows written."""
        import pyarrow.parquet as pq

        import pyarrow as pa

        parts = sorted(self.parts.glob("*.parquet"))
        rows = 0
        temporary = self.output.with_name(self.output.name + ".tmp")
        writer, held = None, []
        for part in parts:
            held.append(pq.read_table(part))
            rows += held[-1].num_rows
            if sum(table.num_rows for table in held) >= ROW_GROUP_ROWS or part == parts[-1]:
                table = pa.concat_tables(held)
                writer = writer or pq.ParquetWriter(temporary, table.schema)
                writer.write_table(table)  # row groups of ROW_GROUP_ROWS, not one a request
                held = []
                pa.default_memory_pool().release_unused()
        if writer is None:
            pq.write_table(pa.table({"id": pa.array([], pa.string()), "embedding": pa.array([], pa.list_(pa.float32()))}),
                           temporary)
        else:
            writer.close()
        os.replace(temporary, self.output)
        with self.failed_path.open("wb") as handle:
            for identifier, reason in failed:
                handle.write(orjson.dumps({"id": identifier, "reason": reason}) + b"\n")
        if not failed:
            self.failed_path.unlink()
        for part in parts:
            part.unlink()
        self.parts.rmdir()
        self.note({"complete": True})
        return rows

    def close(self) -> None:
        if self._log is not None:
            self._log.close()


def _list_array(matrix: np.ndarray) -> Any:
    import pyarrow as pa

    offsets = np.arange(len(matrix) + 1, dtype=np.int32) * matrix.shape[1]
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(matrix.reshape(-1)))


def _matrix(value: Any) -> np.ndarray:
    """A multi-vector entry (floats, or the base64 matrix) as a float32 matrix."""
    if isinstance(value, dict):
        dtype = "<f2" if value.get("dtype") == "float16" else "<f4"
        return np.frombuffer(base64.b64decode(value["base64"]), dtype=dtype).reshape(value["shape"]).astype(np.float32)
    return np.asarray(value, dtype=np.float32)


def table_of(ids: list[Any], entries: list[dict[str, Any]], encoding: str, types: list[str] | None) -> Any:
    """The rows `ids` with their answer's `data` entries, as an Arrow table: `embedding` (float32,
    or the integers of the compact formats), `sparse_indices`/`sparse_values`, `multi_vector`."""
    import pyarrow as pa

    columns: dict[str, Any] = {"id": pa.array(ids)}
    found: dict[str, list] = {}
    for entry in entries:
        own = entry.get("embeddings") or {(types or ["dense"])[0]: entry.get("embedding")}
        for kind, value in own.items():
            found.setdefault(kind, []).append(value)
    for kind, values in found.items():
        if kind == "sparse":
            columns["sparse_indices"] = pa.array([v["indices"] for v in values], pa.list_(pa.int32()))
            columns["sparse_values"] = pa.array([v["values"] for v in values], pa.list_(pa.float32()))
        elif kind == "multi_vector":
            columns["multi_vector"] = pa.array([_matrix(v).tolist() for v in values],
                                               pa.list_(pa.list_(pa.float32())))
        elif encoding in INTEGER_TYPES:
            columns["embedding"] = _list_array(np.asarray(values, dtype=INTEGER_TYPES[encoding]))
        else:
            matrix = np.stack([np.frombuffer(base64.b64decode(v), "<f4") if isinstance(v, str) else
                               np.asarray(v, np.float32) for v in values])
            columns["embedding"] = _list_array(matrix.astype(np.float32))
    return pa.table(columns)


def chunks_of(rows: Iterator[Any], rows_per_request: int, max_bytes: int) -> Iterator[list[Any]]:
    """Rows in requests of at most `rows_per_request` rows and about `max_bytes` of values."""
    chunk: list[Any] = []
    size = 0
    for row in rows:
        length = len(row.value.encode("utf-8")) + 8 if row.value is not None else 0
        if chunk and (len(chunk) >= rows_per_request or size + length > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(row)
        size += length
    if chunk:
        yield chunk
