"""look.py's page: attention step by step, opened from disk in a real browser (headless Chromium, driven by
Playwright), its numbers read back from the page and checked against the model's own."""

import dataclasses
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from data.tokenizers import CharTokenizer
from look import LookConfig, legend, look
from model import attention as attention_code
from model.attention import repeat_kv, rope_tables
from runtime.checkpoint import save_checkpoint
from tests.helpers import fingerprint, run_command, tiny_model

CHARS = "\n !',.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
PROMPT = "ROMEO: But soft, what light through yonder window breaks?"
CHROMIUM = Path("/usr/bin/chromium")


def checkpoint(folder: Path, causal: bool, **shape) -> Path:
    """A character-level checkpoint of a model whose queries and keys are scaled up: scores spread over several
    units, as a trained model's do, so the weights are peaked and every comparison below can fail."""
    model = tiny_model(vocab_size=len(CHARS), causal=causal, **shape)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.wq.weight.mul_(15.0)
            block.attn.wk.weight.mul_(15.0)
    path = folder / ("causal.pt" if causal else "peek.pt")
    save_checkpoint({"model_config": dataclasses.asdict(model.config), "model": model.state_dict(),
                     "data_meta": CharTokenizer(CHARS).meta()}, path)
    return path


def reference(path: Path, text: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each layer's scores q.k/sqrt(D) and weights for text, computed here from the checkpoint's projections."""
    from runtime.checkpoint import load_checkpoint
    from model.gpt import GPT

    state = load_checkpoint(path)
    model = GPT.from_state(state["model_config"], state["model"]).eval()
    ids = torch.tensor([CharTokenizer(CHARS).encode(text)])
    T = ids.size(1)
    cos, sin = rope_tables(torch.arange(T), model.config.head_dim)
    x, scores = model.tok_emb(ids), []
    with torch.no_grad():
        for block in model.blocks:
            q, k, _ = block.attn.project(block.attn_norm(x), cos, sin)
            scores.append((q @ repeat_kv(k, q.size(1)).transpose(-2, -1))[0].double() / math.sqrt(q.size(-1)))
            x = block(x, cos, sin)
        weights = model.attention_maps(ids)[:, 0].double()  # (L, H, T, T), from attention_weights
    return scores, list(weights)


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    folder = tmp_path_factory.mktemp("look")
    causal, peek = checkpoint(folder, True, block_size=64), checkpoint(folder, False, block_size=64)
    one = look(LookConfig(ckpt=str(causal), prompt=PROMPT, out=str(folder / "causal.html")))
    two = look(LookConfig(ckpt=str(causal), compare=str(peek), prompt=PROMPT, out=str(folder / "both.html")))
    return {"causal": causal, "peek": peek, "one": one, "two": two}


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip("no browser: apt-get install -y chromium (Debian's package, /usr/bin/chromium)")
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


def opened(browser, path: Path):
    """The page at path, opened from file://, with what it logged as errors and every request it made."""
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    errors, requests = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.resolve().as_uri())
    page.wait_for_selector("body[data-ready=true]", timeout=20_000)
    return page, errors, requests


def shown_row(page, run: int, layer: int, head: int, query: int) -> list[dict]:
    """Click layer, head and query token in run's panel; read the table's rows back from the page."""
    box = page.locator(".run").nth(run)
    box.locator(f"button[data-layer='{layer}']").click()
    box.locator(f"button[data-head='{head}']").click()
    box.locator(f".chip[data-index='{query}']").click()
    return box.locator("tbody tr").evaluate_all(
        "rows => rows.map(r => ({key: +r.dataset.key, masked: r.dataset.masked === 'true', "
        "score: r.dataset.score, weight: +r.dataset.weight}))")


@pytest.mark.slow
def test_the_pages_open_from_disk_with_no_console_error_and_no_network_request(pages, browser, tmp_path):
    for name in ("one", "two"):
        page, errors, requests = opened(browser, pages[name])
        assert errors == []
        assert requests == [pages[name].resolve().as_uri()]  # the page itself, nothing else
        assert page.locator(".run").count() == (1 if name == "one" else 2)
        shot = tmp_path / f"{name}.png"
        page.screenshot(path=str(shot), full_page=True)
        from PIL import Image

        pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
        assert pixels.std() > 20, f"{shot} looks blank"  # text, chips, heatmaps: far from one colour
        page.close()


@pytest.mark.slow
def test_a_clicked_query_shows_the_models_scores_and_weights_the_future_masked_summing_to_one(pages, browser):
    scores, weights = reference(pages["causal"], PROMPT)
    page, errors, _ = opened(browser, pages["one"])
    T = len(PROMPT)
    for layer, head, query in [(0, 0, 0), (0, 3, 17), (1, 1, T - 1), (1, 2, 30)]:
        rows = shown_row(page, 0, layer, head, query)
        assert [r["key"] for r in rows] == list(range(T))
        for r in rows:
            want_w = weights[layer][head, query, r["key"]].item()
            assert r["weight"] == pytest.approx(want_w, abs=1e-3)
            if r["key"] > query:  # every future key: masked, score -inf, weight exactly 0
                assert r["masked"] and r["score"] == "-inf" and r["weight"] == 0
            else:
                assert not r["masked"]
                assert float(r["score"]) == pytest.approx(scores[layer][head, query, r["key"]].item(), abs=1e-3)
        assert sum(r["weight"] for r in rows) == pytest.approx(1.0, abs=1e-3)
        shown_sum = float(page.locator(".run .sum").first.get_attribute("data-sum"))
        assert shown_sum == pytest.approx(1.0, abs=1e-3)
        assert max(weights[layer][head, query]).item() > 0.2  # peaked: equality above is not trivial
    assert errors == []


