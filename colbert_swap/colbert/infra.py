"""Everything that touches colbert-ai's global machinery: its config object, its model, its chatter.

colbert-ai reads its device from `ColBERTConfig.total_visible_gpus` (a class attribute set when it is
imported) and prints freely; these helpers build its objects exactly as `Indexer` + `Launcher` do and
keep its output in the run's log.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from colbert_swap.config import IndexConfig
from colbert_swap.errors import UserError
from colbert_swap.core.console import quiet
from colbert_swap.core.rng import RngStream, seed_globals

INDEX_NAME = "index"

# colbert-ai releases whose indexing and search code was diffed (`diff -r` of the PyPI wheels' colbert/
# packages) against 0.2.22, the release colbert_swap's stages mirror (stages/*, this file, index_files.py),
# each with what differs: (file: function, what changes, whether the capture follows it, the settings under
# which the capture must refuse instead, or None). A release that is not here is refused: its code was not
# read, so a capture that mirrors 0.2.22 could silently compute something it does not (a proof must never
# mislead). Equal in 0.2.20, 0.2.21 and 0.2.22: colbert/indexing/collection_indexer.py,
# collection_encoder.py, codecs/ (residual.py, residual_embeddings*.py, the C++ sources), indexer.py,
# infra/ (config/, run.py, launcher.py), modeling/colbert.py, hf_colbert.py, base_colbert.py, searcher.py,
# search/ except index_storage.py, and utils/. training/ differs in every pair and is never used.
MIRRORED: dict[str, tuple[tuple[str, str, str, object], ...]] = {
    "0.2.22": (),  # the mirror itself
    "0.2.21": (
        ("colbert/indexing/loaders.py: load_doclens", "the doclens regex became a raw string: the same pattern",
         "no effect", None),
        ("colbert/modeling/checkpoint.py: pool_embeddings_hierarchical", "0.2.22 added the `showprogress` "
         "argument, which stages/setup.py `_pool` passes: 0.2.21 raises TypeError", "refused",
         lambda config: (getattr(config, "pool_factor", 1) or 1) > 1),
        ("colbert/search/index_storage.py: IndexScorer.rank, score_pids", "with pids handed to rank(), 0.2.22 "
         "skips centroid pruning; the search stages mirror rank() without pids (retrieve, then score_pids with "
         "the centroid scores), where the two run the same code", "no effect", None),
    ),
}
MIRRORED["0.2.20"] = MIRRORED["0.2.21"] + (
    ("colbert/modeling/tokenization/doc_tokenization.py: DocTokenizer.tensorize (and QueryTokenizer.tensorize)",
     "0.2.20 tokenizes '. ' + text at max_length=doc_maxlen and writes the [D]/[Q] marker over the '.' "
     "(ids[:, 1]); 0.2.21 tokenizes the text at doc_maxlen - 1 and inserts the marker (_insert_prefix_token)",
     "followed: the capture calls the installed tensorize (tokens are 0.2.20's); colbert_swap/colbert/"
     "tokenizer_pool.py's call made ahead has 0.2.21+'s arguments, so tensorize makes its own call; "
     "proof/analysis/tokens.py re-tokenizes with 0.2.21+'s layout when it explains a token difference (the "
     "same ids for BERT's WordPiece, which splits '.' off; other tokenizers may merge it)", None),
)


def colbert_release() -> str | None:
    """The installed colbert-ai's version (its distribution metadata), None where it has none."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("colbert-ai")
    except PackageNotFoundError:
        return None


