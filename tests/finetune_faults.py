"""Faults put into a fine-tuning trial's Ray Train workers by the tests, not by the trainer.

As with ``tests/pretrain_faults.py``, a test swaps the loop that ``run_trial`` hands to Ray
Train (``bertflow.trainer.finetune.trial.train_loop``) for one of these; in the worker it
patches the real loop's surroundings and then runs it:

    monkeypatch.setattr(trial_module, "train_loop", dev_scoring_fails)
"""

from __future__ import annotations


def dev_scoring_fails(config: dict) -> None:
    """The loop, with a dev scoring that raises. With ``eval_every_epoch`` off a trial scores
    dev only after its last epoch, so it dies there, its previous epoch's checkpoint left."""
    import bertflow.trainer.finetune.trial as trial

    def killed(*args):
        raise RuntimeError("killed in the last epoch's dev scoring")

    trial.evaluate = killed
    trial.train_loop(config)
