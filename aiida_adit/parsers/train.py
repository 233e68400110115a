"""Parser of ``adit.train``: checkpoint, metrics and loss curves from a training run."""

from __future__ import annotations

import csv
import io
import math
import os

import numpy as np
from aiida import orm

from adit_torch.cli import INTERRUPTED_STATUSES
from adit_torch.errors import CheckpointError
from aiida_adit.data.checkpoint import CheckpointData
from aiida_adit.parsers.base import AditParser

METRICS_NAME = "metrics.json"
LOG_NAME = "log.csv"


def parse_log(text: str) -> dict[str, np.ndarray]:
    """The numeric columns of ``log.csv`` as float arrays of shape (rows,).

    Non-numeric columns (e.g. a phase name) are skipped; empty cells become NaN.
    """
    rows = list(csv.DictReader(io.StringIO(text)))
    columns: dict[str, np.ndarray] = {}
    if not rows:
        return columns
    for name in rows[0]:
        values = []
        for row in rows:
            cell = (row.get(name) or "").strip()
            try:
                values.append(float(cell) if cell else math.nan)
            except ValueError:
                values = None
                break
        if values is not None and name:
            columns[name] = np.asarray(values, dtype=float)
    return columns


class AditTrainParser(AditParser):
    """Turn a training run folder into ``checkpoint``, ``metrics`` and ``curves`` outputs.

    Exit codes: 300/301 missing or unreadable outputs, 302 bad input, 310 corrupt or
    wrong checkpoint, 400 stopped before the final checkpoint (walltime, or the scheduler's
    SIGTERM at it after the state was saved; resumable from ``remote_folder``), 410 out of memory, 420 NaN loss.
    """

    def parse(self, **kwargs):
        """Parse the retrieved files and the checkpoint fetched to ``retrieved_temporary_folder``."""
        stage = self.node.inputs.settings.get("stage")
        temporary = kwargs.get("retrieved_temporary_folder")
        checkpoint_path = os.path.join(temporary, f"{stage}.safetensors") if temporary else None
        has_checkpoint = checkpoint_path is not None and os.path.isfile(checkpoint_path)

        metrics = self.read_json(METRICS_NAME)
        if isinstance(metrics, dict):
            self.out("metrics", orm.Dict(metrics))
        log = self.read_text(LOG_NAME)
        if log:
            columns = parse_log(log)
            if columns:
                curves = orm.ArrayData()
                for name, values in columns.items():
                    curves.set_array(name, values)
                self.out("curves", curves)

        status = self.exit_status()
        # stopped by a signal (the scheduler's SIGTERM at the time limit) after saving: resumable
        interrupted = (status in INTERRUPTED_STATUSES and isinstance(metrics, dict)
                       and metrics.get("status") == "interrupted")
        if status is None:
            killed = self.exit_for_killed()
            if killed is not None:
                return killed
            if not has_checkpoint and (log or metrics is not None):
                # The job script was cut off after training had started: walltime, the state stays remote.
                return self.exit_codes.ERROR_OUT_OF_WALLTIME
        elif status != 0 and not interrupted:
            return self.exit_for_status(status)

        if metrics is None:
            return self.exit_codes.ERROR_MISSING_OUTPUT.format(filename=METRICS_NAME)
        if not isinstance(metrics, dict):
            return metrics
        if not has_checkpoint:
            return self.exit_codes.ERROR_MISSING_OUTPUT.format(filename=f"{stage}.safetensors")
        try:
            checkpoint = CheckpointData(file=checkpoint_path, filename=f"{stage}.safetensors")
        except CheckpointError as exc:
            return self.exit_codes.ERROR_CORRUPT_CHECKPOINT.format(error=str(exc))
        if checkpoint.kind != stage:
            return self.exit_codes.ERROR_CORRUPT_CHECKPOINT.format(
                error=f"the run wrote a `{checkpoint.kind}` checkpoint for stage `{stage}`"
            )
        self.out("checkpoint", checkpoint)
        if metrics.get("status") == "time_limit" or interrupted:
            # Stopped before the walltime (time_limit) or by the scheduler's signal at it (interrupted):
            # checkpoint and state saved, the run can resume.
            return self.exit_codes.ERROR_OUT_OF_WALLTIME
        return None
