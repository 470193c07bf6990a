"""CUDA: the same guarantees as on CPU, where colbert-ai keeps fp16 embeddings and half centroids.
Run on a GPU machine; on the CPU these skip."""

from __future__ import annotations

import pytest
import torch

from colbert_swap.colbert.index_files import index_differences
from colbert_swap.core.store import Store
from colbert_swap.tasks.capture import capture
from tests.conftest import quiet_progress
from tests.integration.test_parity import reference_index

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the device machine)")


def hashes(manifest):
    return {k: r.ref.hash for k, r in manifest.artifacts.items()}


def test_cuda_capture_matches_colbert_indexer(tiny_cfg, tmp_path):
    cfg = tiny_cfg("run=cuda-parity")
    manifest = capture(cfg, progress=quiet_progress)
    store = Store(cfg.store.root)
    assert manifest.provenance["gpu"] and manifest.artifacts["centroids"].ref.dtype == "float16"
    assert manifest.artifacts["local_sample_embs"].ref.dtype == "float16"  # autocast on CUDA
    assert manifest.artifacts["heldout_residual"].ref.device == "cuda"
    reference = reference_index(cfg, manifest, tmp_path)
    assert index_differences(store.run_dir("cuda-parity") / "index", reference) == {}


def test_cuda_captures_are_deterministic(tiny_cfg):
    a = capture(tiny_cfg("run=cuda-a"), progress=quiet_progress)
    b = capture(tiny_cfg("run=cuda-b"), progress=quiet_progress)
    assert hashes(a) == hashes(b)


def test_torch_kmeans_on_the_gpu_is_deterministic(tiny_cfg):
    a = capture(tiny_cfg("run=cuda-tk-a", "index.kmeans_backend=torch"), progress=quiet_progress)
    b = capture(tiny_cfg("run=cuda-tk-b", "index.kmeans_backend=torch"), progress=quiet_progress)
    faiss = capture(tiny_cfg("run=cuda-a"), progress=quiet_progress)
    assert a.artifacts["prenorm_centroids"].ref.hash != faiss.artifacts["prenorm_centroids"].ref.hash
    assert hashes(a) == hashes(b)


def test_torch_kmeans_large_on_the_gpu_is_deterministic():
    from colbert_swap.colbert.kmeans import torch_kmeans

    g = torch.Generator().manual_seed(0)
    data = torch.nn.functional.normalize(torch.randn(300_000, 128, generator=g), dim=-1).half().float()
    assert torch.equal(torch_kmeans(data, 4096, 4, 123), torch_kmeans(data, 4096, 4, 123))


def test_torch_kmeans_steps_on_the_gpu():
    """The fp16 GEMM (hi + lo centroids, fp32 output) is the path taken and assigns as float64 does
    wherever the nearest centroid is clear, chunked or not, the same twice; the cluster means equal
    the CPU's to the bit (both are sequential fp32 sums in index order), empty clusters included."""
    from colbert_swap.colbert.kmeans import _Distances, _update

    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(50_000, 128, generator=g), dim=-1).half().float()
    centroids = x[torch.randint(0, 50_000, (1024, 8), generator=g)].mean(1)
    d = torch.cdist(x.cuda().double(), centroids.cuda().double()).pow(2).topk(2, dim=1, largest=False)
    want, clear = d.indices[:, 0].cpu(), (d.values[:, 1] - d.values[:, 0] > 1e-5).cpu()
    for chunk in (None, 4096):
        dist = _Distances(x.cuda(), 1024, chunk_rows=chunk)
        assert dist.half and dist.exact and dist.points.shape[1] == 264
        labels = dist.nearest(centroids.cuda())
        assert torch.equal(labels, dist.nearest(centroids.cuda()))
        assert torch.equal(labels.cpu()[clear], want[clear])
    labels = labels.cpu()
    labels[labels == 7] = 8  # cluster 7 empty
    gpu = _update(x.cuda(), labels.cuda(), centroids.cuda()).cpu()
    assert torch.equal(gpu, _update(x, labels, centroids))


def test_comparisons_on_the_gpu_equal_the_cpu_ones_and_locate_and_meaning_run(tiny_cfg, monkeypatch, tmp_path):
    from colbert_swap.proof.compare import comparators
    from colbert_swap.proof.compare.runs import compare_runs
    from colbert_swap.proof.report.meaning import meaning
    from colbert_swap.tasks.locate import locate

    target = capture(tiny_cfg("run=cuda-a"), progress=quiet_progress)
    eager = capture(tiny_cfg("run=cuda-eager", "perturb=eager"), progress=quiet_progress)
    store = Store(tiny_cfg().store.root)
    on_gpu = compare_runs(store, eager, target)
    monkeypatch.setattr(comparators, "DEVICE", "cpu")
    on_cpu = compare_runs(store, eager, target)
    monkeypatch.undo()
    assert on_gpu.diverged() and on_gpu.diverged() == on_cpu.diverged()
    for g, c in zip(on_gpu.results, on_cpu.results):
        assert (g.status, g.mismatches, g.max_abs, g.max_ulp, g.first_mismatch, g.allclose) == \
               (c.status, c.mismatches, c.max_abs, c.max_ulp, c.first_mismatch, c.allclose), g.name
    result = locate(tiny_cfg("source=cuda-eager", "target=cuda-a"), store, progress=quiet_progress)
    assert result.minimal[0] == ["local_sample_embs"]
    md, data = meaning(store, eager, target, on_gpu, tmp_path, "What this means")
    assert "local_sample_embs" in md and data


