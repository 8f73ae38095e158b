"""Lightning's Trainer on the plain PyTorch loop's model, data and optimizer (benchmarks/peer_programs/
torch_plain.py): a LightningModule with training_step, validation_step and configure_optimizers
(the scheduler's interval "epoch" or "step"), `self.log` for the losses, and a Trainer with its
logger, checkpointing and progress bar off; everything else at Lightning's defaults.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import lightning as L
import torch
from torch import nn

from benchmarks.peer_programs.common import EpochClock, Workload, load_workload, parse_args
from benchmarks.peer_programs.torch_plain import build_model, correct, loaders, loss_fn, make_optimizer, make_scheduler


class PeerModule(L.LightningModule):
    def __init__(self, w: Workload, model: nn.Module):
        super().__init__()
        self.w, self.model, self.criterion = w, model, loss_fn(w)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.criterion(self.model(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self.model(x)
        self.log("val_loss", self.criterion(logits, y), batch_size=len(y))
        self.log("val_acc", correct(logits, y) / y.numel(), batch_size=len(y))

    def configure_optimizers(self) -> Any:
        optimizer = make_optimizer(self.w, self.model)
        scheduler = make_scheduler(self.w, optimizer)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.w.schedule_interval}}


class Clock(L.Callback):
    """Validation runs at the end of each training epoch, before on_train_epoch_end."""

    def __init__(self, clock: EpochClock, updates: int):
        self.clock, self.updates = clock, updates

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            if torch.cuda.is_initialized():  # CUDA runs ahead: wait for the updates the validation reads anyway
                torch.cuda.synchronize()
            self.clock.train_done(self.updates)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.clock.epoch_done(float(trainer.callback_metrics["val_loss"]))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    w = load_workload(args)
    torch.manual_seed(w.config.seed)
    module = PeerModule(w, build_model(w))
    train_loader, val_loader = loaders(w)
    clock = EpochClock()
    cuda = w.config.train.device == "cuda"
    trainer = L.Trainer(
        max_epochs=w.config.train.epochs,
        accelerator="gpu" if cuda else "cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        gradient_clip_val=w.config.train.clip_grad_norm,
        callbacks=[Clock(clock, w.updates_per_epoch)],
    )
    trainer.fit(module, train_loader, val_loader)
    label = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    train_loss = float(trainer.callback_metrics["train_loss"])
    clock.write(args.result, f"lightning {L.__version__}, torch {torch.__version__}", label, train_loss=train_loss)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
