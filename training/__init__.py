"""What a training run does besides the training step, one named component a file (train.py calls them):

    state.py        the run's one state dict: model, optimizer, scaler, sampler, every process's RNG,
                    the loop's counters (step, best val loss, patience); state_dict() / load_state_dict()
    checkpointer.py last.pt at every evaluation and at the end, best.pt on a better val loss
    validator.py    evaluation on fixed batches: when, how, and what it logs; loss.png
    monitor.py      speed, ETA, MFU, the log line, the slowdown notice, the CPU-recipe hint
    guard.py        divergence (nan/inf), stop signals (Ctrl-C, SIGTERM), patience
    resume.py       resume=: the checkpoint's config with this command's overrides, on the same tokens
    run_folder.py   the run folder: its name, train.log, metrics.jsonl, config.yaml, wandb
    pretrained.py   init_from=: a Hugging Face Llama folder's architecture and weights

It imports model/, data/ and runtime/; never the commands.
"""

from runtime.errors import UserError


class TrainError(UserError):
    """Bad configuration or a failed run. The message says what to do; train.py exits with code 2."""
