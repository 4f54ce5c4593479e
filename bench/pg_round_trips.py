"""Messages the tracker sends to Postgres per protocol call, from an strace log of lease_bench.

Each `sendto` on a Postgres socket is one message batch the server waits on (a query, a ping,
BEGIN or COMMIT), so the count per call is the round trips that call costs. Run:

    strace -f -e trace=sendto,recvfrom -s 100 -o /tmp/rt.trace \
        target/release/examples/lease_bench --workers 1 --seconds 8 --step-ms 100 \
        --backend postgresql://postgres@127.0.0.1:55432/postgres
    python3 bench/pg_round_trips.py /tmp/rt.trace

The sends between the server's read of one HTTP request and its read of the next are counted
for the first; the first three calls of each kind are skipped (they prepare statements).
"""
import collections
import re
import sys

REQUEST = re.compile(r'recvfrom\(\d+, "(?:POST|GET) (\S+)')
SEND = re.compile(r'sendto\(\d+, "')


def kind(path: str) -> str:
    for name in ("lease", "report", "complete", "register"):
        if path.endswith(name):
            return name
    return "other"


def main(log_path: str) -> None:
    counts: dict[str, list[int]] = collections.defaultdict(list)
    current, sent = None, 0
    with open(log_path, encoding="utf-8", errors="replace") as log:
        for line in log:
            request = REQUEST.search(line)
            if request:
                if current:
                    counts[current].append(sent)
                current, sent = kind(request.group(1)), 0
            elif current and SEND.search(line):
                sent += 1
    for name, values in sorted(counts.items()):
        values = values[3:] or values
        print(f"{name:<9} calls {len(values):4d}  messages per call: mean {sum(values) / len(values):.1f}  min {min(values)}  max {max(values)}")


if __name__ == "__main__":
    main(sys.argv[1])
