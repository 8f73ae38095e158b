"""A plain PyTorch loop in the style of the seed labs (shared/seeds): an nn.Sequential model, a
TensorDataset in a DataLoader, the five textbook lines per batch with `loss.item()` summed for the
epoch's mean, a torch.optim optimizer and lr_scheduler, and `model.eval()` + `torch.no_grad()`
validation. The DataLoader draws the library's seeded batch order (a batch_sampler), so the batches
are the library's. The models here are also the ones benchmarks/peer_programs/lightning_peer.py trains.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.peer_programs.common import EpochClock, LibraryOrder, Workload, load_workload, parse_args
from loopspec.config import resolved_eps, resolved_weight_decay


class CausalSelfAttention(nn.Module):
    """nanoGPT's attention with its fused kernel, dropout inside it while training."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.c_attn, self.c_proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = (
            t.view(batch, length, self.heads, width // self.heads).transpose(1, 2)
            for t in self.c_attn(x).split(width, dim=2)
        )
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(batch, length, width)))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads, dropout)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """nanoGPT: token and position embeddings, pre-LayerNorm blocks, a head tied to the token table."""

    def __init__(self, vocab: int, block: int, layers: int, heads: int, width: int, dropout: float):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, width), nn.Embedding(block, width)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*(Block(width, heads, dropout) for _ in range(layers)))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.wte.weight
        self.apply(self.init_weights)

    @staticmethod
    def init_weights(module: nn.Module) -> None:
        """nanoGPT's: every Linear and Embedding normal(0, 0.02), biases zero."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return self.head(self.ln_f(self.blocks(self.drop(self.wte(tokens) + self.wpe(positions)))))


def build_model(w: Workload) -> nn.Module:
    m, shape = w.config.model, w.data.input_shape
    if m.name == "mlp":  # Linear -> BatchNorm1d -> ReLU -> Dropout, as in the intrusion lab
        layers: list[nn.Module] = []
        fan_in = math.prod(shape)
        for width in m.hidden:
            layers += [
                nn.Linear(fan_in, width, bias=m.bias_before_norm),
                nn.BatchNorm1d(width, eps=m.batchnorm_eps, momentum=m.batchnorm_momentum),
                nn.ReLU(),
                nn.Dropout(m.dropout),
            ]
            fan_in = width
        return nn.Sequential(*layers, nn.Linear(fan_in, w.out_dim))
    if m.name == "cnn":  # Conv -> BatchNorm2d -> ReLU -> MaxPool blocks, as in the training-loop lab
        layers, (channels, height, width) = [], shape
        for out in m.channels:
            layers += [
                nn.Conv2d(channels, out, 3, padding=1, bias=m.bias_before_norm),
                nn.BatchNorm2d(out, eps=m.batchnorm_eps, momentum=m.batchnorm_momentum),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            channels, height, width = out, height // 2, width // 2
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * height * width, w.out_dim))
    return GPT(w.out_dim, shape[0], m.n_layer, m.n_head, m.n_embd, m.dropout)


def sigmoid_focal_loss(logits: torch.Tensor, y: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """The intrusion lab's focal loss (torchvision.ops.sigmoid_focal_loss, mean) on 0/1 labels."""
    targets = y.to(logits.dtype).unsqueeze(1)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    return ((alpha * targets + (1 - alpha) * (1 - targets)) * ce * (1 - p_t) ** gamma).mean()


def loss_fn(w: Workload) -> Any:
    cfg = w.config.loss
    if cfg.name == "focal":
        return lambda logits, y: sigmoid_focal_loss(logits, y, cfg.alpha, cfg.gamma)
    return lambda logits, y: F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    predicted = (logits[:, 0] > 0).long() if logits.shape[-1] == 1 else logits.argmax(-1)
    return (predicted == y).sum()


def make_optimizer(w: Workload, model: nn.Module) -> torch.optim.Optimizer:
    o = w.config.optimizer
    params: Any = list(model.parameters())
    if o.decay == "matrices":  # nanoGPT's groups: 2-D tensors decay, biases and norms do not
        params = [{"params": [p for p in params if p.dim() >= 2]}, {"params": [p for p in params if p.dim() < 2]}]
        params[1]["weight_decay"] = 0.0
    cls = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
    return cls(params, lr=o.lr, betas=tuple(o.betas), eps=resolved_eps(o), weight_decay=resolved_weight_decay(o))


def make_scheduler(w: Workload, optimizer: torch.optim.Optimizer) -> Optional[torch.optim.lr_scheduler.LRScheduler]:
    s = w.config.schedule
    if s.name == "cosine":  # stepped once an epoch
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=w.schedule_horizon, eta_min=s.eta_min)
    if s.name == "warmup_cosine":  # stepped once an update: linear warm-up, then cosine to eta_min
        total, floor = w.schedule_horizon, s.eta_min / w.config.optimizer.lr

        def factor(t: int) -> float:
            if t < s.warmup:
                return s.start_factor + (1 - s.start_factor) * t / s.warmup
            return floor + (1 - floor) * 0.5 * (
                1 + math.cos(math.pi * min(t - s.warmup, total - s.warmup) / (total - s.warmup))
            )

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return None


def loaders(w: Workload) -> tuple[DataLoader, DataLoader]:
    x_dtype = torch.int64 if w.tokens else torch.float32
    d = w.data
    train = TensorDataset(torch.as_tensor(d.x_train, dtype=x_dtype), torch.as_tensor(d.y_train))
    val = TensorDataset(torch.as_tensor(d.x_val, dtype=x_dtype), torch.as_tensor(d.y_val))
    return DataLoader(train, batch_sampler=LibraryOrder(w)), DataLoader(val, batch_size=w.config.data.eval_batch_size)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    w = load_workload(args)
    device = torch.device("cuda" if w.config.train.device == "cuda" else "cpu")
    torch.manual_seed(w.config.seed)
    model = build_model(w).to(device)
    criterion, optimizer = loss_fn(w), make_optimizer(w, model)
    scheduler = make_scheduler(w, optimizer)
    clip = w.config.train.clip_grad_norm
    train_loader, val_loader = loaders(w)
    clock = EpochClock()
    for _epoch in range(w.config.train.epochs):
        model.train()
        running, batches = 0.0, 0
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(x), y)
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            if scheduler is not None and w.schedule_interval == "step":
                scheduler.step()
            running += loss.item()
            batches += 1
        clock.train_done(batches)
        model.eval()
        val_loss, hits = 0.0, 0
        with torch.no_grad():
            for x, y in val_loader:
                x, y = x.to(device), y.to(device)
                logits = model(x)
                val_loss += criterion(logits, y).item() * len(y)
                hits += int(correct(logits, y))
        if scheduler is not None and w.schedule_interval == "epoch":
            scheduler.step()
        clock.epoch_done(val_loss / len(w.data.y_val))
    label = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    clock.write(args.result, f"torch {torch.__version__}", label, train_loss=running / max(batches, 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
