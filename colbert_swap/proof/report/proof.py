"""The proof report: report.json (machine) and report.md (the seed posts' tables and a verdict)."""

from __future__ import annotations

import time
from pathlib import Path

from colbert_swap.proof.compare.comparators import Comparison, Status
from colbert_swap.proof.compare.runs import RunComparison, WholeRun
from colbert_swap.proof.report.tables import table
from colbert_swap.core.store import RunManifest


def out_dir(cfg, task: str) -> Path:
    """cfg.out_dir, else Hydra's output folder for this job, else <store>/reports/<task>-<time>."""
    if cfg.get("out_dir"):
        path = Path(cfg.out_dir)
    else:
        try:
            from hydra.core.hydra_config import HydraConfig

            path = Path(HydraConfig.get().runtime.output_dir)
        except ValueError:  # not under @hydra.main (a library call, a test): a folder of its own
            return _new_folder(Path(cfg.store.root) / "reports", f"{task}-{time.strftime('%Y%m%d-%H%M%S')}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _new_folder(parent: Path, name: str) -> Path:
    """parent/name, or parent/name-2, -3, ...: the first that did not exist (two calls in one second)."""
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        path = parent / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"no free folder for {name} in {parent}")


def num(x: float | None) -> str:
    if x is None:
        return ""
    return "0" if x == 0 else f"{x:.3g}"


def comparison_table(comparison: RunComparison, names: list[str] | None = None, legend: bool = True) -> str:
    """The seed posts' table, one row per artifact, with a legend saying what `allclose` and each ULP column
    mean for this comparison."""
    rows = []
    for r in comparison.results:
        if names is not None and r.name not in names:
            continue
        mark = lambda ok: "" if not r.allclose else ("True" if ok else "**False**")  # noqa: E731
        mismatch = f"{r.mismatches:,} ({r.fraction:.2%})" if r.mismatches else "0"
        status = r.status if r.same else f"**{r.status}**"
        rows.append([f"`{r.name}`", r.stage, r.dtype, r.shape, status, mark(r.allclose.get("torch")),
                     mark(r.allclose.get("bnb")), mismatch, num(r.max_abs), num(r.mad),
                     "" if r.max_ulp is None else f"{r.max_ulp:,}", num(r.max_ulp_scaled)])
    text = table(["artifact", "stage", "dtype", "shape", "status", "allclose (torch defaults)", "allclose (bnb)",
                  "mismatches", "max abs", "MAD", "max ULP (bits)", "max ULP at scale"], rows)
    return text + ("\n\n" + legend_text(comparison) if legend else "")


def legend_text(comparison: RunComparison) -> str:
    return (f"Status `allclose`: torch.allclose with {comparison.tolerance.describe()} (`compare.tolerance=`, "
            "`compare.per_artifact=`). *max ULP (bits)*: representable floats between the two values; *max ULP at "
            "scale*: |a - b| over the spacing of floats at max(|a|, |b|, the artifact's median |value|), the unit "
            "the rounding-noise verdicts use.")


def artifact_json(results: list[Comparison] | tuple[Comparison, ...]) -> dict:
    return {r.name: r.to_json() for r in results}


