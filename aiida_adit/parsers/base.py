"""What every ``adit`` parser shares: the exit status, the error line, scheduler verdicts.

The order of evidence: the exit status ``adit`` wrote itself (``_adit_status``, and
under ``torchrun`` the files of failing workers), else the shell's ``$?`` written
after the command (see :mod:`aiida_adit.calculations.base`), then the scheduler's
own verdict (aiida-core's 110/120 exit codes or Slurm's messages in
``_scheduler-stderr.txt``), then the run's files. No status file at all means the
job script was cut off.
"""

from __future__ import annotations

import json
import math

from aiida.engine import ExitCode
from aiida.parsers import Parser

from aiida_adit.calculations.base import EXIT_STATUS_NAME, STATUS_NAME, STDERR_NAME

#: `adit` exit statuses (adit_torch.cli.EXIT_CODES) mapped to exit-code labels of the CalcJobs.
STATUS_LABELS = {
    2: "ERROR_BAD_INPUT",
    3: "ERROR_CORRUPT_CHECKPOINT",
    4: "ERROR_NAN_LOSS",
    5: "ERROR_OUT_OF_MEMORY",
    137: "ERROR_OUT_OF_MEMORY",  # killed by SIGKILL: the kernel's OOM killer in practice
}
#: Which worker status to report when several processes failed differently (the cause before its echoes:
#: an out-of-memory worker makes the others fail too).
STATUS_PRIORITY = (5, 4, 3, 2, 6, 137, 1)
_WALLTIME_MARKERS = ("DUE TO TIME LIMIT", "TIME LIMIT", "walltime")
_MEMORY_MARKERS = ("oom-kill", "Out Of Memory", "out of memory", "OOM Killed")


def finite_json(value):
    """``value`` with every non-finite float (NaN, inf) replaced by None, recursively (``Dict`` nodes need JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite_json(item) for item in value]
    return value


class AditParser(Parser):
    """Base parser: reads the evidence every ``adit`` run leaves behind."""

    def read_text(self, name: str) -> str | None:
        """The content of ``name`` in ``retrieved``, or None when it is absent."""
        try:
            return self.retrieved.base.repository.get_object_content(name, mode="r")
        except (FileNotFoundError, OSError):
            return None

    def read_json(
        self, name: str, required: bool = False, required_list: str | None = None
    ) -> dict | ExitCode | None:
        """``name`` in ``retrieved`` as a JSON object with non-finite floats made None (see :func:`finite_json`).

        Returns, when the file is absent, ``ERROR_MISSING_OUTPUT`` if ``required`` else None;
        ``ERROR_UNREADABLE_OUTPUT`` naming the file when it is not a JSON object or, with
        ``required_list``, lacks a list under that key.
        """
        text = self.read_text(name)
        if text is None:
            return self.exit_codes.ERROR_MISSING_OUTPUT.format(filename=name) if required else None
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            return self.exit_codes.ERROR_UNREADABLE_OUTPUT.format(filename=name, error=str(exc))
        if not isinstance(payload, dict):
            return self.exit_codes.ERROR_UNREADABLE_OUTPUT.format(filename=name, error="not a JSON object")
        if required_list is not None and not isinstance(payload.get(required_list), list):
            return self.exit_codes.ERROR_UNREADABLE_OUTPUT.format(
                filename=name, error=f"expected an object with a `{required_list}` list"
            )
        return finite_json(payload)

    def _status_in(self, name: str) -> int | None:
        text = self.read_text(name)
        if text is None or not text.strip():
            return None
        try:
            return int(text.strip().splitlines()[-1])
        except ValueError:
            return None

    def exit_status(self) -> int | None:
        """The ``adit`` exit status, or None when nothing wrote it (killed).

        ``adit``'s own status file wins over the shell's ``$?``. With several processes
        (``torchrun``) a failing worker's status wins over rank 0's: the first of
        :data:`STATUS_PRIORITY` found, else any non-zero one.
        """
        try:
            names = self.retrieved.base.repository.list_object_names()
        except (FileNotFoundError, OSError):
            names = []
        statuses = [self._status_in(n) for n in [STATUS_NAME, *sorted(n for n in names
                                                                       if n.startswith(f"{STATUS_NAME}.rank"))]]
        statuses = [s for s in statuses if s is not None]
        if not statuses:
            return self._status_in(EXIT_STATUS_NAME)
        failed = [s for s in statuses if s != 0]
        for status in STATUS_PRIORITY:
            if status in failed:
                return status
        return failed[0] if failed else 0

    def error_line(self) -> str:
        """The last ``error:`` line of the command's stderr (or its last non-empty line)."""
        text = self.read_text(STDERR_NAME) or ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        errors = [line for line in lines if "error:" in line]
        if errors:
            return errors[-1]
        return lines[-1] if lines else "no message on stderr"

    def scheduler_verdict(self) -> str | None:
        """``walltime`` or ``memory`` when the scheduler says it stopped the job, else None."""
        if self.node.exit_status == 120:
            return "walltime"
        if self.node.exit_status == 110:
            return "memory"
        stderr_name = self.node.get_option("scheduler_stderr")
        text = (self.read_text(stderr_name) if stderr_name else None) or ""
        if any(marker in text for marker in _WALLTIME_MARKERS):
            return "walltime"
        if any(marker in text for marker in _MEMORY_MARKERS):
            return "memory"
        return None

    def exit_for_status(self, status: int) -> ExitCode:
        """The exit code for a non-zero ``adit`` exit status."""
        error = self.error_line()
        label = STATUS_LABELS.get(status)
        if label is not None and label in self.exit_codes:
            return self.exit_codes[label].format(error=error)
        return self.exit_codes.ERROR_ADIT_FAILED.format(status=status, error=error)

    def exit_for_run(self, accepted: tuple[int, ...] = (0,)) -> ExitCode | None:
        """The exit code of a run that failed or was cut off, or None when parsing should go on.

        ``accepted``: ``adit`` exit statuses that the calling parser handles itself.
        """
        status = self.exit_status()
        if status is None:
            return self.exit_for_killed()
        if status not in accepted:
            return self.exit_for_status(status)
        return None

    def exit_for_killed(self) -> ExitCode | None:
        """The exit code when the job was cut off (no exit status written), else None."""
        verdict = self.scheduler_verdict()
        if verdict == "memory":
            return self.exit_codes.ERROR_OUT_OF_MEMORY.format(error="stopped by the scheduler")
        if verdict == "walltime":
            return self.exit_codes.ERROR_OUT_OF_WALLTIME
        return None
