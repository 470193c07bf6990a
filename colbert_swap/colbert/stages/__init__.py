"""The stages of one ColBERT indexing run (colbert-ai 0.2.22 CollectionIndexer) and of its search
(colbert-ai's Searcher on the run's own artifacts), phase by phase.

Every `@stage` function of the phase modules, in the order it is defined there, is a node of the DAG:
adding a stage is writing one function, after the stages it reads from.

    >>> [s.name for s in DAG.stages][:4]
    ['num_passages', 'num_chunks', 'sample_pids', 'sample_tokens']
"""

from colbert_swap.core.dag import Dag, Stage
from colbert_swap.colbert.stages import finalize, index, search, setup, train

# colbert-ai's order: setup, train, index (per chunk), finalize; then its Searcher on the artifacts
PHASE_MODULES = (setup, train, index, finalize, search)


def _stages(modules) -> list[Stage]:
    found: list[Stage] = []
    for module in modules:
        found += [v for v in vars(module).values() if isinstance(v, Stage) and v.fn.__module__ == module.__name__]
    return found


DAG = Dag(_stages(PHASE_MODULES))
