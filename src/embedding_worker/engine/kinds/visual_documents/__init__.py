"""Visual document retrieval: ColPali-family models that read pictures of pages (ColPali,
ColQwen2), served through Infinity's engine like the other kinds.

Recognised from the files: transformers' `ColPaliForRetrieval` and `ColQwen2ForRetrieval`
checkpoints (the layouts of `vidore/colpali-v1.3-hf` and `vidore/colqwen2-v1.0-hf`), by the
architecture or model type in `config.json`; MODEL_KINDS=colpali or colqwen2 names the class
where the files name neither. A text is a query and an image a page; both go through the
model's own processor (its query prefix and augmentation tokens, its image prompt and
resolution), so at float32 the vectors equal transformers' classes. `encoder` runs them;
`pooling` makes a page's vectors fewer (`pool_factor`); documents are scored by MaxSim.
"""

from __future__ import annotations

from pathlib import Path

from embedding_worker.engine.hardware import model_config
from embedding_worker.engine.kinds.hybrid.vectors import maxsim
from embedding_worker.engine.model_kind import MULTI_VECTOR, Found, Traits

__all__ = ["KIND", "LAYOUTS"]

# MODEL_KINDS name -> (transformers class, model_type in config.json)
LAYOUTS = {"colpali": ("ColPaliForRetrieval", "colpali"), "colqwen2": ("ColQwen2ForRetrieval", "colqwen2")}
TRAITS = Traits(embedding_types=(MULTI_VECTOR,), scores_token_vectors=maxsim, reads_pages=True)


def _layout(config: dict) -> str | None:
    """Which layout `config.json` names by architecture or model type, if any."""
    architectures = config.get("architectures") or []
    for name, (architecture, model_type) in LAYOUTS.items():
        if architecture in architectures or config.get("model_type") == model_type:
            return name
    return None


class VisualDocumentsKind:
    names = tuple(LAYOUTS)

    def find(self, path: Path, name: str | None) -> Found | None:
        config = model_config(path)
        config = config if isinstance(config, dict) else {}
        layout = _layout(config)
        if name is not None:
            layout = name if layout in (None, name) and config else None
        if layout is None:
            return None
        architecture = LAYOUTS[layout][0]

        def build(engine_args):
            from embedding_worker.engine.infinity_internals import engine_with
            from embedding_worker.engine.kinds.visual_documents.encoder import PageEncoder

            return engine_with(PageEncoder(path, architecture, engine_args), engine_args)

        return Found(f"reads page images and PDFs ({architecture})", TRAITS, build)


KIND = VisualDocumentsKind()
