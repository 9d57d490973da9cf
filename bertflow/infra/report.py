"""``bertflow report``: one self-contained HTML page of a run, from its run record.

    bertflow report demo                       # the latest run of `demo`
    bertflow report demo --run 20261202T040902.829406Z-414aef --out ./report

The page reads the run record (``{storage}/_runs/{workflow}/<stamp>.json``) and the step
folders it names, through ``bertflow.contracts.storage`` (so any fsspec store): the plan with each
step's time and counters (a reused step's from its manifest, when it ran), the examples'
length histogram and masking shares against BERT's (15% of tokens predicted; of those 80%
[MASK], 10% a random token, 10% kept), the pretraining curves (train and held-out loss,
MLM and NSP accuracy) and throughput from ``metrics.jsonl``, and the fine-tuning table
from ``results.json``. Sections follow the files a step wrote, not its kind's name.
Every plot is a matplotlib PNG written beside the page and embedded in it (base64), so the
page alone can be mailed or opened from a bucket. Default place:
``{storage}/_reports/{workflow}/{run stamp}/report.html``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import posixpath
from datetime import datetime, timezone

from bertflow.contracts import storage

from .runner import SUCCESS

PAGE = "report.html"
# BERT's masking recipe (Devlin et al. 2019, section 3.1 and appendix A.1)
BERT_MASK_SHARES = {"mask_share": 0.8, "random_share": 0.1, "kept_share": 0.1}
PRETRAIN_CURVES = [  # (file, title, y label, [(train key, eval key)])
    ("pretrain-loss", "Loss", "loss", [("loss", "eval_loss"), ("mlm_loss", "eval_mlm_loss"), ("nsp_loss", "eval_nsp_loss")]),
    ("pretrain-mlm-accuracy", "Masked-LM accuracy", "accuracy", [("mlm_acc", "eval_mlm_acc")]),
    ("pretrain-nsp-accuracy", "Next-sentence accuracy", "accuracy", [("nsp_acc", "eval_nsp_acc")]),
]


class ReportError(Exception):
    """No run record to report on (the message says where it looked)."""


def records(root: str, workflow: str) -> list[str]:
    """The run records of ``workflow`` under the storage root, oldest first."""
    return storage.glob(storage.join(root, "_runs", workflow, "*.json"))


def find_record(root: str, workflow: str, run: str = "latest") -> str:
    """The record's URL: ``latest``, a record's file name or stamp (a prefix of it does if
    it names one record), or a record's own path or URL."""
    if run.endswith(".json") and ("/" in run or "://" in run):
        if not storage.exists(run):
            raise ReportError(f"no run record {run}")
        return run
    found = records(root, workflow)
    where = storage.join(root, "_runs", workflow)
    if not found:
        raise ReportError(f"no run of workflow '{workflow}' recorded under {where} (run it first: bertflow run {workflow})")
    if run == "latest":
        return found[-1]
    matches = [u for u in found if posixpath.basename(u).startswith(run.removesuffix(".json"))]
    if len(matches) != 1:
        names = ", ".join(posixpath.basename(u).removesuffix(".json") for u in found[-5:])
        what = "no" if not matches else f"{len(matches)}"
        raise ReportError(f"{what} run records match '{run}' under {where} (the latest: {names})")
    return matches[0]


def default_out(root: str, workflow: str, record_url: str) -> str:
    return storage.join(root, "_reports", workflow, posixpath.basename(record_url).removesuffix(".json"))


