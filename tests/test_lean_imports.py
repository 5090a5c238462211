"""The entry points import Infinity without scikit-learn and SciPy, and without the unused
backends; models still load and serve, and sentence-transformers' evaluators still load
when training code asks for them."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import ROOT

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, "src")
    from embedding_worker.engine.lean_imports import import_infinity
    import_infinity("torch")
    import gc
    assert gc.isenabled() and gc.get_freeze_count() > 100_000  # what the import made is frozen
    import numpy as np
    from sentence_transformers import CrossEncoder, SentenceTransformer
    skipped = [name for name in ("sklearn", "scipy", "onnxruntime", "ctranslate2") if name in sys.modules]
    assert not skipped, skipped

    texts = ["a cat sat on the mat", "stock markets fell"]
    vectors = SentenceTransformer(sys.argv[1], device="cpu").encode(texts)
    assert vectors.shape == (2, 384) and np.isfinite(vectors).all()
    scores = CrossEncoder(sys.argv[2], device="cpu").predict([(texts[0], texts[1])])
    assert np.isfinite(scores).all()
    assert "sklearn" not in sys.modules and "scipy" not in sys.modules

    from sentence_transformers.evaluation import SentenceEvaluator, SequentialEvaluator
    from sentence_transformers.evaluation.SentenceEvaluator import SentenceEvaluator as Same
    assert Same is SentenceEvaluator and issubclass(SequentialEvaluator, SentenceEvaluator)
    assert "sklearn" not in sys.modules  # those two need neither

    import sentence_transformers.evaluation as evaluation
    from sentence_transformers.evaluation import InformationRetrievalEvaluator
    assert issubclass(InformationRetrievalEvaluator, SentenceEvaluator)
    assert all(isinstance(getattr(evaluation, name), type) for name in evaluation.__all__), evaluation.__all__
    assert "sklearn" in sys.modules  # loaded on demand, once visible again
    print("ok")
    """
)


def test_infinity_imports_without_sklearn_and_models_still_serve(embedder_path, reranker_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(embedder_path), str(reranker_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_runpod_imports_without_its_ssh_stack_which_loads_on_first_use():
    script = (
        "import sys; sys.path.insert(0, 'src')\n"
        "from embedding_worker.serving.runpod_patches import import_runpod\n"
        "import_runpod()\n"
        "print(sorted(m for m in ('paramiko.transport', 'cryptography', 'nacl', 'bcrypt') if m in sys.modules))\n"
        "from runpod.cli.groups.ssh import functions\n"
        "print(functions.paramiko.RSAKey.__name__, 'paramiko.transport' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["[]", "RSAKey True"]
