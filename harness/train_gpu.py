"""
=====================================================================================================
 The GPU baseline GPT: EDITABLE. The baseline of the `standard` and `large` tiers (one modern GPU,
 300 s or 1,800 s of training). An experiment changes a copy of this one file.
 The harness calls train(run) and scores the returned model; read harness/contract.py for the rules.
 Sized after the familiar 5-minute H100 setting: ~50M parameters, sequence length 2,048, a vocabulary
 of 8,192, ~0.5M tokens per optimiser step through gradient accumulation, bf16, torch.compile, fused
 attention (scaled_dot_product_attention's flash path), Muon for the matrices and AdamW for the rest.
=====================================================================================================
"""

import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.contract import Run

# --------------------------------------------------------------------------------------------------
# Hyperparameters (plain literals: tools edit them in place)

DEPTH = 8  # transformer blocks
WIDTH = 640  # model dimension: 8 x 640 with an 8,192 vocabulary is ~50M parameters
HEAD_DIM = 128  # per-head width: 5 heads; 128 keeps the flash kernels on their fast path
MLP_RATIO = 4  # hidden width of the MLP as a multiple of WIDTH
SEQ_LEN = 2048  # training sequence length; the model also accepts run.context_len
DEVICE_BATCH = 64  # sequences per forward pass: 131k tokens, fits an 80 GB GPU with room to spare
TOTAL_BATCH_TOKENS = 524_288  # tokens per optimiser step (2^19): 4 accumulated passes at the sizes above
MATRIX_LR = 0.04  # Muon learning rate for the 2-D weights of the blocks
EMBED_LR = 0.6  # AdamW learning rate for the token embedding (sparse rows: it tolerates a large one)
HEAD_LR = 0.004  # AdamW learning rate for the output head (it sees every token's gradient)
ADAM_BETAS = (0.8, 0.95)  # fast first moment: a 300 s run has a few hundred steps of history
WEIGHT_DECAY = 0.0  # no decay: ~one epoch of data is too little to overfit
MUON_MOMENTUM = 0.95  # Muon's Nesterov momentum once warmed up
MUON_MOMENTUM_START = 0.85  # ... rising from this over the first MUON_WARMUP_STEPS steps
MUON_WARMUP_STEPS = 300  # early steps are noisy: less momentum lets them move
WARMUP_FRACTION = 0.0  # Muon needs no learning-rate warmup at this size
WARMDOWN_FRACTION = 0.5  # linear decay to zero over the last half of the budget
SOFTCAP = 15.0  # tanh cap on the logits: keeps early training stable
INIT_STD = 0.5  # embedding init scale (the embedding is RMS-normed right after)
LOG_EVERY = 10  # optimiser steps between progress reports (each one syncs the GPU)
COMPILE = "cuda"  # torch.compile where: "cuda", "always" or "never"

# Peak dense bf16 FLOP/s, for the MFU this file logs (the harness computes its own from the run).
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "4090": 165e12}

# --------------------------------------------------------------------------------------------------
# Model


def rotary(seq_len: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    freqs = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), freqs)
    return angles.cos()[None, None], angles.sin()[None, None]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1).type_as(x)


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.heads = WIDTH // HEAD_DIM
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH, bias=False)
        self.proj = nn.Linear(WIDTH, WIDTH, bias=False)
        nn.init.zeros_(self.proj.weight)  # each block starts as the identity

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, HEAD_DIM).permute(2, 0, 3, 1, 4)
        q, k = F.rms_norm(q, (HEAD_DIM,)), F.rms_norm(k, (HEAD_DIM,))  # QK-norm: bounded attention logits
        q, k = apply_rotary(q, cos[:, :, :T], sin[:, :, :T]), apply_rotary(k, cos[:, :, :T], sin[:, :, :T])
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # bf16 on a GPU: the flash kernel
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(WIDTH, MLP_RATIO * WIDTH, bias=False)
        self.down = nn.Linear(MLP_RATIO * WIDTH, WIDTH, bias=False)
        nn.init.zeros_(self.down.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.relu(self.up(x)).square())  # ReLU^2: sparse and cheap


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = Attention()
        self.mlp = MLP()

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(F.rms_norm(x, (x.size(-1),)), cos, sin)
        return x + self.mlp(F.rms_norm(x, (x.size(-1),)))


