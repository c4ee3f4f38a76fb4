"""A Python client generated from /openapi.json with openapi-python-client works against the
real stack (gunicorn, PostgreSQL, Redis, a dramatiq worker): two users, a deposit, a
transfer, a file uploaded and its rows read, each answer a typed model (issue 11, item 3)."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

from pipeline.users import create_api_key
from tests.test_bulk_files import gunicorn  # noqa: F401 (a fixture)
from tests.test_bulk_pipeline import fund

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"


def generate(base_url: str, folder: Path):
    (folder / "openapi.json").write_bytes(requests.get(f"{base_url}/openapi.json", timeout=10).content)
    (folder / "config.yml").write_text("package_name_override: wallet_client\nproject_name_override: wallet-client\n")
    made = subprocess.run(
        [str(VENV_BIN / "openapi-python-client"), "generate", "--path", "openapi.json", "--config", "config.yml",
         "--meta", "none", "--output-path", "wallet_client"], cwd=folder, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"})  # it formats its code with ruff
    assert made.returncode == 0 and "Warning" not in made.stdout + made.stderr, made.stdout + made.stderr
    sys.path.insert(0, str(folder))
    return importlib.import_module("wallet_client")


def test_a_generated_client_moves_money_and_uploads_a_file(services, gunicorn, workers, tmp_path):  # noqa: F811
    base_url, _ = gunicorn
    workers(1)
    client_package = generate(base_url, tmp_path)
    from wallet_client.api.bulk_credit import get_activity, get_rows, upload_file
    from wallet_client.api.users_and_wallets import create_user, deposit, transfer, user_balance
    from wallet_client.models import CreateUserBody, DepositBody, TransferBody, UploadFileBody

    client = client_package.AuthenticatedClient(base_url=base_url, token=create_api_key(services.uow(), "admin"))
    ana = create_user.sync(client=client, body=CreateUserBody(name="Ana", email=f"{uuid.uuid4()}@example.com"))
    bo = create_user.sync(client=client, body=CreateUserBody(name="Bo", email=f"{uuid.uuid4()}@example.com"))
    deposited = deposit.sync(client=client, idempotency_key="d-1",
                             body=DepositBody(user_id=ana.id, amount="100.00", currency="SGD"))
    moved = transfer.sync(client=client, idempotency_key="t-1",
                          body=TransferBody(from_user_id=ana.id, to_user_id=bo.id, amount="10.00", currency="SGD"))

    assert (deposited.kind, deposited.balance_after) == ("deposit", "100.00")
    assert (moved.from_user_id, moved.to_user_id, moved.amount) == (ana.id, bo.id, "10.00")
    assert user_balance.sync(ana.id, client=client, currency="SGD").balance == "90.00"

    fund(services, "SGD", 10_000)
    accepted = upload_file.sync(client=client, body=UploadFileBody(
        file=f"uuid,amount,reference\n{ana.id},1.50,r-1\n{bo.id},2.50,r-2\nnobody,1,r-3\n"))
    deadline = time.monotonic() + 60
    while (activity := get_activity.sync(accepted.activity_id, client=client)).status != "COMPLETED":
        assert time.monotonic() < deadline, activity
        time.sleep(0.2)
    rows = get_rows.sync(accepted.activity_id, client=client)

    assert (activity.successful_records, activity.invalid_records) == (2, 1)
    assert activity.totals[0].credited_amount == "4.00"
    assert [(row.row_number, row.status, row.reference) for row in rows.data] == [
        (2, "SUCCESS", "r-1"), (3, "SUCCESS", "r-2"), (4, "INVALID", "r-3")]
    assert user_balance.sync(bo.id, client=client, currency="SGD").balance == "12.50"