def test_encoder_batches_replayed_from_cuda_graphs_give_colbert_ais_bits(tiny_cfg, tmp_path, monkeypatch):
    """index.cuda_graphs: two groups of the same lengths, so every batch shape comes back (batches of ones and
    batches with padding, i.e. both answers of transformers' all-ones mask question) and is replayed from its
    graph; the embeddings equal the eager pipeline's and colbert-ai's own per-batch Checkpoint.doc to the bit."""
    from colbert_swap.colbert.resources import Resources
    from colbert_swap.colbert import graphs
    from colbert_swap.colbert.stages import setup

    res = Resources(tiny_cfg("run=graphs", "index.index_bsize=8"), Store(tmp_path / "s"), tmp_path)
    checkpoint, config = res.checkpoint, res.colbert_config
    words = [" ".join(["alpha"] * n) for n in (3, 3, 3, 9, 9, 14)]
    passages = [words[i % len(words)] for i in range(setup.group_size(config))] * 2
    ids, masks, order = setup.tokenize(passages, checkpoint, config, 0)
    recorded = []
    record = graphs.GraphedDocBatch._record
    monkeypatch.setattr(graphs.GraphedDocBatch, "_record",
                        lambda self, all_ones, *v: recorded.append(all_ones) or record(self, all_ones, *v))
    quiet = lambda done, total: None  # noqa: E731
    graphed = setup.encode_tokens(ids, masks, order, checkpoint, config, quiet, pipeline=True, graphs=True)
    eager = setup.encode_tokens(ids, masks, order, checkpoint, config, quiet, pipeline=True, graphs=False)
    colbert = setup.encode_tokens(ids, masks, order, checkpoint, config, quiet, pipeline=False)
    assert set(recorded) == {True, False}, recorded
    for a, b in ((graphed, eager), (graphed, colbert)):
        assert torch.equal(a[1], b[1]) and a[0].dtype == b[0].dtype == torch.float16
        assert torch.equal(a[0].view(torch.int16), b[0].view(torch.int16))


