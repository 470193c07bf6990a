"""The ordered stage list of one ColBERT indexing run (colbert-ai 0.2.22 CollectionIndexer)."""

from colbert_swap.dag import Dag
from colbert_swap.stages import finalize, index, setup, train

DAG = Dag([
    setup.num_passages, setup.num_chunks, setup.sample_pids, setup.local_sample_embs, setup.avg_doclen_est,
    setup.num_embeddings_est, setup.num_partitions,
    train.sample, train.prenorm_centroids, train.postnorm_centroids, train.centroids, train.heldout_residual,
    train.avg_residual, train.bucket_cutoffs, train.bucket_weights, train.half_centroids,
    index.embs, index.codes, index.residuals,
    finalize.all_codes, finalize.num_embeddings, finalize.ivf, finalize.ivf_lengths, finalize.ivf_pid,
])
