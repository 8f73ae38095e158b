"""User-facing errors: the CLI prints these as one line and exits with code 2."""


class UserError(Exception):
    """A problem with the user's input (config, data, arguments), not a bug."""


class ConfigError(UserError):
    pass


class DataError(UserError):
    pass


class TrainingDiverged(Exception):
    """A non-finite loss or gradient stopped training (train.on_nonfinite: stop).

    Raised after the run directory holds the weights from before the failing update.
    """


class RunInterrupted(Exception):
    """SIGINT or SIGTERM: the update in flight was finished and a checkpoint saved (exit 128 + signal)."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class Paused(Exception):
    """A run stopped on purpose after update `step` (RunSetup.pause_after), its checkpoint saved there:
    how paritykit.locate brings a run to the state before an update with the config unchanged."""

    def __init__(self, step: int, checkpoint: object):
        super().__init__(f"paused after update {step}: checkpoint {checkpoint}")
        self.step, self.checkpoint = step, checkpoint
