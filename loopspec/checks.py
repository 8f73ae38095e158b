"""The checks that need the data and the config together, in one place: what the dataset must be for
the model, the loss, the monitors, the batches, the replicas and the memory this machine has.
Each failure is one line (a UserError or ConfigError) before anything is written."""

from __future__ import annotations

from typing import Optional

import numpy as np

from loopspec.config import Config, LossConfig
from loopspec.data import Dataset
from loopspec.errors import ConfigError, UserError
from loopspec.memory import check_model_memory
from loopspec.models import check_model_input, model_entry, output_dim
from loopspec.parallel import check_shards


def check_data_and_config(
    config: Config, dataset: Dataset, shapes: Optional[dict[str, tuple[int, ...]]], replicas: int = 1
) -> None:
    """Everything the data must satisfy for this config; `shapes` (the model's tensors) when known."""
    check_model_input(config.model, dataset.input_shape)
    check_token_inputs(config, dataset)
    check_loss_options(config, dataset)
    check_monitors(config, dataset)
    num_train = len(dataset.y_train)
    check_batch_sizes(config, num_train, shapes)
    if shapes is not None:
        check_model_memory(config, shapes, dataset.input_shape, num_train)
    data = config.data
    check_shards(data.batch_size, num_train, data.drop_last, replicas, single_row_batchnorm(config, shapes))


def check_token_inputs(config: Config, dataset: Dataset) -> None:
    """A model over token ids (gpt) needs integer inputs below the vocabulary (the label classes), and
    token labels (N, T) as long as the inputs."""
    if not model_entry(config.model).token_inputs:
        return
    name = config.model.name
    for x, y in ((dataset.x_train, dataset.y_train), (dataset.x_val, dataset.y_val)):
        if not np.issubdtype(x.dtype, np.integer):
            raise UserError(
                f"model {name} takes token ids; dataset {dataset.name} gives {x.dtype} features (use data.name text)"
            )
        if x.size and (x.min() < 0 or x.max() >= dataset.num_classes):
            raise UserError(
                f"model {name}: token ids run {x.min()}..{x.max()}, outside the vocabulary of "
                f"{dataset.num_classes} (the label classes)"
            )
        if y.shape != x.shape:
            raise UserError(
                f"model {name} predicts the next token at every position: labels must be shaped as the "
                f"inputs {x.shape[1:]}, got {y.shape[1:]}"
            )


def single_row_batchnorm(config: Config, shapes: Optional[dict[str, tuple[int, ...]]]) -> bool:
    """Whether one row alone breaks the model in training (a BatchNorm over (N, F): torch's BatchNorm1d).
    A custom pair with BatchNorm buffers is taken to (its layers' input ranks are the module's own)."""
    entry = model_entry(config.model)
    if entry.builtin:
        return entry.single_row_batchnorm
    return shapes is not None and any(name.endswith("running_mean") for name in shapes)


# Focal loss options that fit one output layout only: (option, one logit?) -> what to use instead.
# One logit is the binary sigmoid focal loss; one logit per class the softmax form.
FOCAL_LAYOUT_OPTIONS = {
    ("alpha", False): "the softmax focal loss weights classes with loss.class_weights (set loss.alpha: null)",
    ("class_weights", True): "the one-logit (sigmoid) focal loss weights class 1 with loss.alpha",
}


def check_loss_options(config: Config, dataset: Dataset) -> None:
    """Reject a loss option the task cannot use, once the data says binary or multi-class."""
    loss, defaults = config.loss, LossConfig()
    if loss.name == "bce" and dataset.num_classes > 2:
        raise UserError(
            f"loss bce needs a binary dataset; this one has {dataset.num_classes} classes (use cross_entropy or focal)"
        )
    one_logit = output_dim(loss.name, dataset.num_classes) == 1
    for (option, layout), instead in FOCAL_LAYOUT_OPTIONS.items():
        if loss.name == "focal" and one_logit == layout and getattr(loss, option) != getattr(defaults, option):
            raise ConfigError(
                f"loss.{option} does not apply: dataset {dataset.name} has {dataset.num_classes} classes, so the "
                f"focal loss uses {'one logit' if one_logit else 'one logit per class'}; {instead}"
            )
    if loss.class_weights is not None and len(loss.class_weights) != dataset.num_classes:
        raise ConfigError(
            f"loss.class_weights has {len(loss.class_weights)} entries; "
            f"dataset {dataset.name} has {dataset.num_classes} classes"
        )


BINARY_METRICS = ("val_precision", "val_recall", "val_f1")  # of class 1: defined for binary tasks only


def check_monitors(config: Config, dataset: Dataset) -> None:
    """A monitored metric must be one the task records (precision, recall and F1 are of class 1)."""
    monitors = {"train.early_stopping.monitor": config.train.early_stopping.monitor}
    if config.schedule.name == "plateau":
        monitors["schedule.monitor"] = config.schedule.monitor
    for key, monitor in monitors.items():
        if monitor in BINARY_METRICS and dataset.num_classes != 2:
            raise ConfigError(
                f"{key} {monitor} needs a binary task ({monitor[4:]} is of class 1); dataset "
                f"{dataset.name} has {dataset.num_classes} classes: use val_loss, val_acc or train_loss"
            )


def check_batch_sizes(config: Config, num_train: int, shapes: Optional[dict[str, tuple[int, ...]]] = None) -> None:
    """Reject, before training, a batch torch's BatchNorm1d would refuse mid-run (one sample)."""
    data = config.data
    if data.drop_last and num_train < data.batch_size:
        raise ConfigError(
            f"data.drop_last with batch_size {data.batch_size} leaves no batch: "
            f"the training split has {num_train} samples"
        )
    if single_row_batchnorm(config, shapes) and not data.drop_last and num_train % data.batch_size == 1:
        raise ConfigError(
            f"the last training batch would hold 1 sample ({num_train} samples, batch_size {data.batch_size}), "
            "which BatchNorm1d cannot normalise; set data.drop_last: true or change data.batch_size"
        )
