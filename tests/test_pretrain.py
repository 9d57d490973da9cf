"""Pretraining on a local Ray (2 CPUs, 2 workers, gloo): a run learns, a killed run resumes
to the same weights as a straight one, the exported model loads in transformers with our
logits, phase 2 starts from phase 1's model through the `pretrain` kind."""

from __future__ import annotations

import json
import logging
import shutil
from functools import partial
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

import bertflow.trainer.pretrain
from tests import pretrain_faults
from tests.pretrain_examples import write_examples
from bertflow.contracts.layout import list_shards
from bertflow.trainer.data import eval_nsp_labels
from bertflow.trainer.pretrain import PretrainRun, pretrain
from bertflow.trainer.pretrain_config import PretrainConfig

N = 6  # steps before the kill; the straight run does 2N


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from bertflow.trainer.launch import connect_ray

    connect_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    return write_examples(str(tmp_path_factory.mktemp("examples")), num_train=160, num_eval=32, max_len=48)


def config(**overrides) -> PretrainConfig:
    base = dict(
        model="tiny", steps=2 * N, batch_size=8, lr=2e-3, warmup=2, grad_accum=2, log_every=2,
        checkpoint_every=N, keep_checkpoints=2, eval_every=N, eval_examples=32, seed=7,
    )
    return PretrainConfig(**{**base, **overrides})


def wiring(examples: str, output: Path) -> PretrainRun:
    return PretrainRun(examples=examples, output=str(output), workers=2)


