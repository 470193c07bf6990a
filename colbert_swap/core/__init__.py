"""The machinery every run goes through, knowing nothing of colbert-ai.

Layer 3: the DAG of stages (`dag`), the content-addressed store and its one run writer (`store`), the engine
that executes nodes and persists through the writer (`engine`), and the random generators (`rng`). The stages
and the resources they read come from the layer above (colbert_swap/colbert/).
"""
