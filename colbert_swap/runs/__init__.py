"""Executing runs: the one way a run is computed and written (`execute`), injection and replay (`replay`),
and searching a run, here or in its own environment (`search`).

Layer 5: on top of the core (engine, store) and the colbert-ai mirror (stages, resources, index files).
"""