@pytest.mark.slow
def test_the_peek_model_reads_keys_after_the_query_and_the_causal_model_never_does(pages, browser):
    page, errors, _ = opened(browser, pages["two"])
    _, peek_weights = reference(pages["peek"], PROMPT)
    later = 0.0
    for layer, head, query in [(0, 0, 5), (1, 3, 20)]:
        causal = shown_row(page, 0, layer, head, query)
        peek = shown_row(page, 1, layer, head, query)
        assert all(r["weight"] == 0 and r["masked"] for r in causal if r["key"] > query)
        assert not any(r["masked"] for r in peek)
        later = max(later, max(r["weight"] for r in peek if r["key"] > query))
        for r in peek:
            assert r["weight"] == pytest.approx(peek_weights[layer][head, query, r["key"]].item(), abs=1e-3)
    assert later > 0.01  # the peek model reads the future, the very token it must predict among them
    assert errors == []


def test_six_layers_of_six_heads_over_200_tokens_fit_in_2_mb(tmp_path):
    path = checkpoint(tmp_path, True, n_layer=6, n_head=6, n_kv_head=6, n_embd=96, block_size=256)
    text = (PROMPT + " ") * 4
    out = look(LookConfig(ckpt=str(path), prompt=text[:200], out=str(tmp_path / "big.html")))
    assert out.stat().st_size <= 2_000_000


def test_the_legend_names_the_lines_of_model_attention_that_compute_each_step():
    source = Path(attention_code.__file__).read_text().splitlines()
    text = legend()
    for words, pattern in [("q&middot;k/&radic;D (line", "return q @ k.transpose"),
                           ("&minus;&infin; (line", "masked_fill(~causal_mask"),
                           ("sum to 1 (line", "torch.softmax(scores"), ("brings (line", "return weights @ v")]:
        n = int(text.split(words)[1].split(")")[0])
        assert pattern in source[n - 1], (words, n, source[n - 1])


def test_through_the_kv_cache_one_token_at_a_time_the_numbers_are_those_of_one_pass(pages):
    """cache=true: each query scored against the keys the cache holds, as generation computes it. Under the
    causal mask, every score and value length equals one pass over the whole prompt's, to fp32 rounding
    (1e-5 of the largest score)."""
    from look import cached_steps, whole_steps
    from runtime.checkpoint import load_checkpoint
    from model.gpt import GPT

    state = load_checkpoint(pages["causal"])
    model = GPT.from_state(state["model_config"], state["model"]).eval()
    ids = CharTokenizer(CHARS).encode(PROMPT)
    with torch.no_grad():
        (cached, cached_norms), (whole, whole_norms) = cached_steps(model, ids), whole_steps(model, ids)
    lower = np.tril(np.ones((len(ids), len(ids)), dtype=bool))
    largest = np.abs(whole).max()
    assert largest > 1 and np.abs(cached - whole)[..., lower].max() < 1e-5 * largest  # fp32 rounding apart
    assert np.abs(cached_norms - whole_norms).max() < 1e-5
    out = look(LookConfig(ckpt=str(pages["causal"]), prompt=PROMPT, out=str(pages["one"].with_name("c.html")),
                          cache=True))
    assert "computed through the KV cache" in out.read_text()


@pytest.mark.parametrize("args,message", [
    (["compare=PEEK", "cache=true"], "attends both ways (causal=false), so a KV cache would go stale"),
    (["prompt=" + "a" * 80], "the prompt is 80 tokens, longer than the context of 64 tokens"),
    (["ckpt=/no/such/run"], "/no/such/run"),
    (["out=page.txt"], "out=page.txt: give an .html path"),
    (["out=missing/page.html"], "the folder missing does not exist"),
    (["out=notes.html"], "out=notes.html exists and is not a page look.py wrote"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_is_written(pages, tmp_path, args, message):
    (tmp_path / "notes.html").write_text("<p>my notes</p>")
    ckpt = [] if any(a.startswith("ckpt=") for a in args) else [f"ckpt={pages['causal']}"]
    args = [a.replace("PEEK", str(pages["peek"])) for a in args]
    before = fingerprint(tmp_path)
    r = run_command(str(Path(__file__).resolve().parent.parent / "look.py"), *ckpt, *args, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert fingerprint(tmp_path) == before  # nothing written, notes.html untouched


def test_a_page_look_py_wrote_is_replaced_and_a_newest_run_is_found(pages, tmp_path):
    runs = tmp_path / "outputs" / "2026-12-07" / "10-00-00" / "checkpoints"
    runs.mkdir(parents=True)
    shutil.copy(pages["causal"], runs / "last.pt")  # the newest run: the one whose last.pt was written last
    out = tmp_path / "a.html"
    first = look(LookConfig(prompt="ROMEO:", out=str(out), runs_dir=str(tmp_path / "outputs")))
    again = look(LookConfig(prompt="JULIET:", out=str(out), runs_dir=str(tmp_path / "outputs")))
    assert first == again == out and '"T": 7,' in out.read_text()  # JULIET:'s 7 characters, not ROMEO:'s 6
