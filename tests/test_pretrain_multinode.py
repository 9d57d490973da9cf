"""Pretraining across two Ray nodes on this machine (``ray.cluster_utils.Cluster``, one
CPU and one worker per node), examples and checkpoints on the loopback S3 endpoint; a
worker dies after the first checkpoint and the run resumes from S3, leaving nothing in the
temporary directory."""

from __future__ import annotations

import json
import tempfile
from functools import partial

import fsspec
import pytest
from safetensors.torch import load as load_safetensors

import bertflow.trainer.pretrain
from tests import pretrain_faults
from tests.pretrain_examples import write_examples
from tests.temp_dirs import leftovers, own_temp_dir
from bertflow.trainer.pretrain import PretrainRun, pretrain
from bertflow.trainer.pretrain_config import PretrainConfig


@pytest.fixture
def two_nodes(s3_endpoint, tmp_path, monkeypatch):
    """Two nodes whose processes have a temporary directory of the test's own: yields it.
    This process, the driver, has another one, as a driver off the cluster would, and Ray
    is not a local one of ours (`connect_ray`'s mark, left by an earlier test, goes): what a
    run staged on the nodes can only go by the tasks it runs on each of them."""
    import ray
    from ray.cluster_utils import Cluster

    from bertflow.trainer.launch import LOCAL_RAY

    monkeypatch.delenv(LOCAL_RAY, raising=False)
    ray.shutdown()
    with own_temp_dir(tmp_path / "tmp") as tmp:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        (tmp_path / "driver-tmp").mkdir()
        # own_temp_dir restores tempfile.tempdir when it ends; a monkeypatch would set it
        # back to this test's folder after that, for every later test
        tempfile.tempdir = str(tmp_path / "driver-tmp")
        yield tmp
        ray.shutdown()
        cluster.shutdown()


def test_two_nodes_with_checkpoints_on_s3(two_nodes, s3_bucket, monkeypatch):
    examples = write_examples(f"{s3_bucket}/examples", num_train=64, num_eval=16, max_len=32, num_shards=2)
    output = f"{s3_bucket}/pretrain"
    # a worker dies after the checkpoint of step 2; Ray Train brings the group back from S3
    monkeypatch.setattr(bertflow.trainer.pretrain, "train_loop", partial(pretrain_faults.crash_after, steps=[2]))
    cfg = PretrainConfig(model="tiny", steps=4, batch_size=4, lr=1e-3, warmup=0, log_every=2, checkpoint_every=2,
                         eval_examples=16, max_failures=1)
    final = pretrain(cfg, PretrainRun(examples=examples, output=output, workers=2, cpus_per_worker=1))
    assert final["step"] == 4
    fs = fsspec.filesystem("s3")
    root = output.removeprefix("s3://")
    state = json.loads(fs.cat(f"{root}/checkpoints/step-0000004/state.json"))
    assert len(set(state["nodes"])) == 2  # one worker on each node
    assert state["resumed_at"] == [2]  # brought back by Ray Train from the S3 checkpoint
    assert fs.exists(f"{root}/checkpoints/step-0000002/checkpoint.json")
    assert fs.exists(f"{root}/metrics.jsonl") and fs.glob(f"{root}/tensorboard/events.out.tfevents.*")
    weights = load_safetensors(fs.cat(f"{root}/model/model.safetensors"))
    config = json.loads(fs.cat(f"{root}/model/config.json"))
    assert config["hidden_size"] == 128 and "bert.embeddings.word_embeddings.weight" in weights
    # the checkpoint staging of the worker that exited, and of the one Ray Train then ended,
    # and rank 0's mirror of the metrics are gone
    assert leftovers(two_nodes) == []
