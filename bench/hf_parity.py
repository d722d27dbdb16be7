"""ropegpt vs transformers on a Llama folder: equal logits, equal greedy tokens, and decode speed.

    python -m bench.hf_parity                          # a SmolLM2-135M-shaped folder, random weights
    python -m bench.hf_parity --shape tinyllama        # TinyLlama-1.1B's shape (4.4 GB in fp32)
    python -m bench.hf_parity --folder models/SmolLM2-135M   # a folder you downloaded

Both load the same folder in fp32 on the CPU. Reported: the largest |logit difference| over a prompt,
whether greedy decoding gives the same tokens (ropegpt through its KV cache, transformers through
`generate`), and each one's decode tokens/s at batch 1 (the tokens after the first). Without --folder
the weights are random (initializer range 0.02, as transformers draws them) and the prompt is random ids.
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from model.generate import generate_tokens
from model.llama import LlamaFormatError, load_llama
from runtime.errors import UserError, exit_on_user_error

SHAPES = {  # the published config.json values of each model's shape
    "smollm2_135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                         rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True),
    "tinyllama": dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                      num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
                      rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False),
}


def random_folder(shape: str, where: Path) -> Path:
    import transformers

    values = dict(SHAPES[shape])
    theta = values.pop("rope_theta")
    config = transformers.LlamaConfig(**values, rope_parameters={"rope_type": "default", "rope_theta": theta},
                                      bos_token_id=None, eos_token_id=None, pad_token_id=None)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(where)
    return where


def decode_speed(step, new_tokens: int) -> float:
    """Tokens/s of new_tokens - 1 decode steps, from `step(n)` which generates n tokens."""
    step(2)  # warm-up
    t0 = time.perf_counter()
    step(1)
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    step(new_tokens)
    return (new_tokens - 1) / max(time.perf_counter() - t0 - one, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="smollm2_135m")
    parser.add_argument("--folder", type=Path, help="a Hugging Face Llama folder instead of random weights")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    with exit_on_user_error():
        try:
            import transformers
        except ImportError:
            raise UserError("this benchmark compares against transformers: pip install transformers") from None
        torch.set_grad_enabled(False)
        with tempfile.TemporaryDirectory() as tmp:
            folder = args.folder or random_folder(args.shape, Path(tmp))
            t0 = time.perf_counter()
            try:
                ours = load_llama(folder).eval()
            except LlamaFormatError as e:
                raise UserError(f"cannot read {folder}: {e}") from None
            load_s = time.perf_counter() - t0
            theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        torch.manual_seed(1)
        length = min(args.prompt_tokens, ours.config.block_size - args.new_tokens)
        if length < 1:
            raise UserError(f"--new-tokens {args.new_tokens} leaves no room for a prompt in the model's context "
                            f"of {ours.config.block_size}")
        prompt = torch.randint(0, ours.config.vocab_size, (1, length))
        a, b = ours(prompt)[0], theirs(prompt).logits
        n = args.new_tokens
        greedy_ours = torch.cat(list(generate_tokens(ours, prompt, n, temperature=0)), dim=1)
        greedy_theirs = theirs.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                        eos_token_id=None, pad_token_id=0)[:, prompt.size(1):]
        same = (greedy_ours == greedy_theirs).all().item()

        def ropegpt(k):
            return list(generate_tokens(ours, prompt, k, temperature=0))

        def hf(k):
            return theirs.generate(prompt, max_new_tokens=k, min_new_tokens=k, do_sample=False, eos_token_id=None,
                                   pad_token_id=0)

        ours_speed, theirs_speed = decode_speed(ropegpt, n), decode_speed(hf, n)
        what = str(args.folder) if args.folder else f"{args.shape} shape, random weights"
        print(f"{what}: {ours.num_params():,} parameters, loaded by ropegpt in {load_s:.1f} s")
        print(f"max |logit difference| over {length} tokens: {(a - b).abs().max().item():.2e} "
              f"(logits up to {b.abs().max().item():.2f})")
        print(f"greedy {n} tokens identical: {same}")
        print(f"decode at batch 1, fp32, {torch.get_num_threads()} threads: ropegpt {ours_speed:.1f} tokens/s, "
              f"transformers {theirs_speed:.1f} tokens/s")


if __name__ == "__main__":
    main()
