"""The dashboard in a real browser: headless Chromium (Debian's, driven by Selenium through
Debian's chromedriver) against gunicorn in gthread mode and real `dramatiq actors` workers,
on the real PostgreSQL and Redis. `make test` installs the browser (scripts/browser.sh);
a missing browser fails this test. Screenshots of each step go to artifacts/screenshots/.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from pipeline.users import create_api_key
from tests.conftest import assert_ledger_invariants, test_environ
from tests.test_bulk_pipeline import balances, query, seed_users

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: As root, Chromium needs --no-sandbox; without the background-networking flags it keeps trying
#: to reach Google's hosts, which this machine's closed network refuses.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run", "--window-size=1280,1500")
#: How long the web server gets to answer /healthz, and the page to show a status, in seconds.
SERVER_START_S = 30
PAGE_WAIT_S = 90
USERS = 600
#: Rows per chunk, small so that the file takes a few chunks and the chart a few points.
CHUNK_ROWS = 40


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def web_server(request, tmp_path, services, clean_database):
    """gunicorn with 2 gthread workers, as `make up` runs it; SECRET_KEY left unset on purpose, so
    both workers must agree on the derived development key for the session to survive. A test
    passes more settings by parametrizing this fixture (indirect=True) with a dict."""
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    environ = test_environ(BULK_CREDIT_CHUNK_ROWS=str(CHUNK_ROWS), **getattr(request, "param", {}))
    environ.pop("SECRET_KEY", None)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--workers", "2", "--threads", "8",
             "--bind", f"127.0.0.1:{port}", "api:create_app()"],
            cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_S
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        assert process.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.2)
    yield url
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture
def browser(tmp_path):
    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), "run scripts/browser.sh (make test does)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options,
                              service=Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log")))
    driver.set_page_load_timeout(PAGE_WAIT_S)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def snap(driver, name: str) -> None:
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def wait_for_text(driver, element_id: str, text: str, explain=lambda: "") -> None:
    """Waits for `text` in the element; on timeout, says what the page and `explain()` show."""
    try:
        WebDriverWait(driver, PAGE_WAIT_S, poll_frequency=0.1).until(
            expected_conditions.text_to_be_present_in_element((By.ID, element_id), text))
    except TimeoutException:
        shown = driver.find_elements(By.ID, element_id)
        pytest.fail(f"#{element_id} never showed {text!r}; it shows {shown[0].text if shown else None!r}\n{explain()}")


def explainer(services, tmp_path: Path):
    """What the database and the processes' logs say, for a test that waited in vain."""
    def explain() -> str:
        activities = query(services.engine, "SELECT status, successful_records, failed_records, pending_records"
                                            " FROM bulk_activities")
        logs = "\n".join(f"--- {path.name}\n{path.read_bytes()[-2000:].decode(errors='replace')}"
                         for path in sorted(tmp_path.glob("*.log")))
        return f"activities in the database: {activities}\n{logs}"

    return explain


def counter(driver, name: str) -> int:
    """A counter of the activity's page, shown with thousands separators."""
    return int(driver.find_element(By.CSS_SELECTOR, f"dd[data-counter={name}]").text.replace(",", ""))


