"""A trivial OpenAI-shaped SSE endpoint on raw asyncio, to measure the load client alone.
``python -m benchmarks.trivial_server PORT``: answers GET /v1/models and streams a
one-token completion with usage and [DONE] for any POST; ``GET /stats`` answers how many
POSTs it has served (tests wait on it)."""

from __future__ import annotations

import asyncio
import json
import sys

MODELS = json.dumps({"object": "list", "data": [{"id": "trivial", "max_model_len": 1 << 20}]})
CHUNK = ("data: " + json.dumps({"choices": [{"index": 0, "text": "x", "finish_reason": "length"}],
                                "augserve": {"tokens": 1}}) + "\n\n"
         + "data: " + json.dumps({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                                          "total_tokens": 2}}) + "\n\ndata: [DONE]\n\n")


SERVED = [0]


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length:
                await reader.readexactly(length)
            if head.startswith(b"GET /stats"):
                body, ctype = json.dumps({"served": SERVED[0]}).encode(), b"application/json"
            elif head.startswith(b"GET"):
                body, ctype = MODELS.encode(), b"application/json"
            else:
                SERVED[0] += 1
                body, ctype = CHUNK.encode(), b"text/event-stream"
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: " + ctype + b"\r\ncontent-length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
