"""The colbert-ai mirror: colbert-ai 0.2.22's indexing and search, cut into stages, in this process.

Layer 4: the stages (`stages/`, one function per artifact; `DAG`), what they read besides artifacts
(`resources`), colbert-ai's global machinery (`infra`: its config, checkpoint, prints, perturb knobs), the
checkpoints (`models`), collections (`corpus`), queries and judgements (`retrieval`), the tokenizer's workers
(`tokenizer_pool`), the k-means backends (`kmeans`), CUDA graphs for the encoder (`graphs`), and colbert-ai's
index files (`index_files`).
"""

import os

# Deliberate policy, set before colbert-ai imports transformers (and it huggingface_hub): no hub downloads, ever.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