def test_an_operator_watches_a_file_settle_live_then_retries_its_failed_rows_until_completed(
        services, tmp_path, web_server, browser, workers):
    users = seed_users(services, USERS)
    faulty = sorted(users[::150])  # 4 users
    amounts = {user: (n % 90 + 10) * 100 + 5 for n, user in enumerate(users)}
    lines = [f"{user},{amounts[user] // 100}.{amounts[user] % 100:02d}" for user in users]
    lines[10:10] = ["not-a-user,1.00", f"{users[0]},-3.00"]
    csv_path = tmp_path / "credits.csv"
    csv_path.write_text("uuid,amount\n" + "\n".join(lines) + "\n")
    token = create_api_key(services.uow(), "operator")
    explain = explainer(services, tmp_path)

    # Given a signed-in operator
    browser.get(f"{web_server}/dashboard/")
    snap(browser, "01-sign-in")
    browser.find_element(By.ID, "api_key").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#sign-in button").click()
    wait_for_text(browser, "upload", "Upload")
    snap(browser, "02-home")

    # When they check a file, then upload it while no worker runs yet, the page opens on UPLOADED
    browser.find_element(By.ID, "file").send_keys(str(csv_path))
    browser.find_element(By.ID, "check-button").click()
    wait_for_text(browser, "check-result", "nothing was stored")
    snap(browser, "02-checked")
    browser.find_element(By.ID, "upload-button").click()
    wait_for_text(browser, "status", "UPLOADED")
    browser.execute_script("window.sameDocument = true")
    assert counter(browser, "total_records") == USERS + 2 and counter(browser, "invalid_records") == 2
    snap(browser, "03-uploaded")

    # Then workers with injected faults settle it, and the page shows it live, without a reload
    started = workers(2, BULK_CREDIT_FAIL_USER_IDS=",".join(faulty))
    wait_for_text(browser, "status", "PARTIALLY_COMPLETED", explain)
    assert browser.execute_script("return window.sameDocument === true"), "the page was reloaded"
    assert (counter(browser, "successful_records"), counter(browser, "failed_records"),
            counter(browser, "pending_records")) == (USERS - len(faulty), len(faulty), 0)
    # The status part of the page is read again when the status changes: wait for it, then use it.
    wait_for_text(browser, "state-note", "Partially completed", explain)
    assert browser.find_element(By.ID, "retry").is_displayed()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart polyline.series")) == 2
    wait_for_text(browser, "rows", "injected_fault")  # the rows table is read again once every row is settled
    assert browser.execute_script("return window.sameDocument === true"), "the page was reloaded"
    snap(browser, "04-partially-completed-live")

    # The FAILED rows are listed and download as CSV
    browser.find_element(By.LINK_TEXT, "FAILED").click()
    wait_for_text(browser, "rows", "injected_fault")
    listed = browser.find_element(By.ID, "rows").text
    assert all(user in listed for user in faulty) and users[1] not in listed
    snap(browser, "05-failed-rows")
    cookies = {cookie["name"]: cookie["value"] for cookie in browser.get_cookies()}
    exported = requests.get(browser.find_element(By.ID, "download-failed").get_attribute("href"),
                            cookies=cookies, timeout=30)
    assert exported.headers["Content-Type"].startswith("text/csv")
    assert sorted(line.split(",")[1] for line in exported.text.strip().splitlines()[1:]) == faulty

    # When the workers restart with the fault cleared and the operator clicks retry
    for worker in started:
        worker.stop()
    workers(2, BULK_CREDIT_FAIL_USER_IDS="")
    browser.find_element(By.CSS_SELECTOR, "#retry button").click()

    # Then the activity completes and every valid row is credited once
    wait_for_text(browser, "status", "COMPLETED", explain)
    assert "PARTIALLY" not in browser.find_element(By.ID, "status").text
    assert (counter(browser, "successful_records"), counter(browser, "failed_records")) == (USERS, 0)
    # The rows and status sections are replaced live while this reads them: a stale element is read again.
    WebDriverWait(browser, PAGE_WAIT_S, ignored_exceptions=[StaleElementReferenceException]).until(
        lambda driver: "PENDING" not in driver.find_element(By.ID, "rows").text
        and "FAILED" not in driver.find_element(By.ID, "rows").text
        and not driver.find_element(By.ID, "retry").is_displayed())
    snap(browser, "06-retried-completed")
    assert balances(services.engine) == amounts
    assert query(services.engine, "SELECT status FROM bulk_activities") == [("COMPLETED",)]
    assert_ledger_invariants(services.engine)

    # The operator finds the activity on the home page, looks up a user who had failed, and
    # starts a reconciliation run
    browser.find_element(By.LINK_TEXT, "Bulk credit").click()
    wait_for_text(browser, "recent", "COMPLETED")
    browser.find_element(By.LINK_TEXT, "Users").click()
    browser.find_element(By.ID, "q").send_keys(f"{faulty[0]}@EXAMPLE.test")  # by email, whatever its case
    browser.find_element(By.CSS_SELECTOR, "#user-lookup button").click()
    wait_for_text(browser, "wallets", "SGD")
    expected = f"{amounts[faulty[0]] // 100}.{amounts[faulty[0]] % 100:02d}"
    assert expected in browser.find_element(By.ID, "wallets").text
    assert "bulk_credit" in browser.find_element(By.ID, "history").text
    snap(browser, "07-user")
    browser.find_element(By.LINK_TEXT, "Reconciliation").click()
    browser.find_element(By.CSS_SELECTOR, "#start-reconciliation button").click()
    wait_for_text(browser, "runs-section", "Runs, newest first")
    browser.execute_script("window.sameDocument = true")
    # The list reads itself again while the run is queued or running: no reload.
    wait_for_text(browser, "runs", "clean", explain)
    assert browser.execute_script("return window.sameDocument === true"), "the page was reloaded"
    snap(browser, "08-reconciliation")


