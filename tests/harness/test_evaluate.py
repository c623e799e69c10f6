"""The evaluation's own logic on hand-made models: the causality check and the bits-per-byte sum."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from harness import evaluate, prepare


def causal(x: torch.Tensor) -> torch.Tensor:
    """Logits from a running sum of the tokens so far: causal, and sensitive to every earlier token."""
    return torch.nn.functional.one_hot(x.cumsum(1) % 16, 16).float()


def test_a_causal_model_passes() -> None:
    x, other = torch.randint(0, 16, (4, 12)), torch.randint(0, 16, (4, 12))
    assert evaluate.causality_problem(causal, x, other) == ""


def test_peeking_at_the_next_token_is_caught() -> None:
    x, other = torch.randint(0, 16, (4, 12)), torch.randint(0, 16, (4, 12))
    problem = evaluate.causality_problem(lambda t: causal(t.roll(-1, dims=1)), x, other)
    assert problem.startswith("logits before position") and "when later tokens changed" in problem


def test_reading_other_sequences_of_the_batch_is_caught() -> None:
    x, other = torch.randint(0, 16, (4, 12)), torch.randint(0, 16, (4, 12))
    problem = evaluate.causality_problem(lambda t: causal(t + t.roll(1, dims=0)), x, other)  # row i reads row i-1
    assert "other sequences of the batch" in problem


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
    spec = dict(model=str(tmp_path / "model.pt2"), val=str(prepared.val_path), tokenizer=str(prepared.tokenizer_path),
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
