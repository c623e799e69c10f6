"""The evaluation's own logic on hand-made models: the hidden probes and the bits-per-byte sum."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import torch

from harness import evaluate, prepare, probes


def test_probes_keep_the_prefix_and_continue_with_real_text() -> None:
    val = torch.randint(0, 8, (5_000,))
    starts = evaluate.window_starts(val.numel(), 16, 33)
    inputs = val[starts[:, None] + torch.arange(32)]
    found = probes.make_probes(val, inputs, starts, 16, 8, random.SystemRandom())
    assert sorted(p.window for p in found) == list(range(16))  # every window probed once
    text = val.tolist()
    for p in found:
        assert torch.equal(p.tokens[: p.cut + 1], inputs[p.window, : p.cut + 1])
        assert p.tokens[p.cut + 1] != inputs[p.window, p.cut + 1]  # the probe differs right after its cut
        tail = p.tokens[max(p.cut - 1, 0) :].tolist()  # the kept bigram and what follows: a real stretch of text
        assert any(text[i : i + len(tail)] == tail for i in range(len(text) - len(tail) + 1))


def test_no_call_holds_a_window_and_its_probe() -> None:
    found = [probes.Probe(w, 3, torch.zeros(8)) for w in range(32)]
    for _ in range(20):
        calls = probes.deal(32, found, 8, random.SystemRandom())
        assert sorted(r for call in calls for r in call) == list(range(64)) and all(len(c) == 8 for c in calls)
        for call in calls:
            families = [r if r < 32 else found[r - 32].window for r in call]
            assert len(set(families)) == len(families)


def test_the_order_is_secret_not_seeded() -> None:
    found = [probes.Probe(w, 3, torch.zeros(8)) for w in range(32)]
    torch.manual_seed(0)
    first = probes.deal(32, found, 8, random.SystemRandom())
    torch.manual_seed(0)
    assert probes.deal(32, found, 8, random.SystemRandom()) != first


def test_a_changed_scored_log_probability_before_the_cut_is_found() -> None:
    found = [probes.Probe(0, 2, torch.zeros(6)), probes.Probe(1, 4, torch.zeros(6))]
    logprobs = torch.zeros(4, 6, dtype=torch.float64)
    scored = torch.ones(2, 6, dtype=torch.bool)
    logprobs[2, 3:] = -5.0  # after probe 0's cut: allowed to change
    assert probes.worst_difference(logprobs, scored, 2, found) == (0.0, "")
    logprobs[3, 4] = -0.5  # at probe 1's cut: a leak
    assert probes.worst_difference(logprobs, scored, 2, found) == (0.5, "window 1, tokens after position 4 replaced")
    scored[1, 4] = False  # an unscored (document) token does not count
    assert probes.worst_difference(logprobs, scored, 2, found)[0] == 0.0


def test_windows_are_spread_evenly_and_never_overlap() -> None:
    starts = evaluate.window_starts(1000, 5, 100).tolist()
    assert starts == [0, 225, 450, 675, 900]
    assert all(b - a >= 100 for a, b in zip(starts, starts[1:]))


def test_uniform_logits_score_log2_vocab_bits_per_token(prepared: prepare.Prepared, tmp_path: Path) -> None:
    """The exported program of a model that knows nothing: bpb = log2(V) x scored tokens / their bytes."""

    class Uniform(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(prepared.vocab_size))

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return self.bias.expand(*idx.shape, -1) + 0 * idx[..., None]

    batch, length, tokens = 4, 32, 512
    program = torch.export.export(Uniform(), (torch.zeros(batch, length, dtype=torch.long),))
    torch.export.save(program, tmp_path / "model.pt2")
    spec = dict(model=str(tmp_path / "model.pt2"), data=str(prepared.val_path), split="val", tokenizer=str(prepared.tokenizer_path),
                device="cpu", eval_batch=batch, context_len=length, eval_tokens=tokens, vocab_size=prepared.vocab_size)
    result = evaluate.evaluate(spec)

    val = list(memoryview(prepared.val_path.read_bytes()).cast("H"))
    sizes = json.loads(prepared.tokenizer_path.read_text())["token_bytes"]
    starts = evaluate.window_starts(len(val), tokens // length, length + 1).tolist()
    targets = [val[s + 1 + i] for s in starts for i in range(length)]
    scored = [t for t in targets if sizes[t] > 0]
    expected = math.log2(prepared.vocab_size) * len(scored) / sum(sizes[t] for t in scored)
    assert result["status"] == "ok" and result["params"] == prepared.vocab_size
    assert math.isclose(result["val_bpb"], expected, rel_tol=1e-6)  # fp32 log-softmax


def test_the_evaluator_refuses_pickles_that_name_code(tmp_path: Path) -> None:
    """A crafted model file cannot run code in the evaluation process through torch.load's fallback."""
    import subprocess
    import sys

    probe = (
        "import io, pickle, torch\n"
        "from harness.evaluate import refuse_unpickling_code\n"
        "payload = pickle.dumps(print)\n"
        "refuse_unpickling_code()\n"
        "for load in (lambda: pickle.loads(payload), lambda: torch.load(io.BytesIO(payload), weights_only=False)):\n"
        "    try:\n"
        "        load()\n"
        "        print('LOADED')\n"
        "    except Exception as exc:\n"
        "        print('refused' if 'refused' in str(exc) else repr(exc))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["refused", "refused"], done.stdout + done.stderr
