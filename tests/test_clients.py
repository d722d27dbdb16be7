"""Other programs on ropegpt's exports: lm-evaluation-harness (bench/lm_eval_text.py).

lm-eval is a benchmark-only extra (pip install "lm-eval[hf]"): the tests that run it skip without it. The
windows ropegpt scores a long text with are tested without it.
"""

import math

import pytest

from bench.lm_eval_text import compare, rolling_windows
from runtime.config import compose
from train import TrainConfig, train


@pytest.mark.parametrize("n", [1, 5, 31, 32, 33, 64, 100])
@pytest.mark.parametrize("context", [1, 4, 32])
def test_rolling_windows_score_every_token_once_with_the_tokens_before_it(n, context):
    prefix, ids = -1, list(range(100, 100 + n))  # distinct tokens: a token's value says where it is
    seq = [prefix] + ids  # ids[i] is predicted from seq[: i + 1]
    windows = list(rolling_windows(ids, prefix, context))
    assert [t for _, targets in windows for t in targets] == ids  # each token once, in order
    for inputs, targets in windows:
        end = ids.index(targets[-1]) + 1  # the last target is seq[end]
        # the inputs are the tokens just before seq[end], as many as the context holds (all, if fewer)
        assert len(targets) <= len(inputs) == min(context, end)
        assert inputs == seq[end - len(inputs):end]
    assert len(windows) == math.ceil(n / context)
    assert list(rolling_windows([], prefix, context)) == []


@pytest.mark.parametrize("n,context", [(1, 4), (100, 32), (64, 32), (7, 1)])
def test_rolling_windows_are_lm_evals_windows(n, context):
    """The model inputs lm-eval's hf model builds from its windows: (context + continuation), cut to the
    last max_length + 1 tokens, less the last (lm_eval/models/huggingface.py, _loglikelihood_tokens)."""
    utils = pytest.importorskip("lm_eval.utils", reason="lm-eval is not installed (pip install \"lm-eval[hf]\")")
    ids = list(range(100, 100 + n))
    theirs = [((a + b)[-(context + 1):][:-1], b) for a, b in map(utils.make_disjoint_window,
              utils.get_rolling_token_windows(ids, prefix_token=7, max_seq_len=context, context_len=1))]
    assert list(rolling_windows(ids, 7, context)) == theirs


@pytest.mark.slow
def test_lm_eval_bits_per_byte_is_ropegpts_on_the_same_windows(tmp_path, data_root):
    """A tiny character-level run, exported and scored by lm-eval on 3,000 characters of its val split.

    Tolerance 1e-5, relative: both sides compute the same fp32 network on the same 94 windows, and their
    logits differ by float rounding only (observed: a few 1e-9); one token scored twice or left out would
    move the total by about 1/3000 = 3e-4, which 1e-3 would not catch. The run's own val loss is measured on
    other windows (2 random batches): within 5% (observed 0.1%), where a missing ln 2 would be 44% off.
    """
    pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install \"lm-eval[hf]\")")
    pytest.importorskip("accelerate", reason="lm-eval's hf model needs accelerate (pip install \"lm-eval[hf]\")")
    args = ["model=tiny", f"data.root={data_root}", "max_steps=20", "batch_size=8", "eval_interval=20",
            "eval_batches=2", "compile=false", f"out_dir={tmp_path / 'run'}"]
    train(compose("train", TrainConfig, args), args)
    r = compare(tmp_path / "run", chars=3000)
    assert (r["chars"], r["bytes"], r["tokens"], r["windows"]) == (3000, 3000, 3000, math.ceil(3000 / 32))
    assert abs(r["same_windows"] - r["lm_eval"]) <= 1e-5 * r["lm_eval"], r
    assert abs(r["val_loss_bits_per_byte"] - r["lm_eval"]) <= 0.05 * r["lm_eval"], r
