"""Embed a whole corpus through a deployed (or local) endpoint, resumably (README, "Embedding a corpus").

    python src/corpus.py INPUT OUTPUT --model MODEL --endpoint URL [--via queue|batch|openai] ...

INPUT: Parquet, JSONL or CSV with an id column and a text (or image) column. OUTPUT: Parquet
(`id`, `embedding`, ...), written as results arrive, with a checkpoint beside it: run the same
command again after a crash, a kill or Ctrl-C and it goes on where it stopped. Exit status 0
when every row is embedded, 1 when some failed (listed in OUTPUT.failed.jsonl), 2 when the
corpus or the endpoint cannot be used (one line says why).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, help="the corpus: .parquet, .jsonl or .csv")
    parser.add_argument("output", type=Path, help="the Parquet file to write")
    parser.add_argument("--model", required=True, help="the deployed model's name")
    parser.add_argument("--endpoint", required=True,
                        help="https://api.runpod.ai/v2/<ENDPOINT_ID>, http://127.0.0.1:8000/v2/local, or an "
                             "OpenAI-compatible base (a load-balancing endpoint's root, any .../v1)")
    parser.add_argument("--via", choices=("queue", "batch", "openai"),
                        help="queue: /run and /status; batch: RunPod's Batch API; openai: /v1/embeddings "
                             "(default: queue for a .../v2/<id> URL, else openai)")
    parser.add_argument("--api-key", default=os.environ.get("RUNPOD_API_KEY", ""), help="default: RUNPOD_API_KEY")
    parser.add_argument("--id-column", default="id")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--image-column", help="embed image references from this column instead of text")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--retries", type=int, default=5, help="tries after a transient failure (default 5)")
    parser.add_argument("--rows-per-request", type=int, default=128,
                        help="rows a request holds at most (default 128; the worker takes MAX_EMBED_INPUTS)")
    parser.add_argument("--dimensions", type=int)
    parser.add_argument("--encoding-format", default="float",
                        choices=("float", "int8", "uint8", "binary", "ubinary"))
    parser.add_argument("--input-type")
    parser.add_argument("--prompt-name")
    parser.add_argument("--embedding-types", help="comma-separated: dense, sparse, multi_vector")
    parser.add_argument("--chunked", action="store_true", help="embed texts past the model's limit whole, in windows")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args()

    from embedding_worker.corpus.client import CorpusRun, Options, default_via, openai_base
    from embedding_worker.corpus.source import Corpus, CorpusError

    via = args.via or default_via(args.endpoint)
    endpoint = openai_base(args.endpoint) if via == "openai" else args.endpoint.rstrip("/")
    if args.concurrency < 1 or args.rows_per_request < 1 or args.retries < 0:
        parser.error("--concurrency and --rows-per-request must be at least 1, --retries at least 0")
    options = Options(
        model=args.model, endpoint=endpoint, via=via, api_key=args.api_key, concurrency=args.concurrency,
        retries=args.retries, rows_per_request=args.rows_per_request, encoding_format=args.encoding_format,
        dimensions=args.dimensions, input_type=args.input_type, prompt_name=args.prompt_name,
        embedding_types=tuple(args.embedding_types.split(",")) if args.embedding_types else None,
        chunked=True if args.chunked else None, images=args.image_column is not None)
    try:
        corpus = Corpus.open(args.input, args.id_column, args.image_column or args.text_column)
        return asyncio.run(CorpusRun(corpus, args.output, options, progress_bar=not args.no_progress).run())
    except CorpusError as exc:
        print(f"corpus: {exc}", file=sys.stderr)
        return 2
    except PermissionError as exc:
        print(f"corpus: the endpoint refused the run: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("corpus: stopped; run the same command again to go on", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
