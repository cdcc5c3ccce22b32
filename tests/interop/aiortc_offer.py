"""aiortc (an independent Python WebRTC stack) offers; beeline's dc-echo
answers. Moves 10 MB and 1,000 small messages through the echo and checks
them. Exits 0 on success. Run by aiortc.test.mjs inside run.sh's namespace.

Signaling is dc-echo's stdin/stdout lines. aiortc gathers fully before it
answers setLocalDescription, so its candidates travel inside the offer.
"""

import asyncio
import os
import sys
import time

from aiortc import RTCPeerConnection, RTCSessionDescription

TOTAL = 10 * 1024 * 1024
CHUNK = 64 * 1024
SMALL = 1000


def pattern(seed: int, length: int) -> bytes:
    x = (seed * 2654435761 + 1) & 0xFFFFFFFF
    out = bytearray(length)
    for i in range(length):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        out[i] = x & 0xFF
    return bytes(out)


async def main() -> int:
    echo = await asyncio.create_subprocess_exec(
        sys.argv[1], "answer", "--allow", "127.0.0.0/8",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    pc = RTCPeerConnection()
    channel = pc.createDataChannel("echo")
    opened = asyncio.Event()
    channel.on("open", opened.set)
    received: asyncio.Queue = asyncio.Queue()
    channel.on("message", received.put_nowait)

    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp.replace("\r\n", "\\n")
    echo.stdin.write(f"sdp {sdp}\n".encode())
    await echo.stdin.drain()

    async def read_signals():
        while line := await echo.stdout.readline():
            line = line.decode().rstrip("\n")
            if line.startswith("sdp "):
                answer = line[4:].replace("\\n", "\r\n")
                await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            # Trickled candidates: aiortc learns beeline's address from the
            # answer's candidates and from its checks; later ones are ignored.

    signals = asyncio.create_task(read_signals())
    await asyncio.wait_for(opened.wait(), 10)

    chunks = (TOTAL + CHUNK - 1) // CHUNK
    started = time.monotonic()
    for i in range(chunks):
        channel.send(pattern(i, min(CHUNK, TOTAL - i * CHUNK)))
        while channel.bufferedAmount > 4 * 1024 * 1024:
            await asyncio.sleep(0.005)
    for i in range(SMALL):
        channel.send(f"small {i}")

    got = 0
    for i in range(chunks):
        data = await asyncio.wait_for(received.get(), 60)
        want = pattern(i, min(CHUNK, TOTAL - i * CHUNK))
        if not isinstance(data, bytes) or data != want:
            print(f"bulk message {i} came back different", flush=True)
            return 1
        got += len(data)
    secs = time.monotonic() - started
    for i in range(SMALL):
        data = await asyncio.wait_for(received.get(), 30)
        if data != f"small {i}":
            print(f"small message {i} came back different: {data!r:.40}", flush=True)
            return 1
    print(f"RESULT ok: {got} bytes and {SMALL} small messages echoed in {secs:.2f} s "
          f"({got / secs / 1e6:.1f} MB/s each way)", flush=True)
    signals.cancel()
    await pc.close()
    echo.stdin.close()
    try:
        await asyncio.wait_for(echo.wait(), 5)
    except asyncio.TimeoutError:
        echo.kill()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
