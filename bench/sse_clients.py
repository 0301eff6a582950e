"""Many Server-Sent-Events clients in one process, for bench.api_bench.

    python -m bench.sse_clients HOST PORT PATHS OUT

PATHS holds one request path per client, separated by '|' (e.g. `/stream?kind=reading`). Opens
one HTTP/1.1 connection per path, prints `ready` once every stream is open, and records each
`reading` event with the wall time its bytes arrived. Stops on a line `stop` on stdin (or EOF),
then writes OUT (JSON): per client, its path, its events as [device_id, event time (ns),
received (ns)], and whether the server sent `overflow`, closed the stream, or failed. A line
`count` asks for the number of events received so far (all clients), printed as a line.

Kept minimal on purpose (asyncio streams, chunked decoding by hand, JSON parsed after the run):
the clients share the machine with the API under test, and should cost it as little CPU as
possible while the events flow.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from api.core.times import parse_rfc3339


@dataclass
class Client:
    path: str
    raw: list[tuple[int, bytes]] = field(default_factory=list)  # (received ns, data line)
    overflow: bool = False
    closed: bool = False
    error: str | None = None


def _dechunk(buf: bytes, decoded: bytearray) -> tuple[bytes, bool]:
    """Move the complete chunks of `buf` into `decoded`; (the rest, whether the last chunk came)."""
    ended = False
    while (eol := buf.find(b"\r\n")) >= 0:
        size = int(buf[:eol].split(b";", 1)[0], 16)
        if len(buf) < eol + 2 + size + 2:
            break
        decoded += buf[eol + 2 : eol + 2 + size]
        buf = buf[eol + 2 + size + 2 :]
        ended |= size == 0
    return buf, ended


def _frames(client: Client, decoded: bytearray, received: int, connected: asyncio.Event) -> None:
    """Take the complete events out of `decoded`."""
    while (end := decoded.find(b"\n\n")) >= 0:
        frame = bytes(decoded[:end])
        del decoded[: end + 2]
        if frame.startswith(b": connected"):
            connected.set()
        elif frame.startswith(b"event: reading"):
            start = frame.find(b"\ndata: ")
            client.raw.append((received, frame[start + 7 :]))
        elif frame.startswith(b"event: overflow"):
            client.overflow = True


async def _run_client(
    client: Client, host: str, port: int, connected: asyncio.Event, stop: asyncio.Event
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"GET {client.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 200 " not in status + b" ":
            client.error = status.decode(errors="replace")
            connected.set()
            return
        chunked = b"transfer-encoding: chunked" in head.lower()
        buf = b""
        decoded = bytearray()
        read = asyncio.ensure_future(reader.read(1 << 16))
        stopping = asyncio.ensure_future(stop.wait())
        while True:
            done, _ = await asyncio.wait({read, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if read not in done:
                read.cancel()
                return
            data = read.result()
            received = time.time_ns()
            if not data:
                client.closed = True
                return
            if chunked:
                buf, ended = _dechunk(buf + data, decoded)
                client.closed |= ended
            else:
                decoded += data
            _frames(client, decoded, received, connected)
            if client.closed:
                return
            read = asyncio.ensure_future(reader.read(1 << 16))
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        client.error = f"{type(exc).__name__}: {exc}"
        connected.set()
    finally:
        writer.close()


async def run(host: str, port: int, paths: list[str], out: Path) -> None:
    clients = [Client(p) for p in paths]
    stop = asyncio.Event()
    flags = [asyncio.Event() for _ in clients]
    tasks = [
        asyncio.create_task(_run_client(c, host, port, f, stop))
        for c, f in zip(clients, flags, strict=True)
    ]
    await asyncio.wait_for(asyncio.gather(*(f.wait() for f in flags)), 60)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == "stop":
            break
        if line.strip() == "count":  # events received so far, all clients
            print(sum(len(c.raw) for c in clients), flush=True)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    result = []
    for c in clients:
        events = []
        for received, data in c.raw:
            body = orjson.loads(data)
            events.append((body["device_id"], parse_rfc3339(body["time"]), received))
        result.append(
            {
                "path": c.path,
                "events": events,
                "overflow": c.overflow,
                "closed": c.closed,
                "error": c.error,
            }
        )
    out.write_bytes(orjson.dumps(result))
    print("done", flush=True)


def main() -> None:
    host, port, paths, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    asyncio.run(run(host, port, paths.split("|"), out))


if __name__ == "__main__":
    main()
