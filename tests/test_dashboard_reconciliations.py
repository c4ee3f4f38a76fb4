"""Reconciliation runs on the dashboard follow themselves: the list says whether a run is
still queued or running, which tells the page's script to read it again soon (short
requests, no stream); an older page of the list is not followed. Through Flask's test
client on the real PostgreSQL; the browser test watches a run finish without a reload."""
from __future__ import annotations

import re

from pipeline import reconciliation
from tests.test_dashboard import operator, operator_token  # noqa: F401 (fixtures)


def runs_section(page) -> str:
    return re.search(r'<section class="card" id="runs-section"[^>]*>', page.text, re.DOTALL).group(0)


def test_the_runs_list_is_followed_while_a_run_is_unfinished_and_shows_its_outcome_once_done(services, operator):
    run_id = reconciliation.start(services.uow(), True)

    queued = operator.get("/dashboard/reconciliations")
    assert 'data-unfinished="true"' in runs_section(queued) and 'data-live="true"' in runs_section(queued)
    assert "queued" in queued.text

    reconciliation.run(services.uow(), run_id)
    done = operator.get("/dashboard/reconciliations")

    assert 'data-unfinished="false"' in runs_section(done) and "clean" in done.text


def test_an_older_page_of_runs_is_not_followed(services, operator):
    for _ in range(21):
        reconciliation.run(services.uow(), reconciliation.start(services.uow(), False))
    first = operator.get("/dashboard/reconciliations")
    older = re.search(r'href="(/dashboard/reconciliations\?cursor=[^"]+)"', first.text).group(1)

    page = operator.get(older)

    assert 'data-live="false"' in runs_section(page) and page.text.count("clean") >= 1
