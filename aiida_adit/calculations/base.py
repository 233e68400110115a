"""What every ``adit`` CalcJob shares: defaults, exit codes, and how the run is captured.

Each CalcJob runs one ``adit`` sub-command. Its stdout and stderr go to
``adit.out`` / ``adit.err``, and ``adit`` writes its own exit status to
``_adit_status`` (``ADIT_STATUS_FILE``, exported in the job script's prepend
text; under ``torchrun`` a failing worker of rank R writes ``_adit_status.rankR``),
so the parser can tell a bad input (status 2) from a corrupt checkpoint (3), a
NaN loss (4), out of memory (5) or fewer results than asked (6); see
``adit_torch.cli.EXIT_CODES``. No later line of the job script (a user's
``append_text`` such as ``nvidia-smi``) can change that file. The shell's ``$?``
is still written to ``_adit_exit_status`` after the command, and is only read
when ``adit`` wrote nothing (killed, e.g. by the kernel's OOM killer: 137). When
the scheduler kills the job (walltime), neither is written: the parser then
reads the run folder instead.

Exit codes follow the bands users of aiida-quantumespresso know: 3xx
unrecoverable retrieval/parse errors, 4xx-5xx recoverable failures that a
restart work chain can handle.
"""

from __future__ import annotations

from aiida import orm
from aiida.common import datastructures
from aiida.engine import CalcJob

from aiida_adit.data.checkpoint import CheckpointData
from aiida_adit.storage import StoreOutputsInChunks

STDOUT_NAME = "adit.out"
STDERR_NAME = "adit.err"
EXIT_STATUS_NAME = "_adit_exit_status"  # the shell's $? (a fallback: read only when STATUS_NAME is absent)
STATUS_NAME = "_adit_status"  # written by `adit` itself ($ADIT_STATUS_FILE)


def validate_checkpoint_kind(node: CheckpointData, expected: tuple[str, ...], port: str) -> str | None:
    """An error message when ``node`` is not one of the ``expected`` checkpoint kinds, else None."""
    kind = node.base.attributes.get("kind", None)
    if kind not in expected:
        return (
            f"`{port}`: checkpoint<{node.pk or 'unstored'}> is of kind `{kind}`, "
            f"expected {' or '.join(f'`{k}`' for k in expected)}"
        )
    return None


class AditCalculation(StoreOutputsInChunks, CalcJob):
    """Base of the ``adit`` CalcJobs: one machine, one process, no MPI, shared exit codes; outputs stored in chunks."""

    @classmethod
    def define(cls, spec):
        """Defaults and exit codes shared by all ``adit`` CalcJobs."""
        super().define(spec)
        spec.inputs["metadata"]["options"]["resources"].default = {"num_machines": 1, "num_mpiprocs_per_machine": 1}
        spec.inputs["metadata"]["options"]["withmpi"].default = False
        spec.exit_code(
            300, "ERROR_MISSING_OUTPUT", invalidates_cache=True, message="Output file `{filename}` is missing."
        )
        spec.exit_code(
            301,
            "ERROR_UNREADABLE_OUTPUT",
            invalidates_cache=True,
            message="Output file `{filename}` cannot be read: {error}",
        )
        spec.exit_code(
            302, "ERROR_BAD_INPUT", invalidates_cache=True, message="adit rejected its input (status 2): {error}"
        )
        spec.exit_code(
            303,
            "ERROR_ADIT_FAILED",
            invalidates_cache=True,
            message="adit failed with exit status {status}: {error}",
        )
        spec.exit_code(
            310,
            "ERROR_CORRUPT_CHECKPOINT",
            invalidates_cache=True,
            message="A checkpoint is missing, corrupt or of the wrong kind: {error}",
        )
        spec.exit_code(
            400,
            "ERROR_OUT_OF_WALLTIME",
            invalidates_cache=True,
            message="The run was stopped before it finished (walltime); the run folder can be resumed.",
        )
        spec.exit_code(410, "ERROR_OUT_OF_MEMORY", invalidates_cache=True, message="The run ran out of memory: {error}")

    def make_calc_info(
        self,
        cmdline: list[str],
        *,
        retrieve: list[str],
        retrieve_temporary: list[str] | None = None,
        local_copy_list: list | None = None,
        remote_copy_list: list | None = None,
        remote_symlink_list: list | None = None,
        prepend_text: str | None = None,
    ) -> datastructures.CalcInfo:
        """A :class:`CalcInfo` running the code with ``cmdline`` and capturing its exit status.

        :param cmdline: arguments after the executable, e.g. ``["sample", "--checkpoint", ...]``.
        :param retrieve: files kept in the ``retrieved`` folder (stdout, stderr and the
            exit-status file are always added).
        :param retrieve_temporary: files fetched for the parser only and then deleted.
        """
        codeinfo = datastructures.CodeInfo()
        codeinfo.code_uuid = self.inputs.code.uuid
        codeinfo.cmdline_params = [str(arg) for arg in cmdline]
        codeinfo.stdout_name = STDOUT_NAME
        codeinfo.stderr_name = STDERR_NAME

        calcinfo = datastructures.CalcInfo()
        calcinfo.codes_info = [codeinfo]
        calcinfo.retrieve_list = [STDOUT_NAME, STDERR_NAME, EXIT_STATUS_NAME, STATUS_NAME, f"{STATUS_NAME}.rank*",
                                  *retrieve]
        calcinfo.retrieve_temporary_list = list(retrieve_temporary or [])
        calcinfo.local_copy_list = list(local_copy_list or [])
        calcinfo.remote_copy_list = list(remote_copy_list or [])
        calcinfo.remote_symlink_list = list(remote_symlink_list or [])
        # `adit` writes its own status to this file (adit_torch.cli.STATUS_FILE_ENV)
        status_line = f'export ADIT_STATUS_FILE="$PWD/{STATUS_NAME}"'
        calcinfo.prepend_text = status_line if not prepend_text else f"{status_line}\n{prepend_text}"
        # the shell's `$?`, a fallback for runs killed before `adit` could write its status; a user's
        # `options.append_text` placed before this line by aiida-core changes it, not STATUS_NAME
        calcinfo.append_text = f"echo $? > {EXIT_STATUS_NAME}"
        return calcinfo

    @staticmethod
    def checkpoint_copy(node: orm.SinglefileData, target: str) -> tuple[str, str, str]:
        """A ``local_copy_list`` entry copying the file of ``node`` to ``target`` in the run folder."""
        return (node.uuid, node.filename, target)
