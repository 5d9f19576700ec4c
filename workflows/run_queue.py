"""The DBOS queue runs go through. Starting, forking, resuming and taking over a run enqueue it
here; every worker of a pool listens to the pool's queue and dequeues runs while it has room.

DBOS keeps a queue's limits in `dbos.queues` and each worker reloads them at every poll, so they
are the pool's, not one process's: the last worker (of the latest application version) to start
sets them for all."""

from dataclasses import dataclass

from dbos import DBOS


@dataclass(frozen=True, kw_only=True)
class RunQueue:
    name: str = "keel_runs"
    worker_concurrency: int | None = None
    """Runs one worker works on at once; a run waiting for an approval or a durable sleep gives its slot
    back while it waits (`steps.dbos_seam.off_the_queue`); None: no bound."""
    global_concurrency: int | None = None
    """Runs all the queue's workers execute at once; None: no limit."""
    polling_interval: float = 0.1
    """Seconds between a worker's polls: bounds how long a queued run waits while a worker has room."""
    max_queued: int | None = None
    """Runs that may wait in the queue before new ones are refused (`QueueFull`); None: no bound."""

    def listen(self) -> None:
        """Before `DBOS.launch()`: this process dequeues only from this queue (and DBOS's internal one)."""
        global _queue
        _queue = self
        DBOS.listen_queues([self.name])

    async def register(self) -> None:
        """After `DBOS.launch()`: create the queue, or update its limits, in `dbos.queues`."""
        await DBOS.register_queue_async(self.name, worker_concurrency=self.worker_concurrency,
                                        global_concurrency=self.global_concurrency, polling_interval_sec=self.polling_interval)


_queue = RunQueue()


def current() -> RunQueue:
    """The queue this process enqueues runs on: its own."""
    return _queue
