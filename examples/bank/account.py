"""A bank account, event-sourced: what happened is the only state there is.

Each account is one stream, ``account-<ID>``. Its events, as JSON:

    AccountOpened    {"account_id": "acc-001", "owner": "Alice"}
    MoneyDeposited   {"amount_cents": 10000, "note": "Opening deposit"}
    MoneyWithdrawn   {"amount_cents": 3000, "note": "ATM withdrawal"}

The current state of an account is what you get by replaying its events in
order (``replay``); a command looks at that state and decides which new event,
if any, to record (``decide_*``). Deciding is pure: no I/O here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

OPENED = "AccountOpened"
DEPOSITED = "MoneyDeposited"
WITHDRAWN = "MoneyWithdrawn"

MAX_CENTS = 10**15  # a quadrillion cents: anything larger is a typo
_AMOUNT = re.compile(r"(\d{1,13})(?:\.(\d{1,2}))?")
_ACCOUNT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class BankError(Exception):
    """A command the bank refuses; the message says why."""


class AccountExists(BankError):
    pass


class AccountNotFound(BankError):
    pass


class InsufficientFunds(BankError):
    pass


class BadInput(BankError, ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    owner: str = ""
    balance_cents: int = 0
    opened: bool = False
    version: int = 0  # events replayed = the expected version of the next append


@dataclass(frozen=True, slots=True)
class Change:
    """An event to record: its type and JSON body."""

    event_type: str
    body: dict[str, object]

    def data(self) -> bytes:
        return json.dumps(self.body, sort_keys=True).encode()


def stream_of(account_id: str) -> str:
    return f"account-{check_account_id(account_id)}"


def check_account_id(account_id: str) -> str:
    if not _ACCOUNT_ID.fullmatch(account_id):
        raise BadInput(
            f"account ID {account_id!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return account_id


def parse_amount(text: str) -> int:
    """``"100"``, ``"100.5"``, ``"100.50"`` -> cents; positive, two decimals at most."""
    match = _AMOUNT.fullmatch(text.strip())
    if not match:
        raise BadInput(f"amount {text!r}: write it like 100 or 100.50")
    cents = int(match.group(1)) * 100 + int((match.group(2) or "0").ljust(2, "0"))
    if cents <= 0:
        raise BadInput(f"amount {text!r} must be more than zero")
    if cents > MAX_CENTS:
        raise BadInput(f"amount {text!r} is too large")
    return cents


def money(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    return f"{sign}{whole}.{frac:02d}"


def apply(account: Account, event_type: str, body: dict[str, object]) -> Account:
    """The account after one more event."""
    version = account.version + 1
    if event_type == OPENED:
        return Account(account.account_id, str(body["owner"]), 0, True, version)
    if event_type == DEPOSITED:
        balance = account.balance_cents + int(body["amount_cents"])  # type: ignore[call-overload]
    elif event_type == WITHDRAWN:
        balance = account.balance_cents - int(body["amount_cents"])  # type: ignore[call-overload]
    else:  # an event type this version does not know: it changes no balance
        balance = account.balance_cents
    return Account(account.account_id, account.owner, balance, account.opened, version)


def replay(account_id: str, events: list[tuple[str, bytes]],
           start: Account | None = None) -> Account:
    """The account from its events, (type, JSON data) in version order, replayed
    on ``start`` (a snapshot's state) when given."""
    account = start or Account(account_id)
    for event_type, data in events:
        account = apply(account, event_type, json.loads(data))
    return account


# -- snapshots ---------------------------------------------------------------------

SNAPSHOT_TYPE = "AccountState/1"  # a new state layout gets a new type


def snapshot_state(account: Account) -> bytes:
    """The account's state as a snapshot (JSON)."""
    return json.dumps({"owner": account.owner, "balance_cents": account.balance_cents,
                       "opened": account.opened}, sort_keys=True).encode()


def from_snapshot(account_id: str, version: int, state: bytes) -> Account:
    """The account a snapshot of ``version`` holds (``version + 1`` events replayed)."""
    body = json.loads(state)
    return Account(account_id, str(body["owner"]), int(body["balance_cents"]),
                   bool(body["opened"]), version + 1)


# -- decisions -------------------------------------------------------------------


def decide_open(account: Account, owner: str) -> Change:
    if account.opened:
        raise AccountExists(f"account {account.account_id} is already open ({account.owner})")
    owner = owner.strip()
    if not owner or len(owner) > 200:
        raise BadInput("the owner's name must be 1-200 characters")
    return Change(OPENED, {"account_id": account.account_id, "owner": owner})


def _opened(account: Account) -> None:
    if not account.opened:
        raise AccountNotFound(f"account {account.account_id} does not exist; open it first")


def decide_deposit(account: Account, cents: int, note: str) -> Change:
    _opened(account)
    if account.balance_cents + cents > MAX_CENTS:
        raise BadInput("that deposit would take the balance past the largest amount")
    return Change(DEPOSITED, {"amount_cents": cents, "note": note})


def decide_withdraw(account: Account, cents: int, note: str) -> Change:
    _opened(account)
    if cents > account.balance_cents:
        raise InsufficientFunds(
            f"account {account.account_id} holds {money(account.balance_cents)}; "
            f"cannot withdraw {money(cents)}"
        )
    return Change(WITHDRAWN, {"amount_cents": cents, "note": note})
