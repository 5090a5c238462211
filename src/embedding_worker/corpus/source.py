"""The corpus: Parquet, JSONL or CSV, read a slice at a time (memory does not grow with it).

`Corpus.open` checks the file and its columns (a missing one fails in one line naming it and
the columns there are); `rows` yields `Row`s in file order, each with its value or the reason
it cannot be sent (an empty text, a line that is not UTF-8 JSON: recorded as that row's
failure, the corpus goes on); `check_unique_ids` reads the ids alone and refuses a corpus
whose ids repeat, before any request is sent (8 bytes of hash a row, then the candidates
compared exactly).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

SLICE_ROWS = 8192
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


class CorpusError(Exception):
    """Why the corpus cannot be embedded: one line."""


@dataclass(frozen=True)
class Row:
    number: int  # 0-based, in file order
    id: Any
    value: str | None  # the text, or the image reference
    problem: str | None = None  # why it is not sent


@dataclass(frozen=True)
class Corpus:
    path: Path
    format: str
    id_column: str
    column: str  # the text column, or the image column

    @classmethod
    def open(cls, path: Path, id_column: str, column: str) -> Corpus:
        if not path.is_file():
            raise CorpusError(f"{path}: no such file")
        kind = FORMATS.get(path.suffix.lower())
        if kind is None:
            raise CorpusError(f"{path}: a corpus is .parquet, .jsonl or .csv; this one is {path.suffix or 'neither'}")
        corpus = cls(path, kind, id_column, column)
        found = corpus._columns()
        for name, what in ((id_column, "--id-column"), (column, "the value column")):
            if name not in found:
                raise CorpusError(f"{path}: no column {name!r} ({what}); its columns: {', '.join(found) or 'none'}")
        return corpus

    def _columns(self) -> list[str]:
        if self.format == "parquet":
            import pyarrow.parquet as pq

            return list(pq.ParquetFile(self.path).schema_arrow.names)
        if self.format == "csv":
            with self.path.open("rb") as handle:
                header = handle.readline().decode("utf-8", "replace").strip()
            import csv

            return next(csv.reader([header]), [])
        names: dict[str, None] = {}
        with self.path.open("rb") as handle:
            for line in handle:
                if line.strip():
                    try:
                        value = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(value, dict):
                        names.update(dict.fromkeys(value))
                        break
        return list(names)

    def rows(self, start: int = 0) -> Iterator[Row]:
        """Every row from row `start` on, in file order."""
        for row in self._rows():
            if row.number >= start:
                yield row

    def _rows(self) -> Iterator[Row]:
        if self.format == "jsonl":
            yield from self._jsonl_rows()
            return
        number = 0
        for ids, values in self._column_slices():
            for identifier, value in zip(ids, values):
                yield _row(number, identifier, value)
                number += 1

    def _column_slices(self) -> Iterator[tuple[list, list]]:
        columns = [self.id_column, self.column]
        if self.format == "parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(self.path).iter_batches(batch_size=SLICE_ROWS, columns=columns):
                yield batch.column(0).to_pylist(), batch.column(1).to_pylist()
            return
        import pyarrow as pa
        from pyarrow import csv

        try:
            reader = csv.open_csv(self.path, convert_options=csv.ConvertOptions(
                include_columns=columns, column_types={self.column: pa.string()}))
            for batch in reader:
                yield batch.column(self.id_column).to_pylist(), batch.column(self.column).to_pylist()
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise CorpusError(f"{self.path}: cannot be read as CSV: {' '.join(str(exc).split())[:200]}") from None

    def _jsonl_rows(self) -> Iterator[Row]:
        number = 0
        with self.path.open("rb") as handle:
            for line_number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    value = orjson.loads(line)
                except orjson.JSONDecodeError:
                    yield Row(number, f"line {line_number}", None, f"line {line_number} is not UTF-8 JSON")
                    number += 1
                    continue
                if not isinstance(value, dict):
                    yield Row(number, f"line {line_number}", None, f"line {line_number} is not a JSON object")
                else:
                    yield _row(number, value.get(self.id_column), value.get(self.column))
                number += 1

    def ids(self) -> Iterator[Any]:
        """The id column alone, in file order (rows that cannot be read included, by their line)."""
        if self.format == "jsonl":
            for row in self._jsonl_rows():
                yield row.id
            return
        for ids, _ in self._column_slices():
            yield from ids


def _row(number: int, identifier: Any, value: Any) -> Row:
    if identifier is None or identifier == "":
        raise CorpusError(f"row {number} has no id")
    if value is None or (isinstance(value, str) and not value.strip()):
        return Row(number, identifier, None, "empty text")
    if not isinstance(value, str):
        return Row(number, identifier, None, f"the value is {type(value).__name__}, not text")
    return Row(number, identifier, value)


def _digest(identifier: Any) -> int:
    data = orjson.dumps(identifier, option=orjson.OPT_NON_STR_KEYS)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def check_unique_ids(corpus: Corpus) -> int:
    """The corpus's row count; `CorpusError` naming the first repeated id."""
    hashes = np.empty(0, dtype=np.uint64)
    chunk: list[int] = []
    count = 0
    for identifier in corpus.ids():
        chunk.append(_digest(identifier))
        count += 1
        if len(chunk) == 1 << 16:
            hashes = np.concatenate([hashes, np.array(chunk, dtype=np.uint64)])
            chunk = []
    hashes = np.sort(np.concatenate([hashes, np.array(chunk, dtype=np.uint64)]))
    repeated = set(hashes[1:][hashes[1:] == hashes[:-1]].tolist())
    if repeated:
        seen: dict[Any, int] = {}
        for number, identifier in enumerate(corpus.ids()):
            if _digest(identifier) in repeated:
                key = orjson.dumps(identifier)
                if key in seen:
                    raise CorpusError(f"{corpus.path}: id {identifier!r} appears more than once (rows {seen[key]} and "
                                      f"{number}); ids must be unique, nothing was sent")
                seen[key] = number
    return count