#: A phone held upright, in CSS pixels.
PHONE_WIDTH = 390


def fits_the_width(driver) -> bool:
    """Nothing on the page is wider than the window: no sideways scrolling."""
    return driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")


def sign_in_as(driver, url: str, token: str) -> None:
    driver.get(f"{url}/dashboard/sign-in")
    driver.find_element(By.ID, "api_key").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#sign-in button").click()
    wait_for_text(driver, "recent-section", "Activities")


@pytest.mark.parametrize("web_server", [{"BULK_CREDIT_APPROVAL": "always"}], indirect=True)
def test_on_a_phone_an_admin_checks_a_file_uploads_it_cannot_approve_it_and_a_second_key_approves_it(
        services, tmp_path, web_server, browser, workers):
    users = seed_users(services, 120)
    amounts = {user: 1_000_50 + n for n, user in enumerate(users)}  # 1,000.50 and up: separators show
    lines = [f"{user},{amounts[user] // 100}.{amounts[user] % 100:02d}" for user in users] + ["not-a-user,5.00"]
    csv_path = tmp_path / "payroll.csv"
    csv_path.write_text("uuid,amount\n" + "\n".join(lines) + "\n")
    total = sum(amounts.values())
    shown_total = f"{total // 100:,}.{total % 100:02d}"
    admin, approver = create_api_key(services.uow(), "admin"), create_api_key(services.uow(), "approver")
    explain = explainer(services, tmp_path)
    workers(1)
    browser.set_window_size(PHONE_WIDTH, 1400)

    # Given an admin who picks a file and checks it: the preview, and nothing stored
    sign_in_as(browser, web_server, admin)
    browser.find_element(By.ID, "file").send_keys(str(csv_path))
    assert not browser.find_element(By.ID, "upload-button").is_enabled()  # check first
    browser.find_element(By.ID, "check-button").click()
    wait_for_text(browser, "check-result", "nothing was stored")
    preview = browser.find_element(By.ID, "check-result").text
    assert f"SGD 120 {shown_total}" in preview and "sufficient" in preview and "Needs approval" in preview
    assert "invalid_user_id" in browser.find_element(By.ID, "preview-errors").text
    assert browser.find_element(By.ID, "preview-total").text == "121"
    assert query(services.engine, "SELECT count(*) FROM bulk_activities") == [(0,)]
    assert fits_the_width(browser)
    snap(browser, "11-phone-check")

    # When they upload the same file, without picking it again, it waits for approval
    browser.find_element(By.ID, "upload-button").click()
    wait_for_text(browser, "status", "AWAITING_APPROVAL")
    activity_url = browser.current_url
    assert f"SGD 120 {shown_total}" in browser.find_element(By.ID, "review").text
    assert fits_the_width(browser)
    snap(browser, "12-phone-awaiting-approval")

    # Then their own approval is refused, readably, and nothing moves
    browser.find_element(By.CSS_SELECTOR, "#approve button").click()
    wait_for_text(browser, "status", "AWAITING_APPROVAL")
    refusal = browser.find_element(By.CSS_SELECTOR, ".flash.error").text
    assert "cannot approve it" in refusal and "same_approver" in refusal
    assert balances(services.engine) == {}
    snap(browser, "13-phone-same-approver")

    # When a second key, an approver, approves it, workers pay it and the page follows live
    browser.find_element(By.CSS_SELECTOR, ".sign-out button").click()
    sign_in_as(browser, web_server, approver)
    browser.find_element(By.LINK_TEXT, "AWAITING_APPROVAL").click()  # the approver's queue
    wait_for_text(browser, "recent", "payroll.csv")
    assert fits_the_width(browser)
    browser.find_element(By.CSS_SELECTOR, "#recent td a").click()
    wait_for_text(browser, "status", "AWAITING_APPROVAL")
    assert browser.current_url == activity_url
    browser.execute_script("window.sameDocument = true")
    browser.find_element(By.CSS_SELECTOR, "#approve button").click()
    wait_for_text(browser, "status", "COMPLETED", explain)
    assert "Approved" in browser.find_element(By.CSS_SELECTOR, ".flash.info").text
    wait_for_text(browser, "state-note", "Completed: every valid row was credited.", explain)
    assert "key #" in browser.find_element(By.ID, "approved-by").text
    assert counter(browser, "successful_records") == 120 and fits_the_width(browser)
    snap(browser, "14-phone-approved-completed")
    assert balances(services.engine) == amounts

    # And a page left open on a file awaiting approval holds no event stream, yet follows an
    # approval made elsewhere (here through the API) within its polling interval
    operator = create_api_key(services.uow(), "operator")
    late = requests.post(f"{web_server}/api/v1/wallet/bulk-credit", headers={"Authorization": f"Bearer {operator}"},
                         files={"file": ("late.csv", f"uuid,amount\n{users[0]},3.00\n".encode())}, timeout=30)
    late_id = late.json()["activity_id"]
    browser.get(f"{web_server}/dashboard/activities/{late_id}")
    wait_for_text(browser, "live", "WAITING")  # upper case by its style
    approved = requests.post(f"{web_server}/api/v1/wallet/bulk-credit/{late_id}/approve",
                             headers={"Authorization": f"Bearer {approver}"}, timeout=30)
    assert approved.status_code == 202, approved.text
    wait_for_text(browser, "status", "COMPLETED", explain)
    assert balances(services.engine) == {**amounts, users[0]: amounts[users[0]] + 300}

    # When the admin reverses two rows of the payroll, on the phone, with a reason
    browser.find_element(By.CSS_SELECTOR, ".sign-out button").click()
    sign_in_as(browser, web_server, admin)
    browser.get(activity_url)
    wait_for_text(browser, "status", "COMPLETED")
    browser.find_element(By.CSS_SELECTOR, "#reverse input[name=reason]").send_keys("paid twice")
    browser.find_element(By.CSS_SELECTOR, "#reverse input[name=row_numbers]").send_keys("2-3")
    assert fits_the_width(browser)
    snap(browser, "15-phone-reverse")
    browser.find_element(By.CSS_SELECTOR, "#reverse button").click()

    # Then the reversal's page follows it to COMPLETED, links the payroll, and the money is back
    wait_for_text(browser, "reverses", "the credit", explain)
    wait_for_text(browser, "status", "COMPLETED", explain)
    wait_for_text(browser, "state-note", "back in the funding account", explain)
    assert browser.find_element(By.CSS_SELECTOR, "#reverses a").get_attribute("href") == activity_url
    assert fits_the_width(browser)
    snap(browser, "16-phone-reversal-completed")
    assert balances(services.engine) == {**amounts, users[0]: 300, users[1]: 0}
    browser.get(activity_url)
    assert "SUCCESS" in browser.find_element(By.CSS_SELECTOR, "#rows tbody tr .reversed-by").text
    browser.find_element(By.CSS_SELECTOR, "#rows tbody tr a.user-link").click()
    wait_for_text(browser, "history", "bulk_reversal")
    assert users[0] in browser.find_element(By.ID, "user").text and fits_the_width(browser)
    snap(browser, "17-phone-user")

    # And the admin freezes that user's wallet, with a reason, from the same page
    browser.find_element(By.CSS_SELECTOR, "#freeze-SGD input[name=reason]").send_keys("fraud check")
    browser.find_element(By.CSS_SELECTOR, "#freeze-SGD button").click()
    wait_for_text(browser, "wallet-SGD", "frozen")
    assert browser.find_elements(By.ID, "unfreeze-SGD") and fits_the_width(browser)
    snap(browser, "18-phone-frozen")
    assert query(services.engine, "SELECT status FROM wallets WHERE user_id = :u", u=users[0]) == [("frozen",)]
    assert_ledger_invariants(services.engine)


