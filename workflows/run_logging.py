"""How the log tells of a run that failed the expected way.

DBOS logs every exception that ends a workflow as an ERROR with its traceback (`_core.py`,
"Exception encountered in asynchronous workflow"). A run that ends with `RunFailed` (a tool
refused, retries ran out, a person said no) is no fault of the service: the run records its reason,
and the log gets one line that names the run and the reason. Anything else keeps its traceback."""

import logging

from dbos import DBOS

from steps.errors import RunFailed

DBOS_LOGGER = "dbos"


class RunFailuresOnOneLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        failure = record.exc_info[1] if record.exc_info else None
        if isinstance(failure, RunFailed):
            # DBOS logs it inside the workflow's context, so the run is the current workflow.
            record.msg, record.args = "run %s failed (%s): %s", (DBOS.workflow_id, failure.reason, failure.message)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


def log_run_failures_on_one_line() -> None:
    """Install the filter on DBOS's logger (once; calling again changes nothing)."""
    logger = logging.getLogger(DBOS_LOGGER)
    if not any(isinstance(existing, RunFailuresOnOneLine) for existing in logger.filters):
        logger.addFilter(RunFailuresOnOneLine())
