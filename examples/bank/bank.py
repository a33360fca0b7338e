"""The bank-account example: event sourcing on Hydra, embedded or against a server.

    python bank.py open acc-001 "Alice"
    python bank.py deposit acc-001 100 "Opening deposit"
    python bank.py withdraw acc-001 30 "ATM withdrawal"
    python bank.py balance acc-001          # its latest snapshot + the events after it
    python bank.py history acc-001
    python bank.py all                      # every event in the log

By default the events live in ./bank-data (``--data DIR``), in an embedded
store. ``--server 127.0.0.1:9090`` (gRPC) or ``--server http://127.0.0.1:8080``
talks to a running Hydra server instead: the same code, one other object.

Every command reads the account's events, decides, and appends with the
version it read as the expected version. If another writer got there first,
the append fails with WrongExpectedVersion and the command starts over from
the new state, so two withdrawals racing for the same money cannot both win.

Every 100th event of an account (``--snapshot-every N``; 0: never) the command
also saves a snapshot of the account's state (``hydra.snapshots.EveryNEvents``),
and loading an account reads its latest snapshot plus only the events after it.
``history`` still shows every event.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

if __package__ in (None, ""):  # run as a script: find account.py beside this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from account import (
    SNAPSHOT_TYPE,
    Account,
    BadInput,
    BankError,
    Change,
    apply,
    check_account_id,
    decide_deposit,
    decide_open,
    decide_withdraw,
    from_snapshot,
    money,
    parse_amount,
    replay,
    snapshot_state,
    stream_of,
)

import hydra
from hydra.snapshots import EveryNEvents, Never, Strategy

# How often a command starts over after losing a race, and how long the embedded
# store is waited for while another bank process holds it.
MAX_ATTEMPTS = 20
LOCK_WAIT = 10.0
SNAPSHOT_EVERY = 100


class Bank:
    """Commands and queries over anything with the embedded Store's methods:
    a ``hydra.Store`` or a ``hydra.client`` client."""

    def __init__(self, store: Any, snapshots: Strategy | None = None) -> None:
        self.store = store
        self.snapshots = snapshots or EveryNEvents(SNAPSHOT_EVERY)
        self.conflicts = 0  # appends that lost a race and were decided again
        self.replayed = 0  # events replayed by the last load
        self.from_version: int | None = None  # the snapshot it started from

    def account(self, account_id: str) -> Account:
        """The account: its latest snapshot, plus the events after it replayed."""
        stream = stream_of(account_id)
        snap = self.store.load_snapshot(stream)
        start = None
        if snap is not None and snap.snapshot_type == SNAPSHOT_TYPE:
            start = from_snapshot(account_id, snap.version, snap.state)
        events = list(self.store.read_stream(
            stream, from_version=None if start is None else start.version))
        self.replayed = len(events)
        self.from_version = None if start is None else start.version - 1
        return replay(account_id, [(e.event_type, e.data) for e in events], start)

    def _snapshot(self, account: Account, event_type: str) -> None:
        version = account.version - 1  # of the event just appended
        stream = stream_of(account.account_id)
        if self.snapshots.should_snapshot(stream, version, event_type):
            try:
                self.store.save_snapshot(stream, version, snapshot_state(account),
                                         SNAPSHOT_TYPE)
            except hydra.HydraError:
                pass  # a snapshot only saves time: the events are what count

    def _execute(self, account_id: str, decide: Callable[[Account], Change],
                 command: str) -> Account:
        # One ID for the command, kept across attempts: if an append landed but its
        # answer was lost, repeating it is recognised as a duplicate, not a second
        # withdrawal.
        event_id = str(uuid.uuid4())
        metadata = json.dumps({"command": command}).encode()
        for attempt in range(MAX_ATTEMPTS):
            account = self.account(account_id)
            change = decide(account)
            try:
                self.store.append(stream_of(account_id), event_id, change.data(),
                                  account.version, change.event_type, metadata)
            except (hydra.WrongExpectedVersion, hydra.StreamExists):
                # Someone else appended since we read: decide again on the new state.
                self.conflicts += 1
                time.sleep(random.uniform(0, 0.005 * (attempt + 1)))
                continue
            after = apply(account, change.event_type, change.body)
            self._snapshot(after, change.event_type)
            return after
        raise BankError(f"account {account_id} is too busy; try again")

    def open(self, account_id: str, owner: str) -> Account:
        return self._execute(account_id, lambda a: decide_open(a, owner), "open")

    def deposit(self, account_id: str, cents: int, note: str) -> Account:
        return self._execute(account_id, lambda a: decide_deposit(a, cents, note), "deposit")

    def withdraw(self, account_id: str, cents: int, note: str) -> Account:
        return self._execute(account_id, lambda a: decide_withdraw(a, cents, note), "withdraw")

    def history(self, account_id: str) -> Iterator[tuple[hydra.RecordedEvent, Account]]:
        """Each event of the account with the state it led to."""
        account = Account(account_id)
        for e in self.store.read_stream(stream_of(account_id)):
            account = apply(account, e.event_type, json.loads(e.data))
            yield e, account


# -- command line ------------------------------------------------------------------


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _describe(event_type: str, data: bytes) -> str:
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("amount_cents"), int):
        return f"{event_type:<15} {money(body['amount_cents']):>12}  {body.get('note', '')}"
    if isinstance(body, dict) and "owner" in body:
        return f"{event_type:<15} {'':>12}  owner: {body['owner']}"
    # Not a bank event (``all`` shows the whole log): its type and raw data.
    return f"{event_type or '-':<15} {data[:60]!r}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bank", description="An event-sourced bank on Hydra.")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--data", default=os.environ.get("BANK_DATA", "bank-data"),
                       help="embedded store directory (default: ./bank-data)")
    where.add_argument("--server", default=None,
                       help="a Hydra server: host:port (gRPC) or http://host:port")
    p.add_argument("--snapshot-every", type=int, default=SNAPSHOT_EVERY, metavar="N",
                   help=f"save a snapshot every N events of an account (default "
                        f"{SNAPSHOT_EVERY}; 0: never)")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("open", help="open an account")
    c.add_argument("id")
    c.add_argument("name")
    for name in ("deposit", "withdraw"):
        c = sub.add_parser(name, help=f"{name} money")
        c.add_argument("id")
        c.add_argument("amount")
        c.add_argument("note", nargs="?", default="")
    for name, text in (("balance", "an account's balance (snapshot + later events)"),
                       ("history", "an account's events")):
        c = sub.add_parser(name, help=text)
        c.add_argument("id")
    sub.add_parser("all", help="every event in the log")
    return p


def _open_store(args: argparse.Namespace) -> Any:
    if args.server:
        from hydra.client import connect

        return connect(args.server)
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            return hydra.open(args.data)
        except hydra.StoreLocked:
            # Another bank command has the directory; an embedded store has one owner.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def run(args: argparse.Namespace, out: Callable[[str], None]) -> None:
    if args.snapshot_every < 0:
        raise BadInput(f"--snapshot-every must be 0 or more, got {args.snapshot_every}")
    with _open_store(args) as store:
        bank = Bank(store, EveryNEvents(args.snapshot_every) if args.snapshot_every
                    else Never())
        if args.command == "open":
            a = bank.open(args.id, args.name)
            out(f"opened {a.account_id} for {a.owner}")
        elif args.command in ("deposit", "withdraw"):
            cents = parse_amount(args.amount)
            action = bank.deposit if args.command == "deposit" else bank.withdraw
            a = action(args.id, cents, args.note)
            verb = "deposited" if args.command == "deposit" else "withdrew"
            out(f"{verb} {money(cents)}; {a.account_id} balance {money(a.balance_cents)}")
        elif args.command == "balance":
            a = bank.account(check_account_id(args.id))
            if not a.opened:
                raise BankError(f"account {a.account_id} does not exist")
            if bank.from_version is None:
                how = f"after replaying {a.version} events"
            else:
                how = (f"from the snapshot at v{bank.from_version} and "
                       f"{bank.replayed} later events")
            out(f"{a.account_id} ({a.owner}): {money(a.balance_cents)} {how}")
        elif args.command == "history":
            check_account_id(args.id)
            found = False
            for e, a in bank.history(args.id):
                found = True
                out(f"v{e.version:<4} {_when(e.timestamp)}  {_describe(e.event_type, e.data)}"
                    f"  -> {money(a.balance_cents)}")
            if not found:
                raise BankError(f"account {args.id} does not exist")
        else:
            for e in store.read_all():
                out(f"@{e.position:<8} {e.stream_id:<20} v{e.version:<4} "
                    f"{_describe(e.event_type, e.data)}")


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> int:
    """Exit status: 0 done, 1 refused (the message says why), 2 bad input,
    3 the store or server could not be used."""
    args = _parser().parse_args(argv)
    try:
        run(args, out)
    except BadInput as exc:
        print(f"bank: {exc}", file=sys.stderr)
        return 2
    except BankError as exc:
        print(f"bank: {exc}", file=sys.stderr)
        return 1
    except hydra.InvalidArgument as exc:
        print(f"bank: {exc}", file=sys.stderr)
        return 2
    except hydra.HydraError as exc:
        print(f"bank: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
