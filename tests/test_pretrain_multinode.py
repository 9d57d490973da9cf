"""Pretraining across two Ray nodes on this machine (``ray.cluster_utils.Cluster``, one
CPU and one worker per node), examples and checkpoints on the loopback S3 endpoint; a
worker dies after the first checkpoint and the run resumes from S3."""

from __future__ import annotations

import json
import os

import fsspec
import pytest
from safetensors.torch import load as load_safetensors

from tests.pretrain_examples import write_examples
from trainer.pretrain import PretrainConfig, pretrain


@pytest.fixture
def two_nodes(s3_endpoint):
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    # the controller polls workers every this many seconds (2 by default): a quicker
    # failure detection, and a shorter wait in the fault drill
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.5"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_two_nodes_with_checkpoints_on_s3(two_nodes, s3_bucket):
    examples = write_examples(f"{s3_bucket}/examples", num_train=64, num_eval=16, max_len=32, num_shards=2)
    output = f"{s3_bucket}/pretrain"
    cfg = PretrainConfig(
        examples=examples, output=output, model="tiny", steps=4, batch_size=4, lr=1e-3, warmup=0,
        workers=2, cpus_per_worker=1, log_every=2, checkpoint_every=2, eval_examples=16,
        crash_at=[2], max_failures=1,
    )
    final = pretrain(cfg)
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