def check_release(config=None, release: str | None = None) -> list[str]:
    """Refuse (UserError) a colbert-ai release whose indexing code was not diffed against the mirrored 0.2.22
    (not in MIRRORED), or a known difference that matters under `config`'s settings (a ColBERTConfig);
    return, for a release that differs in ways the capture follows, what differs (also as a warning when a
    config is given: `colbert_config` checks the release before it reads the checkpoint, and the settings after).

    >>> check_release(release="0.2.22")
    []
    """
    import warnings

    release = release or colbert_release()
    if release not in MIRRORED:
        raise UserError(f"colbert-ai {release or '(no version: not an installed distribution)'} is installed; "
                        f"colbert_swap's capture mirrors colbert-ai 0.2.22's indexing code and knows how "
                        f"{', '.join(sorted(r for r in MIRRORED if r != '0.2.22'))} differ from it "
                        f"(colbert_swap/colbert/infra.py MIRRORED), not this release: diff its colbert/ "
                        f"package against 0.2.22 and add it there, or install colbert-ai==0.2.22")
    refused = [f"{where} ({what})" for where, what, _, refuse in MIRRORED[release]
               if refuse is not None and config is not None and refuse(config)]
    if refused:
        raise UserError(f"colbert-ai {release} differs from 0.2.22, which the capture mirrors, where these settings "
                        f"reach it: {'; '.join(refused)}. Install colbert-ai==0.2.22 or change the setting")
    followed = [f"colbert-ai {release}: {where}: {what} ({effect})" for where, what, effect, _ in MIRRORED[release]
                if effect.startswith("followed")]
    for note in followed if config is not None else ():  # once per config: not for the early check
        warnings.warn(note, stacklevel=2)
    return followed


def resolve_device(requested: str) -> str:
    cuda = torch.cuda.is_available()
    if requested == "auto":
        return "cuda" if cuda else "cpu"
    if requested == "cuda" and not cuda:
        raise UserError("index.device=cuda but torch sees no GPU (torch.cuda.is_available() is False)")
    if requested == "cpu" and cuda:
        raise UserError("index.device=cpu on a machine with a GPU: colbert-ai decides its device when it is "
                        "imported; run with CUDA_VISIBLE_DEVICES= to index on the CPU")
    if requested not in ("cpu", "cuda"):
        raise UserError(f"index.device={requested!r} is unknown; expected auto, cpu or cuda")
    return requested


def colbert_config(checkpoint: str, index: IndexConfig, collection_path: str, index_root: str,
                   index_bsize: int | None = None):
    """The config colbert-ai's `Indexer(checkpoint, config).index(name, collection)` hands its worker.

    Mirrors colbert/indexer.py (__init__, index) and colbert/infra/launcher.py (launch_without_fork); refuses a
    colbert-ai release whose code differs from the mirrored 0.2.22 where it matters (`check_release`)."""
    from colbert.infra import ColBERTConfig, Run, RunConfig

    check_release()
    with Run().context(RunConfig(nranks=1, experiment="colbert_swap", root=index_root)):
        user = ColBERTConfig(doc_maxlen=index.doc_maxlen, nbits=index.nbits, kmeans_niters=index.kmeans_niters,
                             index_bsize=index_bsize or index.index_bsize, index_root=index_root)
        config = ColBERTConfig.from_existing(ColBERTConfig.load_from_checkpoint(checkpoint), user, Run().config)
        config.configure(checkpoint=checkpoint)
        config.configure(collection=collection_path, index_name=INDEX_NAME, resume=False)
        config.configure(bsize=64, partitions=None)
        run_config = RunConfig.from_existing(Run().config, None)
        config = ColBERTConfig.from_existing(config, run_config, RunConfig(rank=0))
    _check_codec_shape(config)
    check_release(config)
    return config


def _check_codec_shape(config) -> None:
    if config.dim % (config.nbits * 8):
        raise UserError(f"index.nbits={config.nbits} does not divide the model's dim={config.dim} into bytes "
                        f"(colbert-ai needs dim % (nbits * 8) == 0)")


_MODELS: dict[tuple, tuple[object, dict]] = {}


def knob(perturb, name: str):
    """One perturb knob, whatever the knobs were handed as (the typed PerturbConfig, a config node, a dict
    read from a manifest, or None)."""
    if perturb is None:
        return None
    return perturb.get(name) if isinstance(perturb, dict) else getattr(perturb, name, None)


