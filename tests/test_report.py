"""`bertflow report`: the page of a real run record, loaded in a real headless Chromium.

The run is the real runner's, on three steps whose files come from the real producers at
tiny size, in-process: the examples job's statistics (real instances of the sample books,
counted and summarized by pipelines.stats as the job does), a metrics.jsonl written by
trainer.metrics_log, and results.json/results.md by the fine-tuning fan-out's summary and
table. The browser is driven over its DevTools protocol (no driver, nothing downloaded).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import Field

from bertflow.contracts import storage
from bertflow.infra.cli import main
from bertflow.infra.kinds import KINDS, Params, StepKind, register
from bertflow.infra.report import find_record, write_report
from bertflow.infra.runner import Runner
from bertflow.infra.spec import SpecFile

CHROMIUM_MISSING = "chromium is not on PATH: .ci/run installs it (apt-get install -y chromium, as root)"


class StatsParams(Params):
    max_seq_length: int = Field(default=64, ge=8)


@register
class ReportExamplesKind(StepKind):
    """stats.json of the examples job on the sample books' first paragraphs."""

    name = "test_report_examples"
    Params = StatsParams

    def run(self, ctx):
        from bertflow.pipelines.config import ExamplesConfig
        from bertflow.pipelines.examples import STATS, STATS_PARAMS, load_tokenizer, load_vocab
        from bertflow.pipelines.instances import make_batches
        from bertflow.pipelines.stats import add_counts, batch_counts, summarize, zero_counts
        from bertflow.pipelines.tokens import SentenceEncoder, tokenize_documents
        from tests.book_documents import book_documents, vocab_folder

        cfg = ExamplesConfig(max_seq_length=ctx.params.max_seq_length, max_predictions_per_seq=8, dupe_factor=2)
        (icfg,) = cfg.instance_configs()
        vocab_dir = str(vocab_folder())
        encoder, vocab = SentenceEncoder(load_tokenizer(vocab_dir)), load_vocab(vocab_dir)
        docs = [(d["id"], d["sentences"]) for d in book_documents(12, paragraphs_per_doc=3)]
        stats = {}
        for split, part in (("train", docs[4:]), ("eval", docs[:4])):
            counts = zero_counts(icfg.max_seq_length)
            tokenized = [d for d in tokenize_documents(encoder, sorted(part)) if d is not None]
            for batch in make_batches(tokenized, icfg, vocab, cfg.seed, cfg.dupe_factor, Counter()):
                counts = add_counts(counts, batch_counts(batch, icfg.max_seq_length, vocab.mask_id))
            stats[split] = summarize(counts["lengths"], counts["random_next"], counts["short_target"], counts["masked"],
                                     counts["mask"], counts["random"], counts["kept"])
        storage.write_json(storage.join(ctx.output, STATS),
                           {**stats, "params": {**icfg.model_dump(), **cfg.model_dump(include=STATS_PARAMS)}})
        return {"instances": stats["train"]["instances"], "documents_read": float(len(docs))}


@register
class ReportPretrainKind(StepKind):
    """metrics.jsonl as the pretraining loop writes it: a train line every 10 steps, the
    held-out metrics every 50."""

    name = "test_report_pretrain"
    Params = Params

    def run(self, ctx):
        from bertflow.trainer.metrics_log import MetricsLog
        from bertflow.trainer.pretrain import metric_tag

        log = MetricsLog(ctx.output, start_step=0)
        for step in range(10, 201, 10):
            decay = math.exp(-step / 80)
            line = {"loss": 4 + 5 * decay, "mlm_loss": 3.5 + 4.5 * decay, "mlm_acc": 0.3 - 0.28 * decay,
                    "nsp_loss": 0.5 + 0.2 * decay, "nsp_acc": 0.75 - 0.2 * decay, "lr": 1e-4,
                    "tokens_per_s": 9000 + 300 * math.sin(step), "sequences_per_s": 280 + 9 * math.sin(step)}
            if step % 50 == 0:
                line.update(eval_loss=line["loss"] + 0.3, eval_mlm_loss=line["mlm_loss"] + 0.2,
                            eval_mlm_acc=line["mlm_acc"] - 0.02, eval_nsp_loss=line["nsp_loss"] + 0.1,
                            eval_nsp_acc=line["nsp_acc"] - 0.05)
            log.write(step, line, tag=metric_tag)
        log.close()
        return {"steps": 200}


