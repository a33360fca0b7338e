"""The bank example: its domain rules, its commands embedded and against the
server, and withdrawals racing for the same money."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from typing import Any

import account as acc
import bank
import pytest

import hydra
from hydra.client import connect

from .conftest import BANK_DIR

BANK = str(BANK_DIR / "bank.py")


# -- the domain ------------------------------------------------------------------


@pytest.mark.parametrize("text, cents", [("100", 10000), ("100.5", 10050), ("0.01", 1),
                                         (" 7.25 ", 725)])
def test_parse_amount(text, cents):
    assert acc.parse_amount(text) == cents


@pytest.mark.parametrize("text", ["0", "0.00", "-5", "1.234", "1e3", "", "abc", "1,5",
                                  "99999999999999"])
def test_bad_amounts(text):
    with pytest.raises(acc.BadInput):
        acc.parse_amount(text)


def test_replay_and_decisions():
    a = acc.replay("a-1", [
        (acc.OPENED, b'{"account_id": "a-1", "owner": "Ann"}'),
        (acc.DEPOSITED, b'{"amount_cents": 500, "note": ""}'),
        (acc.WITHDRAWN, b'{"amount_cents": 200, "note": ""}'),
        ("SomethingNewer", b"{}"),
    ])
    assert (a.owner, a.balance_cents, a.version, a.opened) == ("Ann", 300, 4, True)
    assert acc.decide_withdraw(a, 300, "all").body == {"amount_cents": 300, "note": "all"}
    with pytest.raises(acc.InsufficientFunds):
        acc.decide_withdraw(a, 301, "")
    with pytest.raises(acc.AccountExists):
        acc.decide_open(a, "Bob")
    with pytest.raises(acc.AccountNotFound):
        acc.decide_deposit(acc.Account("b-2"), 1, "")
    assert acc.money(-1234) == "-12.34" and acc.money(5) == "0.05"


# -- the commands ----------------------------------------------------------------


def cli(*argv: str) -> tuple[int, list[str]]:
    lines: list[str] = []
    return bank.main(list(argv), lines.append), lines


def where(request: Any, tmp_path: Any, kind: str) -> list[str]:
    if kind == "embedded":
        return ["--data", str(tmp_path / "bank")]
    cluster = request.getfixturevalue("cluster")
    return ["--server", cluster.grpc_target if kind == "grpc" else cluster.http_url]


@pytest.mark.parametrize("kind", ["embedded", "grpc", "http"])
def test_commands(request, tmp_path, kind, capsys):
    at = where(request, tmp_path, kind)
    acct = f"acc-{uuid.uuid4().hex[:8]}"
    assert cli(*at, "open", acct, "Alice") == (0, [f"opened {acct} for Alice"])
    assert cli(*at, "deposit", acct, "100", "Opening deposit")[0] == 0
    assert cli(*at, "withdraw", acct, "30", "ATM withdrawal") == (
        0, [f"withdrew 30.00; {acct} balance 70.00"])
    assert cli(*at, "balance", acct) == (0, [f"{acct} (Alice): 70.00 after replaying 3 events"])
    status, lines = cli(*at, "history", acct)
    assert status == 0 and len(lines) == 3
    assert "MoneyWithdrawn" in lines[2] and "ATM withdrawal" in lines[2]
    assert lines[2].endswith("-> 70.00")
    status, lines = cli(*at, "all")
    assert status == 0 and sum(f"account-{acct}" in line for line in lines) == 3
    # Refusals write nothing.
    assert cli(*at, "withdraw", acct, "70.01")[0] == 1
    assert "holds 70.00" in capsys.readouterr().err
    assert cli(*at, "open", acct, "Bob")[0] == 1
    assert cli(*at, "deposit", "nobody-" + acct, "5")[0] == 1
    assert cli(*at, "balance", "nobody-" + acct)[0] == 1
    assert cli(*at, "deposit", acct, "-5")[0] == 2
    assert cli(*at, "open", "bad/id", "X")[0] == 2
    assert cli(*at, "balance", acct)[1] == [f"{acct} (Alice): 70.00 after replaying 3 events"]


def test_events_are_meaningful(tmp_path):
    assert cli("--data", str(tmp_path / "b"), "open", "a-1", "Ann")[0] == 0
    assert cli("--data", str(tmp_path / "b"), "deposit", "a-1", "12.5", "pay day")[0] == 0
    with hydra.open(str(tmp_path / "b")) as store:
        opened, deposited = store.read_stream("account-a-1")
    assert opened.event_type == "AccountOpened"
    assert json.loads(opened.data) == {"account_id": "a-1", "owner": "Ann"}
    assert deposited.event_type == "MoneyDeposited"
    assert json.loads(deposited.data) == {"amount_cents": 1250, "note": "pay day"}
    assert json.loads(deposited.metadata) == {"command": "deposit"}
    assert deposited.event_id and deposited.event_id != opened.event_id


def test_unreachable_server(capsys):
    from tests.gateway._cluster import free_port

    assert cli("--server", f"127.0.0.1:{free_port()}", "balance", "a-1")[0] == 3
    assert "Unavailable" in capsys.readouterr().err


# -- races -----------------------------------------------------------------------


class ReadBothThenAppend:
    """A store whose first append in each thread waits until two threads have
    read: two commands then decide on the same state, for certain."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.barrier = threading.Barrier(2)
        self.local = threading.local()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def append(self, *args: Any, **kwargs: Any) -> Any:
        if not getattr(self.local, "waited", False):
            self.local.waited = True
            self.barrier.wait(10)
        return self.inner.append(*args, **kwargs)