def load_checkpoint(path: str, config, amp: bool, seed: int, device: str, log: Path, perturb=None):
    """colbert-ai's `Checkpoint`, built right after seeding the globals as its Launcher does, with the
    model knobs of `perturb` applied (`apply_model_knobs`).

    Returns the model and the generator state right after it was built (what `sample_pids` and
    `sample` draw from). Cached per process: the state is recorded once, so a cached model replays
    the very same numbers."""
    from colbert.modeling.checkpoint import Checkpoint

    knobs = tuple(knob(perturb, k) for k in ("attn", "scale_module", "scale", "tokenizer"))
    key = (path, amp, seed, device, knobs, config.doc_maxlen, config.dim, config.query_maxlen)
    if key not in _MODELS:
        seed_globals(seed)
        with quiet(log):
            model = Checkpoint(path, colbert_config=config)
            apply_model_knobs(model, perturb, amp)
            if device == "cuda":
                model = model.cuda()
        _MODELS[key] = (model, RngStream.from_globals().state())
    model, state = _MODELS[key]
    return model, RngStream.from_state(state)


def apply_model_knobs(model, perturb, amp: bool) -> None:
    """The `perturb` knobs that change the model object itself, the same for indexing and for the query
    encoder of a search: autocast on or off, BERT's attention implementation, a planted weight scale."""
    from colbert.utils.amp import MixedPrecisionManager

    model.amp_manager = MixedPrecisionManager(amp)
    if knob(perturb, "attn"):
        set_attention(model.bert, "sdpa" if knob(perturb, "attn") == "sdpa_math" else knob(perturb, "attn"))
    if knob(perturb, "scale_module"):
        scale_weights(model, knob(perturb, "scale_module"), knob(perturb, "scale") or 1.0)
    if knob(perturb, "tokenizer"):
        set_tokenizer(model, knob(perturb, "tokenizer"))


def set_tokenizer(model, kind: str) -> None:
    """perturb.tokenizer: the passages' and queries' tokenizer as transformers' Python (`slow`) or Rust
    (`fast`) implementation, loaded from the same checkpoint files. colbert-ai loads the fast one
    (AutoTokenizer); the two can split the same text differently where their Unicode tables differ
    (docs/tokenizers.md)."""
    for tokenizer in (model.doc_tokenizer, model.query_tokenizer):
        use_tokenizer(tokenizer, model.colbert_config.checkpoint, kind)


def use_tokenizer(tokenizer, checkpoint: str, kind: str) -> None:
    """Give one colbert-ai tokenizer (DocTokenizer, QueryTokenizer) the `slow` or `fast` transformers tokenizer
    of `checkpoint`, loaded only when it has the other one."""
    from transformers import AutoTokenizer

    if kind not in ("slow", "fast"):
        raise UserError(f"perturb.tokenizer={kind!r}; expected slow or fast")
    if getattr(tokenizer.tok, "is_fast", False) != (kind == "fast"):
        tokenizer.tok = AutoTokenizer.from_pretrained(checkpoint, use_fast=(kind == "fast"))


def scale_weights(model, module: str, factor: float) -> None:
    """perturb.scale_module/scale: multiply one module's weight by `factor` (a planted cause that changes
    the embeddings on every machine, whatever its kernels)."""
    modules = dict(model.model.named_modules())
    target = modules.get(module)
    if target is None or not isinstance(getattr(target, "weight", None), torch.Tensor):
        import difflib

        names = [n for n, m in modules.items() if isinstance(getattr(m, "weight", None), torch.Tensor)]
        close = difflib.get_close_matches(module, names, n=3, cutoff=0.5)
        raise UserError(f"perturb.scale_module={module!r} is not a module with weights of this model"
                        + (f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""))
    with torch.no_grad():
        target.weight.mul_(factor)


def set_attention(bert, impl: str) -> None:
    """Switch a loaded BERT between eager and SDPA attention (same weights: the SDPA class only
    overrides forward), as `from_pretrained(attn_implementation=...)` would have built it."""
    import importlib

    if impl not in ("eager", "sdpa"):
        raise UserError(f"perturb.attn={impl!r} is unknown; expected eager, sdpa or sdpa_math")
    module = importlib.import_module(type(bert).__module__)
    classes = getattr(module, "BERT_SELF_ATTENTION_CLASSES", None)
    if classes is None or not hasattr(bert, "encoder"):
        if impl == "eager" and classes is None and hasattr(module, "BertSelfAttention"):
            return  # transformers < 4.41: BERT has eager attention only
        raise UserError(f"perturb.attn={impl} needs a BERT model on transformers >= 4.41 (found {type(bert).__name__})")
    for layer in bert.encoder.layer:
        layer.attention.self.__class__ = classes[impl]
    bert.config._attn_implementation = impl
    if hasattr(bert, "attn_implementation"):
        bert.attn_implementation = impl