@register
class ReportFinetuneKind(StepKind):
    """results.json / results.md as the fine-tuning fan-out writes them, for two tasks."""

    name = "test_report_finetune"
    Params = Params

    def run(self, ctx):
        from bertflow.trainer.finetune.config import FinetuneConfig
        from bertflow.trainer.finetune.fanout import glue_average, results_table, summarize
        from bertflow.trainer.metrics_log import MetricsLog

        config = FinetuneConfig.model_validate({"tasks": [
            {"name": "sst2", "type": "classification", "train": "a.csv", "dev": "b.csv", "seeds": [1, 2]},
            {"name": "reviews", "type": "classification", "train": "a.csv", "dev": "b.csv"}]})
        tasks = {t.name: t for t in config.tasks}

        def trial(task, setting, seed, accuracy):
            return {"task": task, "type": "classification", "metric": "accuracy", "setting_id": setting,
                    "setting": {}, "trial_id": f"{setting}_seed-{seed}", "seed": seed, "status": "ok",
                    "dev": {"accuracy": accuracy, "total": 20.0}, "test": {"accuracy": accuracy - 0.05, "total": 20.0}}

        results = [trial("sst2", "lr-0.0001", 1, 0.8), trial("sst2", "lr-0.0001", 2, 0.85),
                   trial("sst2", "lr-0.0002", 1, 0.7), trial("sst2", "lr-0.0002", 2, 0.75),
                   trial("reviews", "default", 42, 0.9)]
        for r in results:  # each trial's curves, as a trial logs them: a loss window, then its epoch's dev score
            log = MetricsLog(storage.join(ctx.output, "trials", r["task"], r["trial_id"]), start_step=0)
            for step in range(5, 31, 5):
                log.write(step, {"train/loss": 0.7 * math.exp(-step / 20), "train/lr": 1e-4}, epoch=step / 10)
                if step % 10 == 0:
                    log.write(step, {"dev/accuracy": r["dev"]["accuracy"] * step / 30}, epoch=step // 10)
            log.close()
        summary = summarize(results, tasks)
        summary["glue"] = glue_average(summary)
        storage.write_json(storage.join(ctx.output, "results.json"), summary)
        storage.write_bytes_atomic(storage.join(ctx.output, "results.md"), results_table(summary, tasks).encode())
        return {"trials_ok": summary["trials_ok"]}


@pytest.fixture(scope="module", autouse=True)
def report_kinds():
    yield
    for kind in (ReportExamplesKind, ReportPretrainKind, ReportFinetuneKind):
        KINDS.pop(kind.name, None)


def spec(storage_url: str) -> dict:
    return {"storage": storage_url, "workflows": {"tiny": {"steps": {
        "examples": {"kind": "test_report_examples"},
        "pretrain": {"kind": "test_report_pretrain"},
        "finetune": {"kind": "test_report_finetune"}}}}}


# -- the browser ----------------------------------------------------------------------------


class Chromium:
    """A headless Chromium on its DevTools protocol: load a page, collect what its console
    and log say, measure the images, take a screenshot of the whole page."""

    def __init__(self, profile: Path):
        binary = shutil.which("chromium")
        if binary is None:
            pytest.fail(CHROMIUM_MISSING)
        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1280,900",
             "--force-device-scale-factor=1", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        said = []
        for line in self.proc.stderr:  # it says where it listens
            said.append(line)
            if line.startswith("DevTools listening on "):
                self.port = int(line.split("ws://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
                break
        else:
            raise RuntimeError(f"chromium exited ({self.proc.wait()}) before its DevTools endpoint was up:\n{''.join(said)}")
        # then its stderr is drained, so that a chatty browser never blocks on a full pipe
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()

    def close(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)

    def load(self, url: str, screenshot: Path | None = None) -> tuple[list[str], list[dict]]:
        """(console errors and logged errors, the images' boxes) of the page at ``url``."""
        return asyncio.run(self._load(url, screenshot))

    async def _load(self, url, screenshot):
        import aiohttp

        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{self.port}/json/list") as r:
                target = next(t for t in await r.json() if t["type"] == "page")
            async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                ids, errors, loaded = iter(range(1, 10**6)), [], asyncio.Event()
                replies: dict[int, asyncio.Future] = {}

                async def reader():
                    async for msg in ws:
                        m = json.loads(msg.data)
                        if "id" in m:
                            replies.pop(m["id"]).set_result(m)
                        elif m["method"] == "Page.loadEventFired":
                            loaded.set()
                        elif m["method"] == "Runtime.consoleAPICalled" and m["params"]["type"] in ("error", "assert"):
                            errors.append("console: " + " ".join(str(a.get("value", a.get("description")))
                                                                 for a in m["params"]["args"]))
                        elif m["method"] == "Runtime.exceptionThrown":
                            errors.append("exception: " + m["params"]["exceptionDetails"].get("text", ""))
                        elif m["method"] == "Log.entryAdded" and m["params"]["entry"]["level"] == "error":
                            errors.append("log: " + m["params"]["entry"]["text"])

                async def call(method, **params):
                    i = next(ids)
                    replies[i] = asyncio.get_running_loop().create_future()
                    await ws.send_json({"id": i, "method": method, "params": params})
                    reply = await asyncio.wait_for(replies[i], 30)
                    assert "error" not in reply, reply
                    return reply["result"]

                task = asyncio.create_task(reader())
                for domain in ("Page", "Runtime", "Log"):
                    await call(f"{domain}.enable")
                await call("Page.navigate", url=url)
                await asyncio.wait_for(loaded.wait(), 30)
                boxes = json.loads((await call("Runtime.evaluate", returnByValue=True, expression="""
                    JSON.stringify([...document.images].map(i => { const r = i.getBoundingClientRect();
                      return {complete: i.complete, width: i.naturalWidth, x: r.x + scrollX, y: r.y + scrollY,
                              w: r.width, h: r.height}; }))"""))["result"]["value"])
                if screenshot is not None:
                    size = (await call("Page.getLayoutMetrics"))["cssContentSize"]
                    shot = await call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                                      clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
                    import base64

                    screenshot.write_bytes(base64.b64decode(shot["data"]))
                task.cancel()
                return errors, boxes


@pytest.fixture
def chromium(tmp_path):
    browser = Chromium(tmp_path / "chromium-profile")
    yield browser
    browser.close()


# -- the tests --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two recorded runs of the workflow: the first runs every step, the second reuses them."""
    folder = tmp_path_factory.mktemp("report-runs")
    f = folder / "workflows.yaml"
    f.write_text(yaml.safe_dump(spec("runs")))
    wf = SpecFile(spec("runs"), f).workflow("tiny")
    Runner(wf).run()
    Runner(wf).run()
    return f, sorted((folder / "runs" / "_runs" / "tiny").glob("*.json"))


def test_report_of_a_run_renders_in_headless_chromium(runs, tmp_path, chromium, capsys):
    f, (_, record) = runs
    # a run killed while it wrote its metrics leaves half a line: the page says so and shows the rest
    (metrics,) = (f.parent / "runs").glob("pretrain-*/metrics.jsonl")
    if not metrics.read_text().endswith("4."):
        metrics.write_text(metrics.read_text() + '{"step": 210, "loss": 4.')
    assert main(["report", "tiny", "-f", str(f)]) == 0
    page = f.parent / "runs" / "_reports" / "tiny" / record.stem / "report.html"
    assert capsys.readouterr().out.strip() == f"report: {page}"
    text = page.read_text()
    # the plan (a reused step's time: when it ran), the statistics against BERT's shares, the
    # curves, the table; one PNG per plot, embedded
    for expected in ("<h2>Plan</h2>", "test_report_examples", "mask_share", "80.0%", "<h2>Pretraining: pretrain</h2>",
                     "<h2>Fine-tuning: finetune</h2>", "scores in percent", "lr-0.0001 <b>best</b>", "instances = ",
                     "metrics.jsonl line 21: not a metrics line (Expecting"):
        assert expected in text, expected
    assert text.count("(when it ran)") == 3
    pngs = sorted(p.name for p in page.parent.glob("*.png"))
    assert pngs == ["examples-stats-lengths.png", "examples-stats-masking.png", "finetune-reviews-curves.png",
                    "finetune-sst2-curves.png", "pretrain-loss.png", "pretrain-mlm-accuracy.png",
                    "pretrain-nsp-accuracy.png", "pretrain-throughput.png", "step-times.png"]
    assert text.count('<img class="plot"') == len(pngs) and "src=\"http" not in text and "<script" not in text

    shot = tmp_path / "report-screenshot.png"
    errors, boxes = chromium.load(page.as_uri(), shot)
    assert errors == []
    assert len(boxes) == len(pngs) and all(b["complete"] and b["width"] > 0 and b["w"] > 100 for b in boxes), boxes
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    for b in boxes:  # every plot's region of the screenshot holds a drawing, not a blank
        region = pixels[int(b["y"]) : int(b["y"] + b["h"]), int(b["x"]) : int(b["x"] + b["w"])]
        assert region.size and region.std() > 20 and (region < 128).mean() > 0.01, b
    assert pixels[-5:, :].std() < 1  # the page's margin below the footer is blank: a blank reads as one

    # the checks see a broken page: a console error, an uncaught exception, an image that does not load
    broken = tmp_path / "broken.html"
    broken.write_text('<img src="missing.png"><script>console.error("broken page"); undefined_call();</script>')
    errors, boxes = chromium.load(broken.as_uri())
    assert any("broken page" in e for e in errors) and any("exception" in e for e in errors), errors
    assert boxes[0]["width"] == 0


def test_report_picks_a_run_writes_to_any_store_and_says_what_is_missing(runs, tmp_path, capsys):
    f, (first, second) = runs
    root = str(f.parent / "runs")
    empty = tmp_path / "workflows.yaml"
    empty.write_text(yaml.safe_dump(spec(str(tmp_path / "nothing-yet"))))
    assert main(["report", "tiny", "-f", str(empty)]) == 1
    assert f"no run of workflow 'tiny' recorded under {tmp_path}/nothing-yet/_runs/tiny" in capsys.readouterr().err
    assert find_record(root, "tiny") == str(second) and find_record(root, "tiny", first.stem[:-3]) == str(first)
    assert main(["report", "tiny", "-f", str(f), "--run", "nothing-like-it"]) == 1
    assert "no run records match 'nothing-like-it'" in capsys.readouterr().err
    # the first run's page, on an object store: its steps ran, with their own times
    out = "memory://report-test/first"
    assert write_report(str(first), out) == f"{out}/report.html"
    text = storage.read_text(f"{out}/report.html")
    assert "(when it ran)" not in text and "<td>ran</td>" in text
    assert storage.exists(f"{out}/step-times.png") and storage.exists(f"{out}/pretrain-loss.png")


def test_report_without_matplotlib_says_which_extra_to_install(runs, monkeypatch, capsys):
    f, _ = runs
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    assert main(["report", "tiny", "-f", str(f), "--out", str(f.parent / "unused")]) == 1
    assert "matplotlib, which is not installed here: pip install 'bertflow[report]'" in capsys.readouterr().err
    assert not (f.parent / "unused").exists()


def test_the_plan_lists_each_step_after_what_it_reads():
    from bertflow.infra.report import step_order

    record = {"steps": {"a": {}, "b": {}, "c": {}},
              "spec": {"steps": {"a": {"inputs": {"parts": ["c", "b"]}}, "b": {"inputs": {}}, "c": {"inputs": {"x": "b"}}}}}
    assert step_order(record) == ["b", "c", "a"]