def write_report(record_url: str, out: str | None = None) -> str:
    """Write the page (and its PNGs) for the run record at ``record_url`` into ``out``
    (default: ``{storage}/_reports/{workflow}/{stamp}/``); returns the page's URL."""
    try:
        import matplotlib  # noqa: F401 - the plots' library, an extra
    except ModuleNotFoundError:
        raise ReportError("the report draws its plots with matplotlib, which is not installed here: "
                          "pip install 'bertflow[report]'") from None
    record = storage.read_json(record_url)
    out = out or default_out(record["storage"], record["workflow"], record_url)
    page = Page(out)
    page.header(record, record_url)
    steps = [(name, record["steps"][name], _manifest(record["steps"][name]["output"])) for name in step_order(record)]
    page.plan(steps)
    for name, s, _ in steps:
        found = storage.list_files(s["output"])
        stats = sorted(p for p in found if p == "stats.json" or (posixpath.basename(p) == "stats.json" and p.count("/") == 1))
        for rel in stats:
            page.examples(name, rel, storage.read_json(storage.join(s["output"], rel)))
        if "metrics.jsonl" in found:
            page.pretraining(name, page.jsonl(storage.join(s["output"], "metrics.jsonl")))
        if "results.json" in found:
            md = storage.read_text(storage.join(s["output"], "results.md")) if "results.md" in found else None
            curves = {rel: page.jsonl(storage.join(s["output"], rel)) for rel in found
                      if rel.startswith("trials/") and rel.endswith("/metrics.jsonl") and rel.count("/") == 3}
            page.finetuning(name, storage.read_json(storage.join(s["output"], "results.json")), md, curves)
    url = storage.join(out, PAGE)
    storage.write_bytes_atomic(url, page.html().encode())
    return url


def step_order(record: dict) -> list[str]:
    """The record's steps in the workflow's order (each after what it reads; the record's
    JSON has its keys sorted)."""
    from graphlib import TopologicalSorter

    spec = (record.get("spec") or {}).get("steps", {})
    graph = TopologicalSorter()
    for name in sorted(record["steps"]):
        inputs = (spec.get(name) or {}).get("inputs") or {}
        graph.add(name, *sorted(s for v in inputs.values() for s in ([v] if isinstance(v, str) else v) if s in record["steps"]))
    return list(graph.static_order())


def _manifest(output: str) -> dict:
    url = storage.join(output, SUCCESS)
    return storage.read_json(url) if storage.exists(url) else {}


def _e(x) -> str:
    return html.escape(str(x))


def _num(v, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:  # a counter summed as a float
        return f"{int(v):,}"
    if isinstance(v, float):
        return f"{v:,.{digits}f}" if abs(v) < 1e6 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else _e(v)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    """Cells are HTML already (escape before)."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _trial_curves(fig, trials: dict[str, list[dict]], metric: str) -> None:
    """Each trial's training loss and dev score (``dev/<metric>``, per epoch) by step."""
    loss, dev = fig.subplots(1, 2)
    for trial, rows in trials.items():
        pts = [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]
        line = loss.plot([p[0] for p in pts], [p[1] for p in pts], label=trial)[0] if pts else None
        pts = [(r["step"], r[f"dev/{metric}"]) for r in rows if isinstance(r.get(f"dev/{metric}"), (int, float))]
        if pts:
            dev.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=trial, markersize=4,
                     color=line.get_color() if line else None)
    for ax, title in ((loss, "training loss"), (dev, f"dev {metric} (per epoch)")):
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    loss.legend(fontsize="small")