def type_into(driver, element_id: str, text: str) -> None:
    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(text)


@pytest.mark.parametrize("web_server", [{"TRANSFER_FEE_BPS": "150"}], indirect=True)
def test_on_a_phone_a_user_sees_their_balance_is_told_of_a_bad_amount_sends_money_and_sees_money_arrive_live(
        services, settings, tmp_path, web_server, browser):
    from pipeline import wallets
    from pipeline.users import create_user
    from tests.processes import Process
    from tests.test_bulk_reversal import move

    alice = create_user(services.uow(), "Alice Tan", "alice@example.com").id
    bob = create_user(services.uow(), "Bob Lim", "bob@example.com").id
    move(services, wallets.deposit, alice, 1_000_00)
    move(services, wallets.deposit, bob, 50_00)
    alice_token, bob_token = (create_api_key(services.uow(), f"user:{user}") for user in (alice, bob))
    # The scheduler's publisher moves the outbox to the event streams the page follows.
    scheduler = Process(tmp_path / "scheduler.log", [sys.executable, "-m", "jobs"], test_environ())
    explain = lambda: f"--- scheduler\n{scheduler.tail()}"  # noqa: E731
    browser.set_window_size(PHONE_WIDTH, 1400)
    try:
        # Given Alice, signed in with her own key: her page, her balance
        browser.get(f"{web_server}/dashboard/sign-in")
        browser.find_element(By.ID, "api_key").send_keys(alice_token)
        browser.find_element(By.CSS_SELECTOR, "#sign-in button").click()
        wait_for_text(browser, "balances", "1,000.00")
        assert browser.current_url == f"{web_server}/dashboard/me/{alice}" and fits_the_width(browser)

        # When she types an amount that is not one, then one above her balance with its fee, she is told at the field
        type_into(browser, "to_user_id", bob)
        type_into(browser, "amount", "12.345")
        wait_for_text(browser, "error-amount", "at most 2 digits after the point")
        type_into(browser, "amount", "990.00")
        wait_for_text(browser, "error-amount", "more than the 1000.00 SGD you have available")
        assert fits_the_width(browser)
        snap(browser, "21-phone-user-amount-refused")

        # Then with a fitting amount she sees the fee, sends it with a double click, and it moves once
        type_into(browser, "amount", "10.00")
        wait_for_text(browser, "transfer-quote", "Fee 0.15 SGD · you pay 10.15 SGD")
        assert browser.find_element(By.ID, "error-amount").text == ""
        ActionChains(browser).double_click(browser.find_element(By.ID, "send-button")).perform()
        wait_for_text(browser, "balances", "989.85")
        assert "Sent 10.00 SGD" in browser.find_element(By.CSS_SELECTOR, ".flash.info").text
        assert balances(services.engine) == {alice: 989_85, bob: 60_00}
        assert fits_the_width(browser)
        snap(browser, "22-phone-user-sent")

        # And money Bob sends her arrives on the open page, live, without a reload
        wait_for_text(browser, "own-live", "LIVE", explain)  # upper case by its style
        browser.execute_script("window.sameDocument = true")
        sent = requests.post(f"{web_server}/api/v1/wallet/transfer", timeout=30,
                             headers={"Authorization": f"Bearer {bob_token}", "Idempotency-Key": "bob-pays-alice"},
                             json={"from_user_id": bob, "to_user_id": alice, "amount": "2.50", "currency": "SGD"})
        assert sent.status_code == 201, sent.text
        wait_for_text(browser, "balances", "992.35", explain)
        wait_for_text(browser, "history", "+2.50 SGD", explain)
        assert browser.execute_script("return window.sameDocument === true"), "the page was reloaded"
        assert fits_the_width(browser)
        snap(browser, "23-phone-user-received-live")
    finally:
        scheduler.stop()
    assert_ledger_invariants(services.engine)
