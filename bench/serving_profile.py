"""Where the serving path's time goes: py-spy samples the local endpoint under load."""

from __future__ import annotations

import asyncio
import collections
import subprocess
import tempfile
from pathlib import Path

from common import ROOT, drive, shaped
from servers import Targets


def profile(seconds: int = 12, top: int = 12) -> dict:
    """The functions holding the most samples (inclusive), as shares of all samples."""
    out = Path(tempfile.mkdtemp(prefix="bench-profile-")) / "raw.txt"

    async def run() -> None:
        targets = Targets(["local endpoint"], "auto")
        await targets.start()
        try:
            call = targets.call("local endpoint")
            await call(shaped(1, 8)[0])
            spy = subprocess.Popen([str(ROOT / ".venv" / "bin" / "py-spy"), "record", "--pid",
                                    str(targets.processes["local endpoint"].pid), "--duration", str(seconds),
                                    "--format", "raw", "--threads", "--nonblocking", "-o", str(out)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while spy.poll() is None:
                await drive(call, shaped(64, 8), 16)
        finally:
            await targets.stop()

    asyncio.run(run())
    inclusive: collections.Counter = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        for frame in set(stack.split(";")[1:]):
            inclusive[frame] += int(count)
    skip = ("threading.py", "concurrent/futures", "runners.py", "uvicorn/server.py", "_compat.py", "<module>")
    rows = [(frame, n) for frame, n in inclusive.most_common(200) if not any(s in frame for s in skip)]
    return {"samples": total, "top": [{"frame": frame, "share": round(n / total, 3)} for frame, n in rows[:top]]}
