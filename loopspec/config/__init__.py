"""The run configuration shared by both backends: schema, loading and validation rules.

schema.py  the sections as frozen dataclasses (Literal choices, ranges in field metadata)
load.py    files, --set overrides and raw dicts -> Config
rules.py   field checks and the rules between fields; values derived from the config
"""

from typing import get_args

from loopspec.config.load import (
    apply_override,
    as_config,
    config_from_dict,
    config_path,
    load_config,
    read_config_file,
    recipe_names,
    resolved_config,
)
from loopspec.config.rules import (
    FILE_DATASETS,
    RULES,
    Rule,
    monitor_mode,
    resolved_eps,
    resolved_weight_decay,
    schedule_interval,
)
from loopspec.config.schema import (
    CheckpointConfig,
    Config,
    DataConfig,
    EarlyStoppingConfig,
    LossConfig,
    LossScaleConfig,
    ModelConfig,
    OptimizerConfig,
    Precision,
    ScheduleConfig,
    TrainConfig,
)
from loopspec.errors import ConfigError

PRECISIONS = get_args(Precision)
DTYPES = {"float32": "fp32", "float64": "fp64"}  # the CLI's --dtype shorthand

__all__ = [
    "Config",
    "DataConfig",
    "ModelConfig",
    "LossConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "TrainConfig",
    "EarlyStoppingConfig",
    "LossScaleConfig",
    "CheckpointConfig",
    "ConfigError",
    "FILE_DATASETS",
    "PRECISIONS",
    "DTYPES",
    "RULES",
    "Rule",
    "load_config",
    "as_config",
    "config_path",
    "recipe_names",
    "config_from_dict",
    "read_config_file",
    "apply_override",
    "resolved_config",
    "schedule_interval",
    "monitor_mode",
    "resolved_eps",
    "resolved_weight_decay",
]