def test_cuda_graphs_are_not_used_where_a_replay_would_skip_python(tiny_cfg, tmp_path):
    """A forward hook (the module drill's recorder) or a dispatch mode runs at the recording only: eager then."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from colbert_swap.colbert.resources import Resources
    from colbert_swap.colbert.graphs import graphs_usable

    checkpoint = Resources(tiny_cfg("run=graphs-hooks"), Store(tmp_path / "s"), tmp_path).checkpoint
    assert graphs_usable(checkpoint, "cuda") and not graphs_usable(checkpoint, "cpu")
    handle = checkpoint.bert.encoder.register_forward_hook(lambda *a: None)
    assert not graphs_usable(checkpoint, "cuda")
    handle.remove()

    class Mode(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    with Mode():
        assert not graphs_usable(checkpoint, "cuda")
    assert graphs_usable(checkpoint, "cuda")


def test_a_batch_that_cannot_be_recorded_runs_eagerly(tiny_cfg, tmp_path, monkeypatch):
    """An operation a CUDA graph cannot hold (here a host sync inside the forward) fails the recording: that
    batch and the rest of the call run as colbert-ai runs them, with the same bits, and nothing is left patched."""
    import transformers.models.bert.modeling_bert as modeling_bert

    from colbert_swap.colbert.resources import Resources
    from colbert_swap.colbert import graphs
    from colbert_swap.colbert.stages import setup

    res = Resources(tiny_cfg("run=graphs-fail", "index.index_bsize=8"), Store(tmp_path / "s"), tmp_path)
    checkpoint, config = res.checkpoint, res.colbert_config
    passages = ["alpha beta gamma"] * (2 * setup.group_size(config))
    ids, masks, order = setup.tokenize(passages, checkpoint, config, 0)
    quiet = lambda done, total: None  # noqa: E731
    eager = setup.encode_tokens(ids, masks, order, checkpoint, config, quiet, pipeline=True, graphs=False)
    made = []
    real = graphs.GraphedDocBatch.__init__

    def init(self, checkpoint_, eager):
        real(self, checkpoint_, eager)
        made.append(self)

    monkeypatch.setattr(graphs.GraphedDocBatch, "__init__", init)
    forward = checkpoint.linear.forward
    monkeypatch.setattr(checkpoint.linear, "forward",  # a host sync that changes nothing
                        lambda x: forward(x) if bool(torch.isfinite(x).all()) else forward(x))
    prepare = modeling_bert._prepare_4d_attention_mask_for_sdpa
    graphed = setup.encode_tokens(ids, masks, order, checkpoint, config, quiet, pipeline=True, graphs=True)
    assert made and made[0].failed and not made[0].graphs, made[0].failed
    assert modeling_bert._prepare_4d_attention_mask_for_sdpa is prepare
    assert torch.equal(graphed[0].view(torch.int16), eager[0].view(torch.int16)) and torch.equal(graphed[1], eager[1])


FLASH = "index.kmeans_backend=flash"


def test_flash_kmeans_capture_completes_and_repeats_itself_in_one_process(tiny_cfg):
    """flash-kmeans (colbert-ai's next k-means) on the tiny capture: complete, fp32 centroids of the run's
    num_partitions x dim, and a second capture in this process has the same prenorm_centroids bits."""
    a = capture(tiny_cfg("run=cuda-flash-a", FLASH), progress=quiet_progress)
    b = capture(tiny_cfg("run=cuda-flash-b", FLASH), progress=quiet_progress)
    store = Store(tiny_cfg().store.root)
    assert a.complete and b.complete
    centroids = store.get(a, "prenorm_centroids")
    assert centroids.dtype == torch.float32 and centroids.device.type == "cpu"
    assert centroids.shape == (int(store.get(a, "num_partitions")), int(tiny_cfg().model.dim))
    assert a.artifacts["prenorm_centroids"].ref.hash == b.artifacts["prenorm_centroids"].ref.hash


def test_flash_kmeans_captures_in_two_fresh_processes_agree(tmp_path):
    """Two `python -m colbert_swap index.kmeans_backend=flash` processes: the same prenorm_centroids bits."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import TINY

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    for label in ("flash-p1", "flash-p2"):
        out = subprocess.run([sys.executable, "-m", "colbert_swap", f"run={label}", FLASH, f"store.root={tmp_path}",
                              *TINY], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
    one, two = (Store(tmp_path).load(label) for label in ("flash-p1", "flash-p2"))
    assert one.complete and two.complete
    assert one.artifacts["prenorm_centroids"].ref.hash == two.artifacts["prenorm_centroids"].ref.hash


def test_the_determinism_check_reports_on_a_flash_kmeans_run(tiny_cfg, tmp_path):
    """task=determinism on the k-means stage of a flash run (in this process and a fresh one) writes its report
    without crashing; what it found is recorded, consistent with the exit status, whatever it is."""
    import json

    from colbert_swap.study.determinism import REPRODUCIBLE
    from colbert_swap.tasks import determinism as task

    capture(tiny_cfg("run=cuda-flash-a", FLASH), progress=quiet_progress)
    cfg = tiny_cfg("task=determinism", "run=cuda-flash-a", FLASH, "stages=[prenorm_centroids]",
                   f"out_dir={tmp_path}")
    status = task.run(cfg)
    report = json.loads((tmp_path / "report.json").read_text())
    check = report["stages"]["prenorm_centroids"]
    print(f"flash prenorm_centroids: {check['status']}; run_to_run={check['run_to_run']}, "
          f"fresh={check['fresh']}, max_abs={check.get('max_abs')}")
    assert report["task"] == "determinism" and set(report["stages"]) == {"prenorm_centroids"}
    assert check["status"] and check["fresh"] is not None  # measured here and in a fresh process
    assert (status == 0) == (check["status"] == REPRODUCIBLE) == (report["not_reproducible"] == [])


def test_faiss_and_flash_kmeans_captures_differ_first_at_prenorm_centroids(tiny_cfg):
    """task=compare of a faiss capture and a flash one: the first difference is the k-means output, named as the
    backend's (a config key the stage reads), not the environment's."""
    from colbert_swap.proof.compare.comparators import Status
    from colbert_swap.tasks.compare import compare

    capture(tiny_cfg("run=cuda-a"), progress=quiet_progress)
    capture(tiny_cfg("run=cuda-flash-a", FLASH), progress=quiet_progress)
    cfg = tiny_cfg("task=compare", "source=cuda-a", "target=cuda-flash-a", "force=true")
    result = compare(cfg, Store(cfg.store.root))
    assert result.artifacts.first_diverged() == ["prenorm_centroids"]
    (prenorm,) = [r for r in result.artifacts.results if r.name == "prenorm_centroids"]
    assert prenorm.status == Status.DIVERGED
    assert "index.kmeans_backend: 'faiss' vs 'flash'" in result.artifacts.config_diffs
    assert "the difference is the config's, not the environment's" in result.verdict