def race(stores: list[Any], account_id: str, cents: int) -> list[object]:
    results: list[object] = [None, None]
    banks = [bank.Bank(s) for s in stores]

    def withdraw(n: int) -> None:
        try:
            results[n] = banks[n].withdraw(account_id, cents, f"racer {n}")
        except acc.BankError as exc:
            results[n] = exc

    threads = [threading.Thread(target=withdraw, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # The loser lost a real race: at least once (its retry can read before the
    # winner's append is committed, under load, and lose again).
    assert sum(b.conflicts for b in banks) >= 1
    return results


@pytest.mark.parametrize("kind", ["embedded", "grpc", "http"])
def test_two_withdrawals_race_exactly_one_wins(request, tmp_path, kind):
    acct = f"race-{uuid.uuid4().hex[:8]}"
    if kind == "embedded":
        store = hydra.open(str(tmp_path / "bank"))
        shared = ReadBothThenAppend(store)
        stores = [shared, shared]
        check = store
    else:
        cluster = request.getfixturevalue("cluster")
        address = cluster.grpc_target if kind == "grpc" else cluster.http_url
        # Two clients, as two tellers would be; one barrier between them.
        clients = [connect(address), connect(address)]
        racing = ReadBothThenAppend(clients[0])
        other = ReadBothThenAppend(clients[1])
        other.barrier = racing.barrier
        stores = [racing, other]
        check = clients[0]
    try:
        b = bank.Bank(check)
        b.open(acct, "Racer")
        b.deposit(acct, 10000, "")
        results = race(stores, acct, 7000)
        winners = [r for r in results if isinstance(r, acc.Account)]
        losers = [r for r in results if isinstance(r, acc.InsufficientFunds)]
        assert len(winners) == 1 and len(losers) == 1, results
        assert winners[0].balance_cents == 3000
        assert b.account(acct).balance_cents == 3000
        withdrawals = [e for e in check.read_stream(acc.stream_of(acct))
                       if e.event_type == acc.WITHDRAWN]
        assert len(withdrawals) == 1
    finally:
        if kind == "embedded":
            store.close()
        else:
            for c in clients:
                c.close()


@pytest.mark.parametrize("kind", ["grpc", "http"])
def test_many_tellers_never_overdraw(cluster, kind):
    acct = f"busy-{uuid.uuid4().hex[:8]}"
    address = cluster.grpc_target if kind == "grpc" else cluster.http_url
    with connect(address) as c:
        bank.Bank(c).open(acct, "Busy")
        bank.Bank(c).deposit(acct, 10000, "")
    outcomes: list[str] = []

    def teller() -> None:
        with connect(address) as c:
            try:
                bank.Bank(c).withdraw(acct, 3000, "")
                outcomes.append("ok")
            except acc.InsufficientFunds:
                outcomes.append("refused")

    threads = [threading.Thread(target=teller) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["ok"] * 3 + ["refused"] * 5
    with connect(address) as c:
        assert bank.Bank(c).account(acct).balance_cents == 1000


@pytest.mark.parametrize("kind", ["embedded", "grpc"])
def test_two_processes_race(request, tmp_path, kind):
    """Two `bank.py withdraw` processes at once (embedded: they take turns on
    the data directory; server: they race on expected versions)."""
    at = where(request, tmp_path, kind)
    acct = f"proc-{uuid.uuid4().hex[:8]}"
    assert cli(*at, "open", acct, "Two")[0] == 0
    assert cli(*at, "deposit", acct, "100")[0] == 0
    procs = [subprocess.Popen([sys.executable, BANK, *at, "withdraw", acct, "70", f"p{n}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], outs
    assert any("cannot withdraw 70.00" in err for _, err in outs)
    assert cli(*at, "balance", acct)[1] == [f"{acct} (Two): 30.00 after replaying 3 events"]


# -- snapshots -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["embedded", "grpc", "http"])
def test_balance_loads_the_snapshot_and_the_tail(request, tmp_path, kind):
    at = [*where(request, tmp_path, kind), "--snapshot-every", "5"]
    acct = f"snap-{uuid.uuid4().hex[:8]}"
    assert cli(*at, "open", acct, "Sam")[0] == 0
    for _ in range(11):
        assert cli(*at, "deposit", acct, "1")[0] == 0
    # 12 events: snapshots at v4 and v9; the balance reads v9's and 2 events.
    assert cli(*at, "balance", acct) == (
        0, [f"{acct} (Sam): 11.00 from the snapshot at v9 and 2 later events"])
    status, lines = cli(*at, "history", acct)
    assert status == 0 and len(lines) == 12
    # Without snapshots the same balance comes from every event.
    assert cli(*at[:-2], "--snapshot-every", "0", "withdraw", acct, "2")[0] == 0
    assert cli(*at, "balance", acct)[1] == [
        f"{acct} (Sam): 9.00 from the snapshot at v9 and 3 later events"]
    assert cli(*at, "--snapshot-every", "-1", "balance", acct)[0] == 2


def test_a_snapshot_of_another_type_is_ignored(tmp_path):
    at = ["--data", str(tmp_path / "b"), "--snapshot-every", "2"]
    assert cli(*at, "open", "a-1", "Ann")[0] == 0
    assert cli(*at, "deposit", "a-1", "3")[0] == 0
    with hydra.open(str(tmp_path / "b")) as store:
        assert store.load_snapshot("account-a-1").version == 1
        store.save_snapshot("account-a-1", 1, b"not json", "Legacy")
    assert cli(*at, "balance", "a-1") == (0, ["a-1 (Ann): 3.00 after replaying 2 events"])