def metrics(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(ray_local, examples, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    final = pretrain(config(), wiring(examples, out))
    return out, final


def test_a_run_learns_and_writes_its_folder(straight):
    out, final = straight
    lines = metrics(out)
    assert [m["step"] for m in lines] == list(range(2, 2 * N + 1, 2))
    assert lines[-1]["loss"] < lines[0]["loss"] - 0.5  # learning, not noise
    for key in ("mlm_acc", "nsp_acc", "lr", "grad_norm", "sequences_per_s", "tokens_per_s", "stall_ms", "stall_share"):
        assert key in lines[0]
    assert "eval_mlm_acc" in lines[-1] and "eval_loss" in lines[N // 2 - 1]
    assert final["step"] == 2 * N and final["eval_loss"] == lines[-1]["eval_loss"]
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == [f"step-{N:07d}", f"step-{2 * N:07d}"]
    ckpt = out / "checkpoints" / f"step-{2 * N:07d}"
    state = json.loads((ckpt / "state.json").read_text())
    assert state["step"] == 2 * N and state["examples_seen"] == 2 * N * 8
    assert set(json.loads((ckpt / "checkpoint.json").read_text())["files"]) == {"model.safetensors", "optimizer.pt", "state.json"}
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    model = out / "model"
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer.json"} <= {p.name for p in model.iterdir()}


def test_killed_workers_resume_to_the_weights_of_a_straight_run(straight, examples, tmp_path, monkeypatch):
    out, _ = straight
    # a worker exits hard (os._exit) after the checkpoint of step N and the run fails (Ray
    # Train's own restart within a run, max_failures, is test_pretrain_multinode's)
    monkeypatch.setattr(bertflow.trainer.pretrain, "train_loop", partial(pretrain_faults.crash_after, steps=[N]))
    cfg = config(checkpoint_every=N // 2, max_failures=0)
    with pytest.raises(Exception, match="(?i)fail"):
        pretrain(cfg, wiring(examples, tmp_path))
    assert (tmp_path / "checkpoints" / f"step-{N:07d}" / "checkpoint.json").exists()
    assert not (tmp_path / "model").exists()
    # run it again on the same folder (what `bertflow run` does after a failed step)
    pretrain(cfg, wiring(examples, tmp_path))
    state = json.loads((tmp_path / "checkpoints" / f"step-{2 * N:07d}" / "state.json").read_text())
    assert state["resumed_at"] == [N]
    assert state["trained_on"] == [{"from_step": 0, "workers": 2, "device": "cpu, 1 thread"}]
    # dropout is on (the tiny size's 0.1): the resumed workers draw the straight run's masks,
    # so the weights and every logged number are the straight run's, to the bit
    hf_config = json.loads((out / "model" / "config.json").read_text())
    assert hf_config["hidden_dropout_prob"] > 0 and hf_config["attention_probs_dropout_prob"] > 0
    assert (tmp_path / "model" / "model.safetensors").read_bytes() == (out / "model" / "model.safetensors").read_bytes()
    assert timeless(metrics(tmp_path)) == timeless(metrics(out))


def timeless(lines: list[dict]) -> list[dict]:
    """Metrics lines without the ones that measure time."""
    timed = {"sequences_per_s", "tokens_per_s", "stall_ms", "stall_share", "mfu"}
    return [{k: v for k, v in line.items() if k not in timed} for line in lines]


def test_rates_count_training_steps_alone_and_no_eval_split_gives_no_eval_metrics(ray_local, tmp_path, monkeypatch, caplog):
    examples = write_examples(str(tmp_path / "examples"), num_train=64, num_eval=0, max_len=32)
    # a step lasts one second of this clock, and nothing else any time: a window's rate is
    # its sequences per step, though an evaluation (step 2) and a checkpoint (step 3) fall inside it
    monkeypatch.setattr(bertflow.trainer.pretrain, "train_loop", pretrain_faults.step_clock)
    cfg = config(steps=8, batch_size=4, grad_accum=1, log_every=4, eval_every=2, checkpoint_every=3)
    with caplog.at_level(logging.WARNING, logger="bertflow.trainer.pretrain"):
        final = pretrain(cfg, wiring(examples, tmp_path / "out"))
    lines = metrics(tmp_path / "out")
    assert [m["step"] for m in lines] == [4, 8]
    assert [m["sequences_per_s"] for m in lines] == [4.0, 4.0]
    assert not [k for m in lines for k in m if k.startswith("eval")] and not [k for k in final if k.startswith("eval")]
    assert "no held-out examples" in caplog.text and str(tmp_path / "out") in caplog.text


def test_an_eval_split_of_one_nsp_label_gives_no_eval_nsp_accuracy(ray_local, tmp_path, caplog):
    # One held-out document: every eval pair follows, and the manifest said eval_nsp_acc: 0.0.
    examples = write_examples(str(tmp_path / "examples"), num_train=64, num_eval=16, max_len=32, eval_random_share=0)
    eval_shards = list_shards(examples, "eval")
    assert eval_nsp_labels(eval_shards, 16) == {0}
    cfg = config(steps=2, batch_size=4, grad_accum=1, log_every=1, eval_every=1, checkpoint_every=2, eval_examples=16)
    with caplog.at_level(logging.WARNING, logger="bertflow.trainer.pretrain"):
        final = pretrain(cfg, wiring(examples, tmp_path / "out"))  # what the kind returns: the manifest's counters
    lines = metrics(tmp_path / "out")
    assert [m["step"] for m in lines] == [1, 2]
    assert all("eval_mlm_acc" in m and "eval_nsp_loss" in m and "eval_nsp_acc" not in m for m in lines), lines
    assert "eval_nsp_acc" not in final and "eval_mlm_acc" in final and "nsp_acc" in final  # training's pairs have both
    assert f"pretrain {tmp_path / 'out'}: every held-out pair in {examples} is 'is next' (B follows A): " \
           "no eval_nsp_acc" in caplog.text

    # The labels judged are those of the examples evaluated: the first eval_examples.
    both = write_examples(str(tmp_path / "both"), num_train=8, num_eval=16, max_len=32)
    labels = [int(v) for v in pq.read_table(list_shards(both, "eval")[0]).column("next_sentence_label").to_pylist()]
    first_change = next(i for i, v in enumerate(labels) if v != labels[0])
    assert eval_nsp_labels(list_shards(both, "eval"), first_change) == {labels[0]}
    assert eval_nsp_labels(list_shards(both, "eval"), 16) == {0, 1}


def test_command_line_is_the_config(examples, tmp_path):
    from bertflow.trainer.pretrain import command_line

    model = {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 128}
    cfg, run, args = command_line(["--examples", examples, "--output", str(tmp_path), "--workers", "2",
                                   "--model", json.dumps(model), "--no-nsp", "--steps", "5", "--compile",
                                   "--ray-address", "auto"])
    assert (cfg.model, cfg.nsp, cfg.steps, cfg.compile, cfg.lr) == (model, False, 5, True, 1e-4)
    assert (run.examples, run.output, run.workers, run.init, args.ray_address) == (examples, str(tmp_path), 2, None, "auto")
    cfg, _, _ = command_line(["--examples", examples, "--output", "o", "--model", "mini", "--init", "runs/p1"])
    assert (cfg.model, cfg.init, cfg.nsp) == ("mini", "runs/p1", None)
    with pytest.raises(SystemExit):
        command_line(["--examples", examples, "--output", "o", "--model", "huge"])


def test_exported_model_loads_in_transformers_with_our_logits(straight, examples):
    import transformers

    from bertflow.contracts.layout import list_shards
    from bertflow.trainer.data import Collator, ExampleStream, Masking, load_vocab
    from bertflow.trainer.hf_folder import load_pretrained
    from bertflow.trainer.model import BertForPreTraining

    out, _ = straight
    ours = load_pretrained(str(out / "model"), BertForPreTraining).eval()
    theirs = transformers.BertForPreTraining.from_pretrained(str(out / "model"), attn_implementation="sdpa").eval()
    vocab = load_vocab(str(out / "model"))
    stream = ExampleStream(list_shards(examples, "eval"), 0)
    it = stream.iterate(0)
    batch = Collator(vocab, Masking(vocab, 0))([next(it) for _ in range(6)])
    with torch.no_grad():
        mlm, nsp = ours(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], batch["masked_lm_positions"])
        ref = theirs(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"], attention_mask=batch["attention_mask"])
    index = batch["masked_lm_positions"].unsqueeze(-1).expand(-1, -1, ref.prediction_logits.shape[-1])
    assert torch.allclose(mlm, torch.gather(ref.prediction_logits, 1, index), atol=1e-4)
    assert torch.allclose(nsp, ref.seq_relationship_logits, atol=1e-4)
    tok = transformers.AutoTokenizer.from_pretrained(str(out / "model"))
    assert tok("Anne Elliot")["input_ids"][0] == vocab.cls


def test_phase2_through_the_kind_starts_from_phase1(straight, examples, tmp_path):
    from bertflow.infra.kinds import KINDS, Resources, StepContext

    out, _ = straight
    # an examples step that made two lengths: the step reads the one it names
    for length in (128, 512):
        shutil.copytree(examples, tmp_path / "examples" / f"seq{length}")
    for shard in (tmp_path / "examples" / "seq512").glob("train-*.parquet"):
        shard.write_bytes(b"not parquet")  # reading the wrong length would fail
    kind = KINDS["pretrain"]
    params = kind.Params(steps=2, batch_size=4, lr=1e-9, warmup=0, nsp=False, log_every=1,
                         checkpoint_every=2, eval_examples=16, max_failures=0, max_seq_length=128)
    ctx = StepContext(
        step="phase2", output=str(tmp_path / "phase2"),
        inputs={"examples": [str(tmp_path / "examples")], "init": [str(out)]},
        params=params, resources=Resources(workers=2, cpus_per_worker=1), base_dir=tmp_path,
        ray={"num_cpus": 2}, log=logging.getLogger("test"),
    )
    counters = kind().run(ctx)
    assert counters["step"] == 2 and "nsp_acc" not in counters and counters["eval_mlm_acc"] > 0
    phase1 = load_file(out / "model" / "model.safetensors")
    phase2 = load_file(tmp_path / "phase2" / "model" / "model.safetensors")
    # lr ~ 0: phase 2's weights are phase 1's (a fresh init would be far away)
    assert max(float((phase1[k] - phase2[k]).abs().max()) for k in phase1) < 1e-5


def test_kind_params_fail_clearly():
    from pydantic import ValidationError

    from bertflow.infra.kinds import KINDS
    from bertflow.trainer.pretrain import check_run

    P = KINDS["pretrain"].Params
    assert P(model={"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 128}).model
    # what does not change the model is left out of the step's hash
    from bertflow.contracts.config import hashed

    assert set(P().model_dump()) - set(hashed(P())) == {
        "eval_every", "checkpoint_every", "keep_checkpoints", "log_every", "max_failures", "compile"}
    for bad, where in (({"steps": 0}, "steps"), ({"optimizer": "sgd"}, "optimizer"), ({"model": "huge"}, "model"),
                       ({"warmup": 50, "steps": 10}, "warmup"), ({"batch": 3}, "batch")):
        with pytest.raises(ValidationError, match=where):
            P(**bad)
    with pytest.raises(ValueError, match="multiple of 6"):
        check_run(P(batch_size=8, grad_accum=3), PretrainRun(examples="x", output="y", workers=2))


def test_a_typo_in_the_model_config_fails_before_ray_starts(examples, tmp_path):
    from bertflow.infra.kinds import KINDS
    from bertflow.trainer.pretrain import check_run

    P = KINDS["pretrain"].Params
    with pytest.raises(ValueError, match="hidden_szie"):
        check_run(P(model={"hidden_szie": 64}), PretrainRun(examples=examples, output=str(tmp_path)))


def test_checkpoints_on_any_storage_keep_the_newest_and_restore(tmp_path):
    from bertflow.trainer import checkpoint
    from bertflow.trainer.model import BertConfig, BertForPreTraining
    from bertflow.trainer.optim import build_optimizer, build_schedule

    def make(seed):
        torch.manual_seed(seed)
        model = BertForPreTraining(BertConfig.from_name("tiny", 100))
        optimizer = build_optimizer(model, "adamw", 1e-3, 0.01)
        return model, optimizer, build_schedule(optimizer, 1, 10, "linear")

    root = "memory://ckpt-test/checkpoints"
    model, optimizer, schedule = make(0)
    assert checkpoint.load_latest(root, model) is None
    for step in (1, 2, 3):
        schedule.step()
        checkpoint.save_to(root, model, optimizer, schedule, {"step": step, "epoch": step}, keep=2)
    assert [s for s, _ in checkpoint.list_checkpoints(root)] == [2, 3]
    fresh, fresh_opt, fresh_schedule = make(1)
    assert checkpoint.load_latest(root, fresh, fresh_opt, fresh_schedule) == {"step": 3, "epoch": 3}
    assert fresh_schedule.state_dict() == schedule.state_dict()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    # a folder without its manifest (a write that died) is not a checkpoint
    import fsspec

    fsspec.filesystem("memory").rm("/ckpt-test/checkpoints/step-0000003/checkpoint.json")
    assert checkpoint.latest(root).endswith("step-0000002")


def test_each_step_and_worker_draws_its_own_dropout_and_a_resume_with_other_workers_is_recorded(caplog):
    from bertflow.trainer.checkpoint import seed_step, trained_on

    def masks(step: int, rank: int) -> torch.Tensor:
        seed_step(7, step, rank)
        return torch.nn.functional.dropout(torch.ones(256), 0.5) > 0

    first = masks(3, 0)
    torch.rand(1000)  # whatever was drawn before, the step's seeding gives the same masks
    assert torch.equal(masks(3, 0), first)
    assert not torch.equal(masks(3, 1), first) and not torch.equal(masks(4, 0), first)

    cpu2 = [{"from_step": 0, "workers": 2, "device": "cpu, 1 thread"}]
    with caplog.at_level(logging.WARNING, logger="bertflow.trainer.checkpoint"):
        assert trained_on(None, 0, 2, "cpu, 1 thread") == cpu2
        assert trained_on(cpu2, 6, 2, "cpu, 1 thread") == cpu2  # a resume on the same: one stretch
        assert not caplog.records
        assert trained_on(cpu2, 6, 1, "cpu, 1 thread") == cpu2 + [{"from_step": 6, "workers": 1, "device": "cpu, 1 thread"}]
    assert "not have the bytes of a straight run" in caplog.text


def test_ray_started_from_a_step_thread_outlives_the_thread():
    # Steps run in threads; a local Ray's GCS dies with the thread that started it unless
    # connect_ray starts it from a thread that lives as long as the process.
    import threading
    import time

    import ray

    from bertflow.trainer.launch import connect_ray

    if ray.is_initialized():
        ray.shutdown()
    t = threading.Thread(target=connect_ray, kwargs={"num_cpus": 1})
    t.start()
    t.join()
    try:
        time.sleep(2)
        assert ray.get(ray.remote(lambda: 41 + 1).remote(), timeout=60) == 42
    finally:
        ray.shutdown()


def test_training_workers_get_the_allocator_settings_unless_the_user_set_them(tmp_path, monkeypatch):
    from bertflow.trainer.launch import WORKER_ALLOCATOR_ENV, torch_trainer

    def build():
        return torch_trainer(lambda config: None, {}, output=str(tmp_path), name="run", workers=1, cpus_per_worker=1)

    for key in WORKER_ALLOCATOR_ENV:
        monkeypatch.delenv(key, raising=False)
    assert build().run_config.worker_runtime_env == {"env_vars": WORKER_ALLOCATOR_ENV}
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")  # the user's own choice reaches the workers as it is
    env = build().run_config.worker_runtime_env["env_vars"]
    assert "MALLOC_MMAP_THRESHOLD_" not in env and env["MALLOC_TRIM_THRESHOLD_"] == WORKER_ALLOCATOR_ENV["MALLOC_TRIM_THRESHOLD_"]


def test_a_workers_temporary_files_go_to_the_runs_scratch_but_torchs_compile_cache_stays(tmp_path, monkeypatch):
    # What a worker stages goes with its run; torch's compile cache is kept across runs (a
    # rerun compiles from it), where torch puts it: torchinductor_<user> in the temporary directory.
    import os
    import tempfile

    from bertflow.trainer.launch import in_scratch

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # restored afterwards, as in_scratch moves it
    seen = {}

    def train_fn(config):
        seen["staged"] = tempfile.mkdtemp(prefix="bertflow-ckpt-")
        torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())  # torch makes its compile cache here
        seen["cache"] = os.environ["TORCHINDUCTOR_CACHE_DIR"]

    in_scratch(train_fn, "bertflow-train-test")({})
    assert Path(seen["staged"]).parent == tmp_path / "bertflow-train-test"
    assert Path(seen["cache"]).parent == tmp_path and Path(seen["cache"]).name.startswith("torchinductor_")
