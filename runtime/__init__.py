"""The plumbing around the model, shared by the commands (train.py, sample.py, data.prepare, bench/):

    errors.py      UserError, and the one place that turns it into a line on stderr and exit code 2
    config.py      Hydra, once: compose a command's config against its schema, run a command
    checkpoint.py  atomic save, weights_only load, the one resolver of "run directory or file"
    files.py       the permissions a user's files get (the umask), for files written under private names
    devices.py     device, dtype and autocast choice; GPU peak FLOPs for MFU; torch settings put back
    processes.py   torchrun processes (join, agree, gather) and stop signals
    parallel.py    DDP or FSDP2 over the processes; the whole model and optimizer state for checkpoints
    runlog.py      what a run says and writes: console, train.log, metrics.jsonl, wandb, progress bar
    plots.py       loss curves and attention heatmaps (matplotlib, headless)
    optimizers.py  Muon and AdamW stepped as one optimizer

It imports torch, Hydra and the standard library; never model/, data/ or the commands.
"""
