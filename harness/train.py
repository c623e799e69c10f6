"""
=====================================================================================================
 The baseline GPT: EDITABLE. This is the one file an experiment changes.
 The harness calls train(run) and scores the returned model; read harness/contract.py for the rules.
=====================================================================================================
"""

import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.contract import Run

# --------------------------------------------------------------------------------------------------
# Hyperparameters (plain literals: tools edit them in place)

DEPTH = 4  # transformer blocks; 4 x 128 wide trains ~10k tokens/s on 2 CPU cores
WIDTH = 128  # model dimension
HEADS = 4  # attention heads: head dim 32, plenty for RoPE at this width
MLP_RATIO = 4  # hidden width of the MLP as a multiple of WIDTH
SEQ_LEN = 128  # training sequence length; the model also accepts run.context_len
BATCH_SIZE = 16  # sequences per step: 2,048 tokens, enough signal for Muon
MATRIX_LR = 0.03  # Muon learning rate for the 2-D weights of the blocks
EMBED_LR = 0.01  # AdamW learning rate for the token embedding
HEAD_LR = 0.004  # AdamW learning rate for the output head (lower: it sees every token's gradient)
ADAM_BETAS = (0.8, 0.95)  # fast first moment: short runs have little history to average
WEIGHT_DECAY = 0.0  # no decay: runs are far too short to overfit
MUON_MOMENTUM = 0.95  # Muon's Nesterov momentum
WARMUP_FRACTION = 0.05  # linear warmup over the first 5% of the budget
WARMDOWN_FRACTION = 0.4  # linear decay to zero over the last 40%: cheap gain for short budgets
SOFTCAP = 15.0  # tanh cap on the logits: keeps early training stable
INIT_STD = 0.02  # embedding init scale
LOG_EVERY = 10  # steps between progress reports (each one syncs a GPU)
COMPILE = "cuda"  # torch.compile where: "cuda", "always" or "never" (CPU: 20-40 s cold compile)

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
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH, bias=False)
        self.proj = nn.Linear(WIDTH, WIDTH, bias=False)
        nn.init.zeros_(self.proj.weight)  # each block starts as the identity

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, HEADS, C // HEADS).permute(2, 0, 3, 1, 4)
        q, k = F.rms_norm(q, (q.size(-1),)), F.rms_norm(k, (k.size(-1),))  # QK-norm: bounded logits
        q, k = apply_rotary(q, cos[:, :, :T], sin[:, :, :T]), apply_rotary(k, cos[:, :, :T], sin[:, :, :T])
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(WIDTH, MLP_RATIO * WIDTH, bias=False)
        self.down = nn.Linear(MLP_RATIO * WIDTH, WIDTH, bias=False)
        nn.init.zeros_(self.down.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.relu(self.up(x)).square())  # ReLU^2: sparse and cheap, beats GELU here


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
        cos, sin = rotary(max_len, WIDTH // HEADS)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = F.rms_norm(self.embed(idx), (WIDTH,))
        for block in self.blocks:
            x = block(x, self.cos, self.sin)
        logits = self.head(F.rms_norm(x, (WIDTH,))).float()
        return SOFTCAP * torch.tanh(logits / SOFTCAP)


# --------------------------------------------------------------------------------------------------
# Optimiser: Muon (orthogonalised momentum) for the blocks' matrices, AdamW for the rest


def orthogonalise(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Newton-Schulz iteration towards the nearest semi-orthogonal matrix (Muon's update)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.bfloat16()  # robust to bf16 rounding, and faster: 2x on GPUs, ~1.7x on AVX512-BF16 CPUs
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


# --------------------------------------------------------------------------------------------------
# Training


def train(run: Run) -> nn.Module:
    model = GPT(run.vocab_size, max(SEQ_LEN, run.context_len)).to(run.device)
    matrices = [p for p in model.blocks.parameters() if p.ndim == 2]
    muon = Muon(matrices, lr=MATRIX_LR, momentum=MUON_MOMENTUM)
    adam = torch.optim.AdamW(
        [dict(params=model.embed.parameters(), lr=EMBED_LR), dict(params=model.head.parameters(), lr=HEAD_LR)],
        betas=ADAM_BETAS, weight_decay=WEIGHT_DECAY, eps=1e-10,
    )
    optimisers = [muon, adam]
    for opt in optimisers:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    compiled = COMPILE == "always" or (COMPILE == "cuda" and run.device.startswith("cuda"))
    forward = torch.compile(model) if compiled else model
    budget = run.remaining_tokens or run.remaining_seconds
    step, started = 0, time.perf_counter()
    while not run.done():
        left = run.remaining_tokens if run.remaining_tokens is not None else run.remaining_seconds
        progress = 1.0 - left / budget if budget else 0.0
        for opt in optimisers:
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * lr_scale(progress)
        x, y = run.batch(BATCH_SIZE, SEQ_LEN)
        with torch.autocast(run.device.split(":")[0], dtype=run.autocast_dtype, enabled=run.autocast_dtype is not None):
            logits = forward(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        for opt in optimisers:
            opt.step()
        model.zero_grad(set_to_none=True)
        if step % LOG_EVERY == 0 or run.done():
            run.log(step, loss, tokens_per_second=(step + 1) * BATCH_SIZE * SEQ_LEN / (time.perf_counter() - started))
        step += 1
    return model
