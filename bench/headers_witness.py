"""The rate-limit headers witness's cost: recording an answer's headers in the ledger, and the check's seconds per
answer, for synthetic identities whose every answer carried them (Limitador's fixed windows of 2 per 120 s deciding
each, the headers as Limitador builds them; an honest gateway, so every case must hold).

Run from the repository root: `python bench/headers_witness.py [--users 2000] [--per-user 2000] [--gap 0.3]`
(`--gap`: the mean seconds between one identity's requests, Poisson; the check compares each answer with the
earlier answers of its window, so its cost per answer grows with the answers a window holds).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chargeback.headers import rate_limit_headers_agree  # noqa: E402
from chargeback.ledger import Ledger  # noqa: E402
from chargeback.plan import Rate  # noqa: E402

FREE = '2, 2;w=120;name="free-user-requests"'
RATE = Rate("free-user-requests", 2, 120.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--per-user", type=int, default=2000)
    parser.add_argument("--gap", type=float, default=0.3)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    ledger = Ledger()
    took = 0.0
    for u in range(args.users):
        sent = 1000.0 + np.cumsum(rng.exponential(args.gap, args.per_user))
        opened, value = -1e9, 0
        for t in sent.tolist():
            if t >= opened + 120:
                opened, value = t, 0
            allowed = value < 2
            value += allowed
            start = time.perf_counter()
            ledger.record(f"u{u}", "free", t, t + 0.05, 200 if allowed else 429, None, 0, "",
                          (2 - value, int(opened + 120 - t), FREE))
            took += time.perf_counter() - start
    answers = args.users * args.per_user
    print(f"ledger.record with headers: {took / answers * 1e6:.2f} us an answer")
    v = SimpleNamespace(record=SimpleNamespace(ledger=ledger, plan=SimpleNamespace(limits=[])))
    start = time.perf_counter()
    held = 0
    for u in range(args.users):
        check = SimpleNamespace(user=f"u{u}", client=ledger.accounts[f"u{u}"], rates=[RATE], resets=0)
        held += rate_limit_headers_agree(check, RATE, v).holds  # type: ignore[arg-type]
    took = time.perf_counter() - start
    print(f"witness: {took:.1f} s for {answers} answers ({took / answers * 1e6:.2f} us an answer, "
          f"~{120 / args.gap:.0f} answers a window); {held} of {args.users} cases hold")
    return 0 if held == args.users else 1


if __name__ == "__main__":
    sys.exit(main())
