"""Micro-batching: images of concurrent requests gathered for a few milliseconds into one forward pass."""

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Callable


class MicroBatcher:
    """
    Gathers items submitted by concurrent requests into batches and runs `score` on each batch in one worker thread
    (the model runs one batch at a time; requests keep being read and decoded meanwhile, and wait in the queue).

    A batch starts with the first waiting item and takes more until it holds `max_batch_size` or `max_wait_ms` have
    passed since it started; items that arrived while the previous batch ran are taken at once.

    Args:
        score (`Callable[[list], list]`): answers for a list of items, in order (e.g. `Predictor.score`).
        max_batch_size (`int`, *optional*, defaults to 16): the most items in one call of `score`.
        max_wait_ms (`float`, *optional*, defaults to 5.0): how long a batch waits for more items.
        on_batch (`Callable[[int], None]`, *optional*): told the size of every batch (metrics).

    Example:

    ```python
    >>> import asyncio
    >>> from dualsight_hf.serve.batching import MicroBatcher
    >>> async def main():
    ...     sizes = []
    ...     batcher = MicroBatcher(lambda items: [item * 2 for item in items], on_batch=sizes.append)
    ...     batcher.start()
    ...     answers = await asyncio.gather(*(batcher.submit(i) for i in range(5)))
    ...     await batcher.stop()
    ...     return answers, sum(sizes)
    >>> asyncio.run(main())
    ([0, 2, 4, 6, 8], 5)
    ```
    """

    def __init__(self, score: Callable[[list], list], max_batch_size: int = 16, max_wait_ms: float = 5.0,
                 on_batch: Callable[[int], None] | None = None):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.score, self.max_batch_size, self.max_wait = score, max_batch_size, max_wait_ms / 1000
        self.on_batch = on_batch
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="dualsight-model")

    def start(self) -> None:
        """Start gathering (inside the running event loop)."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop gathering; items still waiting get a `RuntimeError`."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._queue and not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(RuntimeError("the service is shutting down"))
        self._executor.shutdown(wait=True)

    async def submit(self, item):
        """The answer for one item, once the batch it joined has run."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _gather(self) -> list:
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            batch = [(item, future) for item, future in batch if not future.cancelled()]  # clients that left
            if not batch:
                continue
            if self.on_batch:
                self.on_batch(len(batch))
            try:
                answers = await loop.run_in_executor(self._executor, self.score, [item for item, _ in batch])
            except Exception as error:  # the whole batch failed: every request in it hears why
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), answer in zip(batch, answers):
                if not future.done():
                    future.set_result(answer)
