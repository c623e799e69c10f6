"""Programs built to game the score, and model files built to run code in the evaluator: all refused.

Each cheat is an exported program, as the training process would write it; each passed the
evaluation before the probes were hidden among the scored rows and the archive was checked.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from harness import archive, evaluate, prepare

BATCH, LENGTH, TOKENS = 4, 32, 512  # 16 windows, 32 rows with their probes: 8 calls


def spec_for(prepared: prepare.Prepared, model: Path) -> dict[str, Any]:
    return dict(model=str(model), data=str(prepared.val_path), split="val", tokenizer=str(prepared.tokenizer_path), device="cpu",
                eval_batch=BATCH, context_len=LENGTH, eval_tokens=TOKENS, vocab_size=prepared.vocab_size)


def export(module: torch.nn.Module, path: Path) -> Path:
    program = torch.export.export(module, (torch.zeros(BATCH, LENGTH, dtype=torch.long),), strict=False)
    torch.export.save(program, path)
    return path


class Bigram(torch.nn.Module):
    """Honest: logits from the current token alone (a fixed hash of it), causal by construction."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.scale = torch.nn.Parameter(torch.tensor(0.05))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        ids = torch.arange(self.vocab, device=idx.device)
        return torch.cos(self.scale * (idx[..., None] * 7 + ids)) * 3


class Peeker(torch.nn.Module):
    """Reads the next token (the answer) at the positions `peek` marks; the honest bigram elsewhere."""

    def __init__(self, vocab: int, peek: torch.Tensor, doc_logit: float = 0.0) -> None:
        super().__init__()
        self.honest = Bigram(vocab)
        self.register_buffer("peek", peek)
        self.doc_logit = doc_logit

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        vocab = self.honest.vocab
        answer = (torch.arange(vocab, device=idx.device) == idx.roll(-1, dims=1)[..., None]).float() * 30.0
        logits = torch.where(self.peek[:, None], answer, self.honest(idx))
        if self.doc_logit:  # the document token is never scored: a huge logit there costs nothing
            logits = logits + (torch.arange(vocab, device=idx.device) == vocab - 1).float() * self.doc_logit
        return logits


