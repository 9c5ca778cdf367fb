"""Latency through the local stack: a send-message job put on the queue -> the ``message.new`` frame at a
connected WebSocket client (run: python bench/bench_local_latency.py [--jobs 200]).

Starts ``switchboard dev`` in a subprocess (free ports, a fresh data dir), connects the recipient with a real
WebSocket client, then sends the jobs one at a time and times each from just before ``SendMessage`` to the
frame's arrival. Reported: median, p90, max. The path measured is SQS (moto server) -> the poller's long
poll -> SendMessageFunction -> PostgreSQL -> @connections POST -> the gateway -> the client socket.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()

    from infra.dev_demo import mint_token, receive, seed_conversation, send_text
    from tests.e2e.test_local_stack import RunningStack

    with tempfile.TemporaryDirectory() as tmp:
        stack = RunningStack(Path(tmp))
        stack.start(fresh=True)
        try:
            from websockets.sync.client import connect

            conversation, (alice, bob) = seed_conversation(stack.info, ["Alice", "Bob"])
            url = f"{stack.info['websocket_url']}?token={mint_token(stack.info, bob)}"
            latencies = []
            with connect(url) as bob_ws:
                for i in range(args.jobs + 5):
                    message_id = str(uuid.uuid4())
                    started = time.perf_counter()
                    send_text(stack.info, conversation, alice, f"ping {i}", message_id=message_id)
                    receive(
                        bob_ws,
                        lambda f, m=message_id: f.get("type") == "message.new" and f["message"]["id"] == m,
                        timeout=30,
                    )
                    if i >= 5:  # the first few warm the pollers and connection pools
                        latencies.append((time.perf_counter() - started) * 1000)
            latencies.sort()
            print(
                json.dumps(
                    {
                        "jobs": len(latencies),
                        "median_ms": round(statistics.median(latencies), 1),
                        "p90_ms": round(latencies[int(len(latencies) * 0.9) - 1], 1),
                        "max_ms": round(latencies[-1], 1),
                    }
                )
            )
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
