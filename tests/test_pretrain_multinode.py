"""Pretraining across two Ray nodes on this machine (``ray.cluster_utils.Cluster``, one
CPU and one worker per node), examples and checkpoints on the loopback S3 endpoint; a
worker dies after the first checkpoint and the run resumes from S3."""

from __future__ import annotations

import json
from functools import partial

import fsspec
import pytest
from safetensors.torch import load as load_safetensors

import bertflow.trainer.pretrain
from tests import pretrain_faults
from tests.pretrain_examples import write_examples
from bertflow.trainer.pretrain import PretrainRun, pretrain
from bertflow.trainer.pretrain_config import PretrainConfig


@pytest.fixture
def two_nodes(s3_endpoint):
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
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