class Page:
    def __init__(self, out: str):
        self.out = out
        self.parts: list[str] = []
        self.names: set[str] = set()
        self.warnings: list[str] = []  # shown at the top of the page

    def jsonl(self, url: str) -> list[dict]:
        """The objects of a JSON-lines file; a line that is not one (a run killed while it
        wrote it) is left out and said at the top of the page."""
        rows = []
        for i, line in enumerate(storage.read_text(url).splitlines(), 1):
            try:
                row = json.loads(line) if line.strip() else None
            except json.JSONDecodeError as e:
                row = e.msg
            if isinstance(row, dict) and "step" in row:
                rows.append(row)
            elif row is not None:
                self.warnings.append(f"{url} line {i}: not a metrics line ({row if isinstance(row, str) else 'no step'}); left out")
        return rows

    # -- plots ------------------------------------------------------------------------------

    def figure(self, name: str, draw, width: float = 7.5, height: float = 3.4) -> str:
        """A PNG drawn by ``draw(figure)``, written beside the page as ``name.png``; its
        ``<img>`` embeds the same bytes."""
        import matplotlib

        matplotlib.use("Agg")  # no display; the backend that only rasterizes
        from matplotlib.figure import Figure

        while name in self.names:
            name += "-2"
        self.names.add(name)
        fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
        draw(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        data = buf.getvalue()
        storage.write_bytes_atomic(storage.join(self.out, f"{name}.png"), data)
        return (f'<figure><img class="plot" alt="{_e(name)}" src="data:image/png;base64,'
                f'{base64.b64encode(data).decode()}"><figcaption>{_e(name)}.png</figcaption></figure>')

    # -- sections -----------------------------------------------------------------------------

    def header(self, record: dict, url: str) -> None:
        git = record.get("git") or {}
        commit = (git.get("commit", "")[:12] + (" (uncommitted changes)" if git.get("dirty") else "")) if git else "-"
        facts = [("workflow", record["workflow"]), ("started", record.get("started")),
                 ("took", f"{record.get('seconds', 0):.1f} s"), ("storage", record.get("storage")),
                 ("command", " ".join(record.get("argv") or [])), ("git", commit), ("run record", url),
                 ("versions", ", ".join(f"{k} {v}" for k, v in (record.get("versions") or {}).items()))]
        self.title = f"bertflow report: {record['workflow']} {record.get('started', '')}"
        self.parts.append(f"<h1>{_e(self.title)}</h1>" + "<dl>" + "".join(
            f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts) + "</dl>")

    def plan(self, steps: list[tuple[str, dict, dict]]) -> None:
        rows, times = [], []
        for name, s, m in steps:
            seconds = s.get("seconds") if s.get("action") not in ("reused", "not run") else m.get("seconds")
            counters = s.get("counters") or m.get("counters") or {}
            took = "-" if seconds is None else f"{seconds:.1f} s" + (" (when it ran)" if s.get("action") == "reused" else "")
            state = _e(s.get("action", "?")) + (f'<div class="error">{_e(s["error"])}</div>' if s.get("error") else "")
            rows.append([_e(name), _e(s.get("kind", "")), state, _e(s.get("reason", "")), took,
                         "<br>".join(f"{_e(k)} = {_num(v)}" for k, v in counters.items()),
                         f"<code>{_e(s.get('output', ''))}</code>"])
            times.append((name, seconds or 0.0, s.get("action")))

        def draw(fig):
            ax = fig.subplots()
            colors = {"ran": "tab:blue", "reused": "tab:gray", "failed": "tab:red", "interrupted": "tab:orange"}
            ax.barh([n for n, _, _ in times], [t for _, t, _ in times], color=[colors.get(a, "tab:olive") for _, _, a in times])
            ax.invert_yaxis()
            ax.set_xlabel("seconds (a reused step: when it ran)")
            ax.set_title("Step times")

        self.parts.append("<h2>Plan</h2>" + _table(["step", "kind", "this run", "why", "time", "counters", "output"], rows)
                          + self.figure("step-times", draw, height=0.5 + 0.4 * max(1, len(times))))

    def examples(self, step: str, rel: str, stats: dict) -> None:
        """A ``stats.json`` of the examples job (``bertflow.pipelines.stats.summarize`` per split)."""
        params = stats.get("params", {})
        length = params.get("max_seq_length", "")
        label = f"{step} ({rel})" if "/" in rel else step
        splits = [s for s in ("train", "eval") if isinstance(stats.get(s), dict) and stats[s].get("instances")]
        empty = [s for s in ("train", "eval") if s not in splits]
        rows = []
        expected = {"masked_per_token": params.get("masked_lm_prob", 0.15), **BERT_MASK_SHARES,
                    "nsp_random_rate": 0.5 if params.get("nsp", True) else None,
                    "short_target_share": params.get("short_seq_prob")}
        notes = {"masked_per_token": "below when max_predictions_per_seq caps it",
                 "mask_share": "of the predicted tokens", "random_share": "of the predicted tokens",
                 "kept_share": "of the predicted tokens", "nsp_random_rate": "B is a random sentence",
                 "short_target_share": "instances given a shorter target length"}
        for key, want in expected.items():
            rows.append([_e(key)] + [_pct(stats[s].get(key)) for s in splits] + [_pct(want), _e(notes[key])])
        for key in ("instances", "tokens", "masked_tokens", "mean_length", "full_share", "short_share"):
            value = [_num(stats[s].get(key)) if "share" not in key else _pct(stats[s].get(key)) for s in splits]
            rows.append([_e(key)] + value + ["", ""])

        def histogram(fig):
            ax = fig.subplots()
            for i, split in enumerate(splits):
                bins = sorted(stats[split].get("length_histogram", {}).items(), key=lambda kv: int(kv[0].split("-")[0]))
                total = max(1, sum(c for _, c in bins))
                lo, hi = (int(x) for x in bins[0][0].split("-")) if bins else (1, 1)
                width = (hi - lo + 1) * 0.4  # two splits side by side in each bin
                xs = [int(b.split("-")[0]) + i * width for b, _ in bins]
                ax.bar(xs, [c / total for _, c in bins], width=width, align="edge", label=f"{split} ({stats[split]['instances']:,})")
            ax.set_xlabel("tokens per instance")
            ax.set_ylabel("share of instances")
            ax.set_title(f"Instance lengths (max_seq_length {length})")
            ax.legend()

        def shares(fig):
            ax = fig.subplots()
            keys = list(BERT_MASK_SHARES)
            xs = range(len(keys))
            for i, split in enumerate(splits):
                ax.bar([x + i * 0.27 for x in xs], [stats[split].get(k, 0) for k in keys], width=0.27, label=split)
            ax.bar([x + len(splits) * 0.27 for x in xs], [BERT_MASK_SHARES[k] for k in keys], width=0.27,
                   label="BERT", color="none", edgecolor="black", hatch="//")
            ax.set_xticks([x + 0.27 * len(splits) / 2 for x in xs], ["[MASK]", "random token", "kept"])
            ax.set_ylabel("share of predicted tokens")
            ax.set_title(f"Masking: predicted {_pct(stats['train'].get('masked_per_token')) if 'train' in splits else '-'}"
                         f" of tokens (BERT {_pct(expected['masked_per_token'])})")
            ax.legend()

        name = f"{step}-{rel.replace('/', '-').removesuffix('.json')}"
        self.parts.append(
            f"<h2>Examples: {_e(label)}</h2>"
            + (f"<p>No {' or '.join(empty)} instances.</p>" if empty else "")
            + _table(["statistic", *splits, "BERT", ""], rows)
            + (self.figure(f"{name}-lengths", histogram) + self.figure(f"{name}-masking", shares) if splits else ""))

    def pretraining(self, step: str, rows: list[dict]) -> None:
        """``metrics.jsonl`` of a pretraining run: one line per logging or eval step."""
        def series(key):
            pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            return [p[0] for p in pts], [p[1] for p in pts]

        html_parts = [f"<h2>Pretraining: {_e(step)}</h2>"]
        for file, title, ylabel, pairs in PRETRAIN_CURVES:
            if not any(series(k)[0] for pair in pairs for k in pair):
                continue

            def draw(fig, pairs=pairs, title=title, ylabel=ylabel):
                ax = fig.subplots()
                for train, held in pairs:
                    for key, style in ((train, "-"), (held, "o--")):
                        xs, ys = series(key)
                        if xs:
                            ax.plot(xs, ys, style, label=f"{'held-out' if key == held else 'train'} {train}", markersize=4)
                ax.set_xlabel("step")
                ax.set_ylabel(ylabel)
                ax.set_title(title)
                ax.grid(alpha=0.3)
                ax.legend()

            html_parts.append(self.figure(f"{step}-{file.removeprefix('pretrain-')}", draw))

        if series("tokens_per_s")[0]:
            def throughput(fig):
                units = [k for k in ("tokens_per_s", "sequences_per_s") if series(k)[0]]
                for ax, key in zip(fig.subplots(1, len(units), squeeze=False)[0], units):
                    ax.plot(*series(key), color="tab:green")
                    ax.set_xlabel("step")
                    ax.set_ylabel(key.replace("_per_s", "/s"))
                    ax.set_ylim(bottom=0)
                    ax.grid(alpha=0.3)
                fig.suptitle("Throughput (all workers)")

            html_parts.append(self.figure(f"{step}-throughput", throughput))
        last = {}
        for r in rows:
            last.update(r)
        keys = [k for k in ("step", "loss", "mlm_acc", "nsp_acc", "eval_loss", "eval_mlm_acc", "eval_nsp_acc",
                            "tokens_per_s", "sequences_per_s", "mfu") if k in last]
        html_parts.append("<p>Last values:</p>" + _table([_e(k) for k in keys], [[_num(last[k], 4) for k in keys]]))
        self.parts.append("".join(html_parts))

    def finetuning(self, step: str, summary: dict, markdown: str | None, curves: dict[str, list[dict]]) -> None:
        """``results.json`` of a fine-tuning step (scores in percent, as it says), and each
        trial's ``trials/<task>/<trial>/metrics.jsonl`` (``curves``, by relative path)."""
        tasks = summary.get("tasks", {})
        references = summary.get("references") or {}
        rows = []
        for name, t in tasks.items():
            best = t.get("best") or {}
            seeds = max((len(r.get("trials", [])) for r in t.get("settings", [])), default=0)
            ref = references.get(name)
            rows.append([_e(name), _e(t.get("type")), _e(t.get("metric")), _num(best.get("dev")), _num(best.get("test")),
                         _e(best.get("setting_id", "none: every setting failed")), str(seeds), _num(ref)])
        parts = [f"<h2>Fine-tuning: {_e(step)}</h2>", f"<p>{_e(summary.get('scale', ''))}</p>",
                 _table(["task", "type", "metric", "dev", "test", "best setting", "seeds", "reference"], rows)]
        glue = summary.get("glue")
        if glue:
            parts.append(f"<p>GLUE average over {len(glue['tasks'])} task(s) (dev): <b>{_num(glue['average'])}</b></p>")
        for name, t in tasks.items():
            metric = t.get("metric")
            best_id = (t.get("best") or {}).get("setting_id")
            srows = []
            for r in t.get("settings", []):
                spread = r.get("dev_spread") or {}
                srows.append([_e(r["setting_id"]) + (" <b>best</b>" if r["setting_id"] == best_id else ""),
                              _e(r.get("status")) + (f'<div class="error">{_e(r["error"])}</div>' if r.get("error") else ""),
                              _num((r.get("dev") or {}).get(metric)),
                              f"{_num(spread.get('mean'))} ± {_num(spread.get('std'))}" if spread else "-",
                              _num((r.get("test") or {}).get(metric))])
            parts.append(f"<h3>{_e(name)} ({_e(t.get('type'))}, {_e(metric)})</h3>"
                         + _table(["setting", "status", f"dev {_e(metric)} (median)", "mean ± std", f"test {_e(metric)}"], srows))
            trials = {rel.split("/")[2]: lines for rel, lines in sorted(curves.items()) if rel.split("/")[1] == name}
            if trials:
                parts.append(self.figure(f"{step}-{name}-curves", lambda fig, trials=trials, metric=metric:
                                         _trial_curves(fig, trials, metric), height=3.2))
        if summary.get("trials_failed"):
            parts.append(f'<p class="error">{summary["trials_failed"]} trial(s) failed.</p>')
        if markdown:
            parts.append(f"<details><summary>results.md</summary><pre>{_e(markdown)}</pre></details>")
        self.parts.append("".join(parts))

    def html(self) -> str:
        made = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(self.title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }}
dl {{ display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }}
dt {{ font-weight: bold; }} dd {{ margin: 0; word-break: break-all; }}
figure {{ margin: 0.5em 0 1.5em; }} img.plot {{ max-width: 100%; border: 1px solid #eee; }}
figcaption {{ font-size: 0.8em; color: #777; }}
.error {{ color: #b00; white-space: pre-wrap; }}
</style></head><body>
{"".join(self.parts[:1])}
{"".join(f'<p class="error">{_e(w)}</p>' for w in self.warnings)}
{"".join(self.parts[1:])}
<footer><small>made by bertflow report, {made}</small></footer>
</body></html>
"""
