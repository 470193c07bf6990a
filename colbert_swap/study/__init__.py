"""The study: many runs across environments and repeats.

Layer 6: a matrix of environments (`matrix`) and its compatibility verdict (`compatibility`), the drill into
modules and operations (`drill`), and the determinism check (`determinism`). Built on runs and the proof.
"""