def describe(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(f"`{n}`" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 artifact', '2 artifacts', '1 query', '3 queries'."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


def differ(n: int) -> str:
    """'1 artifact differs', '2 artifacts differ'."""
    return "differs" if n == 1 else "differ"


def order_text(names: list[str] | tuple[str, ...], comparison: RunComparison | None = None) -> str:
    """' except the order of `ivf` (same elements in each of 512 segments, in another order)'."""
    if not names:
        return ""
    notes = {r.name: r.note for r in comparison.results} if comparison is not None else {}
    return " except the order of " + "; ".join(f"`{n}`" + (f" ({notes[n]})" if notes.get(n) else "") for n in names)


def index_sentence(whole: WholeRun) -> str:
    """Whether colbert-ai's index files of the two runs are the same files (what a user searches), after what
    one run alone keeps and no comparison covered (its search, its capture.batches artifacts), if anything."""
    alone = "".join(f"{run} alone also keeps {plural(len(names), 'artifact')} ({describe(list(names))}): not "
                    "compared. " for run, names in whole.alone)
    return alone + _index_files(whole)


def _index_files(whole: WholeRun) -> str:
    if whole.index is None:
        return "colbert-ai's index files were not compared (one of the runs has no index folder)."
    if not whole.index:
        return f"colbert-ai's index files of {whole.a} and {whole.b} are identical."
    data = sorted(whole.index_data)
    if not data:
        files = sorted(whole.index)
        return (f"colbert-ai's index files of {whole.a} and {whole.b} hold the same data; only the config they record "
                f"differs ({describe(files)}: {whole.index[files[0]].removeprefix('config: ')}).")
    return (f"colbert-ai's index files of {whole.a} and {whole.b} differ: {describe(data)} "
            f"(`{data[0]}`: {whole.index[data[0]]}).")


def injection_verdict(injected: list[str], source: str, target: str, before: RunComparison,
                      after: RunComparison, downstream: list[str], whole: WholeRun) -> str:
    """The inject verdict: the downstream artifacts, then the run as a whole and its index files.
    `after` compares the replayed run with the source over every artifact; `whole` is its WholeRun."""
    what = f"Injecting {describe(injected)} from {source} into {target}"
    if source == target:  # a null injection: the replay against the run it replays
        left = [n for n in downstream if not after[n].same]
        if not downstream:
            return f"Null injection of {describe(injected)} into {source} (source = target): no stage reads it. " + \
                index_sentence(whole)
        if not left:
            return (f"Null injection of {describe(injected)} into {source} (source = target): the replay recomputes "
                    f"all {plural(len(downstream), 'downstream artifact')} bit for bit: the replay is exact here. " +
                    index_sentence(whole))
        return (f"Null injection of {describe(injected)} into {source} (source = target): the replay does NOT "
                f"recompute {len(left)} of {plural(len(downstream), 'downstream artifact')}: {describe(left)}: those "
                f"stages do not repeat themselves here (task=determinism run={source} checks them). " +
                index_sentence(whole))
    if not before.diverged():
        return (f"Runs {source} and {target} do not differ: all {plural(len(before.results), 'artifact')} are "
                f"bitwise equal{order_text([r.name for r in before.order_only()], before)}, so there is nothing "
                f"for the injection to explain. " + index_sentence(whole))
    results = [after[n] for n in downstream]
    left = [r.name for r in results if not r.same]
    if not downstream:
        text = f"{what} changes nothing downstream: no stage reads it."
    elif not left:
        order = [r.name for r in results if r.status == Status.ORDER_ONLY]
        text = (f"{what} makes all {plural(len(results), 'downstream artifact')} identical to {source}'s"
                f"{order_text(order, after)}.")
    else:
        text = (f"{what} leaves {len(left)} of {plural(len(results), 'downstream artifact')} different from "
                f"{source}'s: {describe(left)}. They also read artifacts that still differ, upstream of or beside "
                "the injection.")
    elsewhere = [n for n in whole.differing if n not in downstream]
    if not whole.differing:
        text += f" Every artifact of the replayed run now equals {source}'s: the injection explains the whole divergence."
    elif elsewhere:
        text += (f" Outside what the injection reaches, still different from {source}'s: {describe(elsewhere)}: "
                 "the injection does not explain the whole run.")
    return text + " " + index_sentence(whole)


def computed_where(run: RunManifest) -> str:
    """A table: which environment computed which of a run's artifacts (a replay takes some from its target
    and its injected ones from the source; it computes the rest in one environment, its own)."""
    from colbert_swap.env.provenance import short

    groups: dict[tuple[str, str], list[str]] = {}
    for name, record in run.artifacts.items():
        how = f"injected from {record.stage.split(':', 1)[1]}" if record.stage.startswith("inject:") else \
            "computed by this run" if run.computed_in(name) == run.env else "taken from its target"
        groups.setdefault((run.computed_in(name), how), []).append(name)
    rows = [[how, f"`{env}`" + (" (this run's own)" if env == run.env else ""),
             short(run.environments.get(env) or run.provenance), len(names), describe(names, 4)]
            for (env, how), names in groups.items()]
    return table(["artifacts", "computed in", "environment", "count", "names"], rows)


def html_page(markdown_text: str, folder: Path) -> str | None:
    """The markdown as a self-contained HTML page: tables rendered, PNG figures inlined as data URIs (None
    where the `markdown` package is missing, e.g. in an environment built before it was a dependency)."""
    import base64
    import re

    try:
        import markdown
    except ImportError:
        return None

    body = markdown.markdown(markdown_text, extensions=["tables"])

    def inline(match: re.Match) -> str:
        path = folder / match.group(1)
        if not path.is_file():
            return match.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"'

    body = re.sub(r'src="([^"/]+\.png)"', inline, body)
    style = ("body{font-family:sans-serif;max-width:1400px;margin:2em auto;line-height:1.45} table{border-collapse:"
             "collapse;font-size:12px} td,th{border:1px solid #ccc;padding:2px 6px} img{max-width:100%} code{"
             "background:#f4f4f4}")
    return f"<!doctype html><meta charset=\"utf-8\"><title>colbert_swap report</title><style>{style}</style>\n{body}\n"
