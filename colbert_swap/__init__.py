"""colbert_swap: prove which tensor makes two ColBERT indexing runs diverge.

The package's layers, lowest first (docs/architecture.md; tests/unit/test_layers.py holds them):
errors, config < env < core < colbert < runs, proof < study < tasks < api, __main__.
"""
