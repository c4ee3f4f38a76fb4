"""A client process for tests/test_concurrency.py: its own app, engine and connection pool.

Each process builds the Flask app from the environment it is given (so it sees
TRANSFER_FEE_BPS=150 and the test database), warms up its connections, waits at the
barrier shared with its sibling processes, then sends its transfers (or deposits) all at once from one
thread each, through the same HTTP views, idempotency and retries that production uses.
No pytest here: this module is imported by processes started with the 'spawn' method.
"""
from __future__ import annotations

import threading
import traceback
import uuid
from dataclasses import dataclass

#: How long a process waits for its siblings or for one transfer, in seconds.
WAIT_S = 60


@dataclass(frozen=True)
class Transfer:
    from_user_id: str
    to_user_id: str
    amount: str
    currency: str = "SGD"
    path = "/api/v1/wallet/transfer"

    @property
    def user_id(self) -> str:
        return self.from_user_id

    def body(self) -> dict:
        return {"from_user_id": self.from_user_id, "to_user_id": self.to_user_id, "amount": self.amount,
                "currency": self.currency}


@dataclass(frozen=True)
class Deposit:
    user_id: str
    amount: str
    currency: str = "SGD"
    path = "/api/v1/wallet/deposit"

    def body(self) -> dict:
        return {"user_id": self.user_id, "amount": self.amount, "currency": self.currency}


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict
    request: Transfer | Deposit


def run_client(environ: dict[str, str], token: str, transfers: list[Transfer | Deposit], barrier, results) -> None:
    """Sends `transfers` concurrently once every process has reached `barrier`; puts a list
    of Outcome (or a traceback string) on `results`."""
    try:
        results.put(_transfer_all(environ, token, transfers, barrier))
    except BaseException:  # the parent must hear about it instead of waiting for a timeout
        barrier.abort()
        results.put(traceback.format_exc())


def _transfer_all(environ, token, transfers, barrier) -> list[Outcome]:
    from api import create_app
    from pipeline.config import Settings

    app = create_app(Settings.from_environ(environ))
    headers = {"Authorization": f"Bearer {token}"}
    clients = [app.test_client() for _ in transfers]
    # Warm up: the token is looked up and cached, and the pool holds open connections.
    for client, transfer in zip(clients, transfers):
        assert client.get(f"/api/v1/users/{transfer.user_id}", headers=headers).status_code == 200
    outcomes: list[Outcome | None] = [None] * len(transfers)
    start = threading.Barrier(len(transfers) + 1, timeout=WAIT_S)

    def send(index: int) -> None:
        transfer = transfers[index]
        start.wait()
        response = clients[index].post(transfer.path, json=transfer.body(),
                                       headers={**headers, "Idempotency-Key": str(uuid.uuid4())})
        outcomes[index] = Outcome(response.status_code, response.get_json(), transfer)

    threads = [threading.Thread(target=send, args=(index,)) for index in range(len(transfers))]
    for thread in threads:
        thread.start()
    barrier.wait(timeout=WAIT_S)  # every process is warm: go
    start.wait()
    for thread in threads:
        thread.join(WAIT_S)
    app.extensions["wallet"].engine.dispose()
    assert all(outcome is not None for outcome in outcomes), "a transfer did not finish in time"
    return outcomes