class Counter(torch.nn.Module):
    """Counts its calls in a buffer, and reads the answer once the old checks' five calls are over."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.inner = Peeker(vocab, torch.ones(LENGTH, dtype=torch.bool))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        self.calls.add_(1)
        return torch.where(self.calls > 5, self.inner(idx), self.inner.honest(idx))


def old_cuts_spared() -> torch.Tensor:
    """Every position but those the old check looked at (cuts 1, L/2 and L-1 compare the logits before them)."""
    peek = torch.ones(LENGTH, dtype=torch.bool)
    peek[[0, LENGTH // 2 - 1, LENGTH - 2]] = False
    return peek


def honest_bpb(prepared: prepare.Prepared, module: torch.nn.Module) -> float:
    """val_bpb the plain way: every window once, in order, no probes."""
    val = torch.frombuffer(bytearray(prepared.val_path.read_bytes()), dtype=torch.uint16).long()
    sizes = torch.tensor(json.loads(prepared.tokenizer_path.read_text())["token_bytes"], dtype=torch.float64)
    starts = evaluate.window_starts(val.numel(), TOKENS // LENGTH, LENGTH + 1)
    nll, nbytes = 0.0, 0.0
    with torch.no_grad():
        for i in range(0, len(starts), BATCH):
            rows = val[starts[i : i + BATCH, None] + torch.arange(LENGTH + 1)]
            losses = torch.nn.functional.cross_entropy(module(rows[:, :-1]).flatten(0, 1), rows[:, 1:].flatten(), reduction="none")
            weights = sizes[rows[:, 1:].flatten()]
            nll += losses.double()[weights > 0].sum().item()
            nbytes += weights.sum().item()
    return nll / (math.log(2) * nbytes)


def test_an_honest_program_scores_as_it_always_did(prepared: prepare.Prepared, tmp_path: Path) -> None:
    model = Bigram(prepared.vocab_size)
    result = evaluate.evaluate(spec_for(prepared, export(model, tmp_path / "model.pt2")))
    assert result["status"] == "ok", result
    assert result["val_bpb"] == honest_bpb(prepared, model)  # bit for bit: the probes change nothing
    assert result["params"] == 1


@pytest.mark.parametrize(
    ("cheat", "why"),
    [
        (lambda v: Peeker(v, torch.ones(LENGTH, dtype=torch.bool)), "reads the next token everywhere"),
        (lambda v: Peeker(v, old_cuts_spared()), "reads ahead except where the old fixed cuts looked"),
        (lambda v: Peeker(v, torch.ones(LENGTH, dtype=torch.bool), doc_logit=-1e6),
         "hides the leak under a -1e6 logit on the unscored document token"),
    ],
)
def test_a_program_that_reads_later_tokens_is_rejected(
    prepared: prepare.Prepared, tmp_path: Path, cheat: Callable[[int], torch.nn.Module], why: str
) -> None:
    module = cheat(prepared.vocab_size)
    assert honest_bpb(prepared, module) < 1.0, why  # it would have scored far better than it should
    result = evaluate.evaluate(spec_for(prepared, export(module, tmp_path / "model.pt2")))
    assert result["status"] == "rejected", (why, result)
    assert result["reason"].startswith("model is not causal: the log-probability of a scored token changed"), result


def test_a_program_that_keeps_state_between_calls_is_rejected(prepared: prepare.Prepared, tmp_path: Path) -> None:
    result = evaluate.evaluate(spec_for(prepared, export(Counter(prepared.vocab_size), tmp_path / "model.pt2")))
    assert result["status"] == "rejected" and "writes to ['calls']" in result["reason"], result
    assert "state between calls" in result["reason"], result
    assert "val_bpb" not in result


def test_a_program_that_reads_other_rows_of_its_batch_is_rejected(prepared: prepare.Prepared, tmp_path: Path) -> None:
    class Neighbour(Bigram):
        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return super().forward(idx) + 0.01 * super().forward(idx.roll(1, dims=0))  # row i reads row i-1

    result = evaluate.evaluate(spec_for(prepared, export(Neighbour(prepared.vocab_size), tmp_path / "model.pt2")))
    assert result["status"] == "rejected" and "not causal" in result["reason"], result


def forge(source: Path, target: Path, change: Callable[[str, dict[str, bytes]], None]) -> Path:
    """A copy of an archive with its files (by name under the archive's root folder) edited."""
    with zipfile.ZipFile(source) as archive_in:
        root = archive_in.namelist()[0].split("/")[0]
        files = {name.split("/", 1)[1]: archive_in.read(name) for name in archive_in.namelist()}
    change(root, files)
    with zipfile.ZipFile(target, "w") as archive_out:
        for name, data in files.items():
            archive_out.writestr(f"{root}/{name}", data)
    return target


def edit_json(files: dict[str, bytes], name: str, edit: Callable[[Any], None]) -> None:
    doc = json.loads(files[name])
    edit(doc)
    files[name] = json.dumps(doc).encode()


def sympy_size(marker: Path) -> Callable[[str, dict[str, bytes]], None]:
    payload = f"__import__('pathlib').Path({str(marker)!r}).write_text('ran') and 4"

    def change(root: str, files: dict[str, bytes]) -> None:
        def edit(doc: Any) -> None:
            values = doc["graph_module"]["graph"]["tensor_values"]
            shaped = next(meta for meta in values.values() if meta["sizes"])
            shaped["sizes"][0] = {"as_expr": {"expr_str": payload, "hint": {"as_int": 4}}}

        edit_json(files, archive.MODEL_JSON, edit)

    return change


def test_a_size_that_sympy_would_evaluate_is_refused_before_torch_reads_it(prepared: prepare.Prepared, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    forged = forge(export(Bigram(prepared.vocab_size), tmp_path / "model.pt2"), tmp_path / "forged.pt2", sympy_size(marker))
    result = evaluate.evaluate(spec_for(prepared, forged))
    assert result["status"] == "rejected" and "only plain integers" in result["reason"], result
    assert not marker.exists()
    # The forgery is real: torch's own loader runs the payload (in another process, to keep this one clean).
    subprocess.run([sys.executable, "-c", f"import torch; torch.export.load({str(forged)!r})"], capture_output=True, timeout=120)
    assert marker.read_text() == "ran"


def target(name: str) -> Callable[[str, dict[str, bytes]], None]:
    def change(root: str, files: dict[str, bytes]) -> None:
        edit_json(files, archive.MODEL_JSON, lambda doc: doc["graph_module"]["graph"]["nodes"][0].update(target=name))

    return change


def pickled_weight(root: str, files: dict[str, bytes]) -> None:
    edit_json(files, archive.WEIGHTS_CONFIG, lambda doc: next(iter(doc["config"].values())).update(use_pickle=True))


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (target("torch.os.system"), "is not an aten operator"),
        (target("torch.ops.aten.from_file.default"), "reaches files"),
        (target("torch.ops.aten.no_such_op.default"), "unknown operator"),
        (pickled_weight, "is a pickle"),
        (lambda root, files: files.update({"extra/run_me.py": b"import os"}), "unexpected files"),
        (lambda root, files: edit_json(files, archive.MODEL_JSON, lambda d: d.update(guards_code=["import os"])),
         "guards_code"),
        (lambda root, files: edit_json(files, archive.MODEL_JSON, lambda d: d["graph_module"]["graph"].update(
            custom_obj_values={"x": {"class_fqn": "os.system"}})), "custom_obj_values"),
        (lambda root, files: files.update({"archive_version": b"1"}), "archive_version"),
        (lambda root, files: files.update({archive.MODEL_JSON: b"{not json"}), "is not JSON"),
    ],
)
def test_a_forged_archive_is_refused_with_the_reason(
    prepared: prepare.Prepared, tmp_path: Path, change: Callable[[str, dict[str, bytes]], None], needle: str
) -> None:
    forged = forge(export(Bigram(prepared.vocab_size), tmp_path / "model.pt2"), tmp_path / "forged.pt2", change)
    with pytest.raises(archive.ArchiveRefused, match="the model file is refused") as refused:
        archive.checked_archive(forged, BATCH, LENGTH)
    assert needle in str(refused.value)


def test_what_is_not_a_zip_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.pt2").write_bytes(b"\x80\x04K\x01.")  # a pickle
    with pytest.raises(archive.ArchiveRefused, match="not a readable zip"):
        archive.checked_archive(tmp_path / "model.pt2", BATCH, LENGTH)