@contextmanager
def attention_backend(attn: str | None) -> Iterator[None]:
    """perturb.attn=sdpa_math: scaled_dot_product_attention restricted to its math backend."""
    if attn != "sdpa_math":
        yield
        return
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        context = sdpa_kernel(SDPBackend.MATH)
    except ImportError:  # torch < 2.3
        context = torch.backends.cuda.sdp_kernel(enable_flash=False, enable_math=True, enable_mem_efficient=False)
    with context:
        yield


@contextmanager
def perturbed(perturb) -> Iterator[None]:
    """The perturb knobs that are global torch switches, set while a stage runs and restored after; with
    perturb.threads=N, the stage computes with N threads in torch, its MKL, faiss and every BLAS and OpenMP
    library (threads.limited; a run's provenance records the counts under the same limits:
    provenance.run_environment)."""
    from colbert_swap.env.threads import limited

    switches = []
    if knob(perturb, "tf32") is not None:
        switches += [(torch.backends.cuda.matmul, "allow_tf32", knob(perturb, "tf32")),
                     (torch.backends.cudnn, "allow_tf32", knob(perturb, "tf32"))]
    if knob(perturb, "fp16_reduction") is not None:
        switches.append((torch.backends.cuda.matmul, "allow_fp16_reduced_precision_reduction", knob(perturb, "fp16_reduction")))
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in switches]
    try:
        for obj, name, value in switches:
            setattr(obj, name, bool(value))
        with attention_backend(knob(perturb, "attn")), limited(knob(perturb, "threads")):
            yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


NOISE_ELEMENTS = 8  # elements perturb.noise nudges in each floating-point output
NOISE_ULPS = (2, 17)  # by this many units of the dtype's epsilon (relative), up or down


def noise(perturb, stage: str, result):
    """perturb.noise=STAGE: a planted stage that does not repeat itself. Each floating-point tensor the stage
    returns gets NOISE_ELEMENTS elements, chosen from os.urandom (never seeded: no generator state the engine
    records or restores reaches it), moved up or down by 2-16 times its dtype's epsilon (relative): another
    tiny difference at every run, on equal inputs, as a nondeterministic kernel gives. `result` is the stage's
    return value (one value or a tuple); other stages' are returned as they are."""
    name = knob(perturb, "noise")
    if not name or name != stage:
        return result
    values = result if isinstance(result, tuple) else (result,)
    out, touched = [], False
    for value in values:
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
            value, touched = _jitter(value), True
        out.append(value)
    if not touched:
        raise UserError(f"perturb.noise={name}: stage {name!r} returns no floating-point tensor to perturb; choose a "
                        "stage with a float output (prenorm_centroids, local_sample_embs, embs, ...)")
    return tuple(out) if isinstance(result, tuple) else out[0]


def _jitter(tensor: torch.Tensor) -> torch.Tensor:
    draws = os.urandom(9 * NOISE_ELEMENTS)
    flat = tensor.detach().clone().reshape(-1)
    eps, tiny = torch.finfo(flat.dtype).eps, torch.finfo(flat.dtype).tiny
    low, high = NOISE_ULPS
    for i in range(NOISE_ELEMENTS):
        chunk = draws[9 * i: 9 * (i + 1)]
        index = int.from_bytes(chunk[:8], "little") % flat.numel()
        step = low + chunk[8] % (high - low)
        sign = 1.0 if chunk[8] & 0x80 else -1.0
        x = float(flat[index])
        flat[index] = x + sign * max(abs(x), tiny) * step * eps
    return flat.reshape(tensor.shape)
