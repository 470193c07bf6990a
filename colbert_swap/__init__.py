"""colbert_swap: prove which tensor makes two ColBERT indexing runs diverge.

Deliberate policy, set before anything imports huggingface_hub: no hub downloads, ever.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
