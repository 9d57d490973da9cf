"""The Beam jobs' settings (``bertflow.pipelines.config``: one model per job, the kinds' schema and
the jobs' command lines) and Beam's pipeline options from a spec's ``beam:``
(``bertflow.pipelines.local_runner.pipeline_options``)."""

from __future__ import annotations

import os

import pytest
from apache_beam.options.pipeline_options import DirectOptions, GoogleCloudOptions, StandardOptions

from bertflow.contracts.config import hashed, is_operational, parse
from bertflow.infra.kinds import KINDS
from bertflow.pipelines import books, examples, vocab, wikipedia
from bertflow.pipelines.config import BooksConfig, ExamplesConfig, VocabConfig, WikipediaConfig
from bertflow.pipelines.local_runner import FN_API_RUNNER, pipeline_options

JOBS = [(wikipedia, WikipediaConfig, "wikipedia"), (books, BooksConfig, "books"), (vocab, VocabConfig, "vocab"),
        (examples, ExamplesConfig, "pretraining_data")]


@pytest.mark.parametrize("job, model, kind", JOBS, ids=[k for _, _, k in JOBS])
def test_every_setting_has_a_flag_and_is_the_kinds_schema(job, model, kind):
    flags = job.parser()._option_string_actions
    missing = [name for name in model.model_fields if "--" + name.replace("_", "-") not in flags]
    assert not missing
    assert KINDS[kind].Params is model


def test_command_lines_parse_into_the_models():
    ap = vocab.parser()
    cfg = parse(VocabConfig, ap.parse_args(
        ["--documents", "d", "--output", "o", "--max-unique-chars", "77", "--no-lowercase"]), ap)
    assert (cfg.max_unique_chars, cfg.lowercase, cfg.vocab_size) == (77, False, 30522)
    ap = examples.parser()
    one = parse(ExamplesConfig, ap.parse_args(["--documents", "d", "--vocab", "v", "--output", "o",
                                               "--max-seq-length", "64", "--no-nsp"]), ap)
    assert (one.max_seq_length, one.nsp, one.lengths()) == (64, False, [(64, 20)])
    two = parse(ExamplesConfig, ap.parse_args(["--documents", "d", "--vocab", "v", "--output", "o",
                                               "--max-seq-length", "128", "512", "--max-predictions-per-seq", "20", "80"]), ap)
    assert [(c.max_seq_length, c.max_predictions_per_seq) for c in two.instance_configs()] == [(128, 20), (512, 80)]
    with pytest.raises(SystemExit):
        parse(ExamplesConfig, ap.parse_args(["--documents", "d", "--vocab", "v", "--output", "o", "--dupe-factor", "0"]), ap)


def test_only_the_work_unit_size_is_operational():
    # Splits of a dump cut the work, never the pages: the same bytes for any split_bytes.
    operational = {(model.__name__, name) for _, model, _ in JOBS for name, field in model.model_fields.items()
                   if is_operational(field)}
    assert operational == {("WikipediaConfig", "split_bytes")}
    assert hashed(WikipediaConfig(dump="d", split_bytes=1 << 20)) == hashed(WikipediaConfig(dump="d"))


def test_local_default_is_the_fn_api_runner_with_a_worker_per_core():
    opts = pipeline_options()
    assert opts.view_as(StandardOptions).runner == FN_API_RUNNER
    assert opts.view_as(DirectOptions).direct_num_workers == (os.cpu_count() or 1)
    two = pipeline_options("DirectRunner", {"direct_num_workers": 2}, job_name="bertflow-x").view_as(DirectOptions)
    assert (two.direct_running_mode, two.direct_num_workers) == ("multi_processing", 2)
    # one worker runs in the runner's process: no worker process, no gRPC data plane
    assert pipeline_options(direct_num_workers=1).view_as(DirectOptions).direct_running_mode == "in_memory"
    assert pipeline_options(job_name="bertflow-x").view_as(GoogleCloudOptions).job_name is None


def test_remote_runner_options_pass_through_with_the_job_name():
    opts = pipeline_options("DataflowRunner", {"project": "p", "region": "europe-west4", "temp_location": "gs://b/tmp"},
                            job_name="bertflow-pretraining_data-ab12")
    assert opts.view_as(StandardOptions).runner == "DataflowRunner"
    gcp = opts.view_as(GoogleCloudOptions)
    assert (gcp.project, gcp.region, gcp.temp_location) == ("p", "europe-west4", "gs://b/tmp")
    assert gcp.job_name == "bertflow-pretraining-data-ab12"
