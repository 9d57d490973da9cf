"""Beam's pipeline options from a spec's ``beam:`` (``pipelines.local_runner.pipeline_options``)."""

from __future__ import annotations

import os

from apache_beam.options.pipeline_options import DirectOptions, GoogleCloudOptions, StandardOptions

from pipelines.local_runner import FN_API_RUNNER, pipeline_options


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