class GPT(nn.Module):
    def __init__(self, vocab_size: int, max_len: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, WIDTH)
        self.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
        self.head = nn.Linear(WIDTH, vocab_size, bias=False)
        nn.init.normal_(self.embed.weight, std=INIT_STD)
        nn.init.zeros_(self.head.weight)
        cos, sin = rotary(max_len, HEAD_DIM)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = F.rms_norm(self.embed(idx), (WIDTH,))
        for block in self.blocks:
            x = block(x, self.cos, self.sin)
        logits = self.head(F.rms_norm(x, (WIDTH,))).float()
        return SOFTCAP * torch.tanh(logits / SOFTCAP)

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6 x the matmul weights, plus attention's scores and mixing."""
        matmul = sum(p.numel() for p in self.blocks.parameters() if p.ndim == 2) + self.head.weight.numel()
        return 6 * matmul + 12 * DEPTH * WIDTH * seq_len


# --------------------------------------------------------------------------------------------------
# Optimiser: Muon (orthogonalised momentum) for the blocks' matrices, AdamW for the rest


def orthogonalise(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Newton-Schulz iteration towards the nearest semi-orthogonal matrix (Muon's update), in bf16."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.bfloat16()
    transposed = x.size(0) > x.size(1)
    if transposed:
        x = x.T
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return (x.T if transposed else x).type_as(g)


class Muon(torch.optim.Optimizer):
    def __init__(self, params: list[nn.Parameter], lr: float, momentum: float) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum))

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum", torch.zeros_like(p.grad))
                buf.lerp_(p.grad, 1 - group["momentum"])
                update = orthogonalise(p.grad.lerp(buf, group["momentum"]))
                p.add_(update, alpha=-group["lr"] * max(1.0, p.size(0) / p.size(1)) ** 0.5)


def lr_scale(progress: float) -> float:
    if progress < WARMUP_FRACTION:
        return progress / WARMUP_FRACTION
    return min(1.0, (1.0 - progress) / WARMDOWN_FRACTION)


def peak_flops(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)


# --------------------------------------------------------------------------------------------------
# Training


def train(run: Run) -> nn.Module:
    model = GPT(run.vocab_size, max(SEQ_LEN, run.context_len)).to(run.device)
    matrices = [p for p in model.blocks.parameters() if p.ndim == 2]
    muon = Muon(matrices, lr=MATRIX_LR, momentum=MUON_MOMENTUM_START)
    cuda = run.device.startswith("cuda")
    adam = torch.optim.AdamW(
        [dict(params=model.embed.parameters(), lr=EMBED_LR), dict(params=model.head.parameters(), lr=HEAD_LR)],
        betas=ADAM_BETAS, weight_decay=WEIGHT_DECAY, eps=1e-10, fused=cuda,
    )
    optimisers = [muon, adam]
    for opt in optimisers:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True  # the fp32 parts (logits, loss) on tensor cores
    compiled = COMPILE == "always" or (COMPILE == "cuda" and cuda)
    forward = torch.compile(model, dynamic=False) if compiled else model
    accumulate = max(1, TOTAL_BATCH_TOKENS // (DEVICE_BATCH * SEQ_LEN))
    step_tokens = accumulate * DEVICE_BATCH * SEQ_LEN
    flops, peak = model.flops_per_token(SEQ_LEN), peak_flops(run.device)
    budget = run.remaining_tokens or run.remaining_seconds
    step = 0
    while not run.done():
        started = time.perf_counter()
        left = run.remaining_tokens if run.remaining_tokens is not None else run.remaining_seconds
        progress = 1.0 - left / budget if budget else 0.0
        for opt in optimisers:
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * lr_scale(progress)
        warm = min(1.0, step / MUON_WARMUP_STEPS)
        muon.param_groups[0]["momentum"] = (1 - warm) * MUON_MOMENTUM_START + warm * MUON_MOMENTUM
        for _ in range(accumulate):
            if run.done():
                break  # the budget ran out mid-step: apply what was accumulated
            x, y = run.batch(DEVICE_BATCH, SEQ_LEN)
            with torch.autocast(run.device.split(":")[0], dtype=run.autocast_dtype, enabled=run.autocast_dtype is not None):
                logits = forward(x)
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))
            (loss / accumulate).backward()
        for opt in optimisers:
            opt.step()
        model.zero_grad(set_to_none=True)
        if step % LOG_EVERY == 0 or run.done():
            value = float(loss.detach())  # synchronises the GPU: the step's time is real after it
            rate = step_tokens / (time.perf_counter() - started)
            extra = dict(tokens_per_second=rate)
            if peak:
                extra["mfu"] = flops * rate / peak
            run.log(step, value, **extra)
        step += 1
    return model
