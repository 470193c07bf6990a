"""Write a run's artifacts as the index directory colbert-ai's `Indexer` writes (and `Searcher` reads).

Every file is written with the same colbert-ai call or the same `ujson`/`torch.save` line as
colbert-ai 0.2.22, so the files are equal to the reference's: `ResidualCodec.save` (centroids.pt,
buckets.pt, avg_residual.pt), `ResidualEmbeddings.save` (N.codes.pt, N.residuals.pt), `IndexSaver`
(doclens.N.json, N.metadata.json), `optimize_ivf` (ivf.pid.pt), `_save_plan` / `_update_metadata`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch
import ujson

def write_index(dest: Path, get: Callable[[str], object], colbert_config, num_chunks: int) -> Path:
    """`get(name)` returns an artifact; chunks are read one at a time. The directory appears whole."""
    from colbert.indexing.codecs.residual_embeddings import ResidualEmbeddings

    from colbert_swap.colbert.stages.train import codec

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        config = colbert_config.export()
        num_passages = get("num_passages")
        _write_json(tmp / "plan.json", {"config": config, "num_chunks": num_chunks,
                                         "num_partitions": get("num_partitions"),
                                         "num_embeddings_est": get("num_embeddings_est"),
                                         "avg_doclen_est": get("avg_doclen_est")})
        codec(colbert_config, get("centroids"), avg_residual=get("avg_residual"),
              bucket_cutoffs=get("bucket_cutoffs"), bucket_weights=get("bucket_weights")).save(index_path=str(tmp))
        passage_offset = embedding_offset = 0
        for chunk in range(num_chunks):
            codes, residuals = get(f"codes.{chunk}"), get(f"residuals.{chunk}")
            ResidualEmbeddings(codes, residuals).save(str(tmp / str(chunk)))
            doclens = get(f"doclens.{chunk}").tolist()
            with open(tmp / f"doclens.{chunk}.json", "w") as f:
                ujson.dump(doclens, f)
            meta = {"passage_offset": passage_offset, "num_passages": len(doclens),
                    "num_embeddings": int(codes.numel()), "embedding_offset": embedding_offset}
            _write_json(tmp / f"{chunk}.metadata.json", meta)
            passage_offset += len(doclens)
            embedding_offset += int(codes.numel())
        torch.save((get("ivf_pid"), get("ivf_pid_lengths")), tmp / "ivf.pid.pt")
        num_embeddings = get("num_embeddings")
        _write_json(tmp / "metadata.json", {"config": config, "num_chunks": num_chunks,
                                             "num_partitions": get("num_partitions"),
                                             "num_embeddings": num_embeddings,
                                             "avg_doclen": num_embeddings / num_passages})
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _write_json(path: Path, value: dict) -> None:
    with open(path, "w") as f:
        f.write(ujson.dumps(value, indent=4) + "\n")


# Config keys that name places and times (index folder, experiment root, run timestamp), not results.
PLACE_KEYS = ("root", "experiment", "index_root", "index_name", "index_path", "name")


def read_index_file(path: Path, ignore: tuple[str, ...] = PLACE_KEYS):
    """colbert-ai writes .pt files with torch.save; read them without unpickling code."""
    if path.suffix == ".pt":
        return torch.load(path, map_location="cpu", weights_only=True)
    with open(path) as f:
        value = ujson.load(f)
    if isinstance(value, dict) and isinstance(value.get("config"), dict):
        value = {**value, "config": {k: v for k, v in value["config"].items() if k not in ignore}}
    return value


def index_differences(a: Path, b: Path, ignore: tuple[str, ...] = PLACE_KEYS) -> dict[str, str]:
    """Files of two colbert-ai index directories that are not equal (tensors: dtype, shape and
    `torch.equal`; JSON: equal after dropping the `ignore` keys from `config`). Empty means identical."""
    names_a = {p.name for p in Path(a).iterdir()}
    names_b = {p.name for p in Path(b).iterdir()}
    diffs = {n: "only in " + str(a) for n in names_a - names_b}
    diffs.update({n: "only in " + str(b) for n in names_b - names_a})
    for name in sorted(names_a & names_b):
        why = _difference(read_index_file(Path(a) / name, ignore), read_index_file(Path(b) / name, ignore))
        if why:
            diffs[name] = why
    return diffs


def run_index_differences(store, a, b) -> dict[str, str] | None:
    """index_differences of two runs' index folders in the store; None when one of them has no index."""
    dirs = [store.run_dir(m.label) / "index" for m in (a, b)]
    if not all((d / "metadata.json").exists() for d in dirs):
        return None
    return index_differences(*dirs)


CONFIG = "config: "  # how a JSON file that differs only in the config it records is described


def data_differences(diffs: dict[str, str]) -> dict[str, str]:
    """The files whose data differ (tensors, doclens, counts), leaving out those that differ only in the
    ColBERTConfig they record (e.g. another index_bsize)."""
    return {name: why for name, why in diffs.items() if not why.startswith(CONFIG)}


def _difference(x, y) -> str:
    if isinstance(x, dict) and isinstance(y, dict) and isinstance(x.get("config"), dict) \
            and isinstance(y.get("config"), dict):
        rest = _difference({k: v for k, v in x.items() if k != "config"}, {k: v for k, v in y.items() if k != "config"})
        if rest:
            return rest
        keys = sorted(k for k in set(x["config"]) | set(y["config"]) if x["config"].get(k) != y["config"].get(k))
        return CONFIG + ", ".join(f"{k} {x['config'].get(k)!r} vs {y['config'].get(k)!r}" for k in keys) if keys else ""
    if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
        if x.dtype != y.dtype or x.shape != y.shape:
            return f"{x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)}"
        return "" if torch.equal(x, y) else f"{int((x != y).sum())} of {x.numel()} elements differ"
    if isinstance(x, (tuple, list)) and isinstance(y, (tuple, list)) and len(x) == len(y):
        parts = [_difference(p, q) for p, q in zip(x, y)]
        return "; ".join(f"[{i}] {w}" for i, w in enumerate(parts) if w)
    return "" if x == y else "values differ"
