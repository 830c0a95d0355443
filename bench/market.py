"""Benchmark: the base price of paid tasks under a load step (docs/ledger.md §12.4).

Drives the ledger's own settlement function (meshcore.ledger.settle) epoch by
epoch, with a synthetic market of requesters. Each requester values 1000 units
of work at a price drawn once, uniformly from 0 to ``--max-value``. Each
epoch, every requester whose value is at least the base price locks the
base price and has one task of 1000 units done. The receipt pays exactly the
base fee: the tip is 0, so the burn is the whole payment. Before
``--step-at``, ``--requesters`` requesters take part; from it on, twice as
many (the load step).

The baseline, computed in the same run, is the price at which demand
equals the target: ``max_value · (1 - target / requesters)``. Printed per
epoch range: the base price, its ratio to that equilibrium, and the use (paid
units / target). Also printed: the epochs after the step until the use stays
within ±10 % of the target, and the largest deviation after that.

Run from the repository root: ``.venv/bin/python bench/market.py [--json]``
(a few seconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import random
from typing import Any

import output

from mesh.ledger.v1 import ledger_pb2
from meshcore.genesis import MarketPolicy
from meshcore.ledger import entry
from meshcore.ledger.evidence_rules import encode_claim, sign_claim
from meshcore.ledger.settle import settle
from meshcore.ledger.state import Account, Params, Settled
from meshcore.ledger.stateroot import state_root

NET = "net_benchmarketxxxxxxxxxxxxxxxx"
UNITS = 1000  # per task: the base price is per 1000 units
PLUGIN = "compute"


class Requester:
    def __init__(self, n: int, value: int) -> None:
        self.seed = hashlib.sha256(b"requester %d" % n).digest()
        self.key = entry.public_key(self.seed)
        self.value = value
        self.head: tuple[int, bytes] = (0, b"")

    def write(self, epoch: int, **kind: Any) -> entry.Verified:
        seq, prev = self.head
        body = ledger_pb2.EntryBody(network_id=NET, author=self.key, seq=seq + 1, prev=prev,
                                    epoch=epoch, **kind)
        item = entry.verify(entry.sign(self.seed, body), NET)
        self.head = (item.seq, item.hash)
        return item


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    provider_seed = hashlib.sha256(b"provider").digest()
    provider = entry.public_key(provider_seed)
    people = [Requester(i, rng.randint(0, args.max_value)) for i in range(2 * args.requesters)]
    market = MarketPolicy(base_price=args.start_price, min_base_price=1,
                          target_units=args.target * UNITS, max_change_bps=1250)
    params = dataclasses.replace(Params(), market=market)
    state = Settled(epoch=-1, params=params, params_after=params, network_id=NET,
                    accounts={p.key: Account(liquid=10**12) for p in people},
                    base_price=args.start_price, supply=10**12 * len(people))
    rows = []
    for epoch in range(args.epochs):
        active = people[:args.requesters if epoch < args.step_at else 2 * args.requesters]
        price = state.base_price
        cut = []
        for n, person in enumerate(active):
            if person.value < price:
                continue
            task = hashlib.sha256(b"%d %d" % (epoch, n)).digest()
            cut.append(person.write(epoch, lock=ledger_pb2.EscrowLock(
                task=task, amount=max(1, price), until=epoch + 2)))
            claim = encode_claim(ledger_pb2.TaskClaim(
                network_id=NET, task_id=hashlib.sha256(task + provider).digest(),
                plugin=PLUGIN, requester=person.key, provider=provider, epoch=epoch,
                units=UNITS, result_digest=bytes(32), price=max(1, price), escrow=task))
            cut.append(person.write(epoch, task_receipt=ledger_pb2.TaskReceipt(
                claim=claim, provider_signature=sign_claim(provider_seed, claim))))
        state = settle(state, epoch, 1, hashlib.sha256(b"%d" % epoch).digest(), cut).settled
        state_root(state)  # the market state is encoded (and hashed) every epoch
        used = sum(p.units for p in state.record.payments if p.paid) // UNITS
        requesters = len(active)
        equilibrium = args.max_value * (1 - args.target / requesters)
        rows.append({"epoch": epoch, "requesters": requesters, "base_price": price,
                     "equilibrium": round(equilibrium, 1),
                     "ratio": round(price / equilibrium, 3) if equilibrium else None,
                     "tasks": used, "use": round(used / args.target, 3),
                     "burned": sum(p.burned for p in state.record.payments)})
    after = [r for r in rows if r["epoch"] >= args.step_at]
    settled_at = next((r["epoch"] for i, r in enumerate(after)
                       if all(abs(x["use"] - 1) <= 0.1 for x in after[i:])), None)
    tail = [r for r in after if settled_at is not None and r["epoch"] >= settled_at]
    return {"target_tasks": args.target, "requesters_before": args.requesters,
            "requesters_after": 2 * args.requesters, "step_at": args.step_at,
            "epochs_to_within_10pct": None if settled_at is None else settled_at - args.step_at,
            "largest_deviation_after": max((abs(r["use"] - 1) for r in tail), default=None),
            "rows": rows}


def table(results: dict[str, Any]) -> None:
    print(f"base price under a load step: {results['requesters_before']} requesters, then "
          f"{results['requesters_after']} from epoch {results['step_at']}; target "
          f"{results['target_tasks']} tasks of {UNITS} units per epoch; max change 12.5 %")
    print(f"{'epoch':>5} {'reqs':>5} {'base':>6} {'equil.':>7} {'ratio':>6} {'tasks':>6} "
          f"{'use':>6}")
    for r in results["rows"]:
        if r["epoch"] % 4 == 0 or r["epoch"] in (results["step_at"] - 1, results["step_at"]):
            print(f"{r['epoch']:>5} {r['requesters']:>5} {r['base_price']:>6} "
                  f"{r['equilibrium']:>7} {r['ratio']!s:>6} {r['tasks']:>6} {r['use']:>6}")
    within = results["epochs_to_within_10pct"]
    print(f"use within ±10 % of the target {within} epochs after the step, for good "
          f"(largest deviation after: {results['largest_deviation_after']})"
          if within is not None else "use never stayed within ±10 % of the target")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requesters", type=int, default=150)
    parser.add_argument("--target", type=int, default=100, help="tasks per epoch")
    parser.add_argument("--max-value", type=int, default=200)
    parser.add_argument("--start-price", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--step-at", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    output.emit(run(args), args.json, table)


if __name__ == "__main__":
    main()
