"""Compact vectors for vector databases: `encoding_format` `int8`, `uint8`, `binary`, `ubinary`.

- `binary` / `ubinary`: one bit per dimension (positive -> 1), packed 8 to a byte, as
  sentence-transformers' `quantize_embeddings` does (`binary` is offset by -128 into int8).
- `int8`: each component times a scale `s`, rounded and clipped to [-127, 127];
  `uint8` is that plus 128. `s` is fixed per deployed model (and `dimensions`):
  127 / the largest absolute component the model gives on a fixed calibration set of
  sentences, measured once, on the first such request. One scale for every dimension, so
  an int8 dot product is the float dot product times s^2 plus rounding, and ranks alike; a
  vector never depends on what else was in its request. (Per-dimension ranges, as
  sentence-transformers computes them, shift each dimension differently and do not.)
"""

from __future__ import annotations

import numpy as np

INTEGER_FORMATS = ("int8", "uint8", "binary", "ubinary")
_SUBJECTS = ["The committee", "A small bakery", "Our new phone", "The river", "Quantum computing", "My grandmother",
             "The football team", "This recipe", "The stock market", "A red fox", "The database", "Solar panels"]
_ACTIONS = ["announced a plan to", "struggled to", "will soon", "quietly managed to", "was built to",
            "is expected to", "refused to", "learned how to"]
_OBJECTS = ["cut costs by half.", "win the championship.", "store millions of records.", "cross the mountains.",
            "bake bread every morning.", "change how we travel.", "answer every question.", "grow in winter."]
# 104 distinct sentences: each subject with each action once, and an object; then 8 unlike
# them. Distinct, so that a sentence's nearest neighbours are well defined (the int8 gate
# compares them): repeated sentences tie, and a tie breaks on rounding.
CALIBRATION_TEXTS = [f"{_SUBJECTS[i % 12]} {_ACTIONS[(i // 12) % 8]} {_OBJECTS[(i * 5 + i // 12) % 8]}"
                     for i in range(96)] + [
    "What is the capital of France?", "how to reset a router", "Paris", "2024 annual report, page 3",
    "def main(): return 0", "Ein kurzer deutscher Satz.", "Une phrase en français.", "¿Dónde está la biblioteca?",
]


def int8_scale(calibration: np.ndarray) -> float:
    return 127.0 / max(float(np.abs(calibration).max()), 1e-12)


def quantize(matrix: np.ndarray, encoding_format: str, scale: float | None = None) -> np.ndarray:
    """`matrix` (float32, one vector a row) in an integer `encoding_format`."""
    if encoding_format in ("binary", "ubinary"):
        from sentence_transformers.quantization import quantize_embeddings

        return quantize_embeddings(matrix, precision=encoding_format)
    int8 = np.clip(np.rint(matrix * scale), -127, 127).astype(np.int8)
    return int8 if encoding_format == "int8" else (int8.astype(np.int16) + 128).astype(np.uint8)
