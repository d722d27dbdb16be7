"""What a training run does besides the training step, one named component a file (train.py calls them):

    state.py        the run's one state: model, optimizer, scaler, sampler, every process's RNG, the
                    loop's progress (step, best val loss, patience count); state_dict() / load_state_dict()
    checkpointer.py last.pt at every evaluation, a stop and the end; best.pt on a better val loss
    validator.py    evaluation on fixed batches: when, how, what it logs; the best val loss, patience; loss.png
    monitor.py      what the run is, speed, ETA, MFU, the log line, the slowdown notice, the CPU-recipe hint
    guard.py        a nan/inf loss or gradient norm, stop signals (Ctrl-C, SIGTERM)
    corpus.py       the run's data: prepared once per machine; on resume, the tokens it trained on
    resume.py       resume=: the checkpoint's config with this command's overrides
    run_folder.py   the run folder: its name, train.log, metrics.jsonl, config.yaml, wandb
    pretrained.py   init_from=: a Hugging Face Llama folder's architecture, tokenizer and weights

It imports model/, data/ and runtime/; never the commands.
"""

from runtime.errors import UserError


class TrainError(UserError):
    """Bad configuration or a failed run. The message says what to do; train.py exits with code 2."""
