"""Test-only: run our engine in a namespace and write the CHILD SA keys it
derives to a file, so a test can compare them with the keys charon logs
(debug level 4). The product itself never exports keys.

usage: python -m tests.interop.keys_probe POLICY OUT.json [--initiate NAME] [--seconds N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

from engine.datapath.base import NullDatapath
from engine.policy.parse import load_policy
from engine.runtime.engine import EngineRuntime


class RecordingDatapath(NullDatapath):
    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = out
        self.records: list[dict] = []

    def install(self, ev) -> None:
        super().install(ev)
        k = ev.keys
        self.records.append({
            "spi_in": f"{ev.spi_in:08x}", "spi_out": f"{ev.spi_out:08x}", "initiator": ev.initiator,
            "encr_in": k.encr_in.reveal().hex(), "integ_in": k.integ_in.reveal().hex(),
            "encr_out": k.encr_out.reveal().hex(), "integ_out": k.integ_out.reveal().hex(),
        })
        fd = os.open(self.out + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.records, f)
        os.replace(self.out + ".tmp", self.out)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("policy")
    ap.add_argument("out")
    ap.add_argument("--initiate")
    ap.add_argument("--seconds", type=float, default=10)
    a = ap.parse_args()
    rt = EngineRuntime(load_policy(a.policy), datapath=RecordingDatapath(a.out))
    await rt.start()
    if a.initiate:
        rt.initiate(a.initiate)
    await asyncio.sleep(a.seconds)
    await rt.stop()


if __name__ == "__main__":
    asyncio.run(main())
