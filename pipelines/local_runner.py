"""Beam's local runner, as every job here uses it when run on its own.

We name the portable FnApiRunner class itself, in multi-processing mode: recent Beam's
``DirectRunner`` may hand a pipeline to Prism, which downloads a runner binary at run time.
"""

from __future__ import annotations

FN_API_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"


def local_options(workers: int, **flags):
    """``PipelineOptions`` for ``workers`` local worker processes; ``flags=[]`` so that the
    job's own command line is never parsed as Beam flags."""
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions(
        flags=[], runner=FN_API_RUNNER, direct_running_mode="multi_processing", direct_num_workers=workers, **flags
    )
