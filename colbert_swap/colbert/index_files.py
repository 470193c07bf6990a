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
from typing import Callable, Iterable

import torch
import ujson

from colbert_swap.core.dag import template
from colbert_swap.errors import UserError

# The artifacts colbert-ai's index files are written from: every `get(...)` of `write_index` below
# (tests/unit/test_bundle.py reads that function and holds this list to it). A bundle of `artifacts=index` carries
# their bytes, and a capture of `store.keep=index` keeps them.
INDEX_ARTIFACTS = ("num_passages", "num_partitions", "num_embeddings_est", "avg_doclen_est", "centroids",
                   "avg_residual", "bucket_cutoffs", "bucket_weights", "codes.N", "residuals.N", "doclens.N",
                   "ivf_pid", "ivf_pid_lengths", "num_embeddings")
SMALL_BYTES = 1 << 20  # store.keep=index keeps every tensor up to this size too: they cost nothing to keep


def index_artifact(name: str, kind: str) -> bool:
    """One of the index's artifacts (INDEX_ARTIFACTS), or a JSON artifact (a count, a list of ids)."""
    return template(name) in INDEX_ARTIFACTS or kind == "json"


def keeper(value, known: Iterable[str], searched: Iterable[str] = ()) -> Callable[[str, object], bool] | None:
    """store.keep as a capture's predicate over (artifact name, value): None keeps every artifact's bytes (`all`);
    `index` keeps the index's artifacts, those a search reads (`searched`: `half_centroids`; a search of the run
    later reads them from the store), every JSON one and every tensor of at most SMALL_BYTES, and a list
    (keep=[index,embs]) keeps the artifacts it names beside those (embs: every embs.N). `known`: the artifact
    templates the stages make (a name none of them makes is refused, with the close ones)."""
    import difflib

    names = [str(value)] if isinstance(value, str) else [str(v) for v in value or []]
    if not names or "all" in names:
        return None
    known = {template(n).removesuffix(".N") for n in known}
    more = {n.removesuffix(".N") for n in names if n != "index"}
    for name in sorted(more - known):
        close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UserError(f"store.keep={name!r}: no stage makes an artifact of that name.{hint} Use all, index or "
                        "artifact names (`python -m colbert_swap task=stages` lists them)")
    more |= {template(n).removesuffix(".N") for n in searched}

    def keep(name: str, value) -> bool:
        if not isinstance(value, torch.Tensor) or index_artifact(name, "tensor"):
            return True
        return template(name).removesuffix(".N") in more or value.numel() * value.element_size() <= SMALL_BYTES
    return keep

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
