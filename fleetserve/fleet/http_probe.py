"""One small HTTP GET on its own connection, for health checks and load samples:
no pool to queue behind requests, no client library to import."""

from __future__ import annotations

import asyncio

from fleetserve.fleet.discovery import host_port


async def http_get(url: str, path: str, timeout: float = 1.0) -> tuple[int, bytes]:
    """(status, body) of GET url+path; (0, b"") when it cannot be reached in time. Reads exactly
    the answer (Content-Length or chunked), so a server that keeps the connection open after
    "Connection: close" does not stall it."""
    host, port = host_port(url)
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n"
                         % (path.encode(), host.encode(), port))
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b"\r\n", 1)[0].split()[1])
            headers = {}
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            if b"content-length" in headers:
                body = await reader.readexactly(int(headers[b"content-length"]))
            elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                body = bytearray()
                while size := int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"0", 16):
                    body += await reader.readexactly(size)
                    await reader.readexactly(2)
                body = bytes(body)
            else:
                body = await reader.read()
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
            ValueError, IndexError):
        return 0, b""
    finally:
        if writer is not None:
            writer.close()
    return status, body
