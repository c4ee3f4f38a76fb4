"""A process for tests/test_approval.py: acts on one activity (approve, reject or cancel)
at the same moment as its siblings, through the use cases production runs, and reports
whether it won. No pytest here: imported by processes started with the 'spawn' method."""
from __future__ import annotations

import dataclasses


def act(action: str, activity_id: str, api_key_id: int, environ: dict, approval: str, barrier) -> str:
    import os

    os.environ.update(environ)
    import bootstrap
    from pipeline.bulk import approval as approvals, release
    from pipeline.bulk.ports import Actor
    from pipeline.config import Settings
    from pipeline.errors import Rejected

    settings = dataclasses.replace(Settings.from_environ(environ), bulk_credit_approval=approval)
    services = bootstrap.services(settings)
    services.uow().__enter__().connection.close()  # connect before the barrier
    actor = Actor("api_key", api_key_id)
    barrier.wait(timeout=60)
    try:
        if action == "approve":
            approvals.approve(services.uow, _NoQueue(), settings, activity_id, actor)
        elif action == "reject":
            approvals.reject(services.uow, settings, activity_id, actor, "raced")
        else:
            release.cancel(services.uow, settings, activity_id, actor, "raced")
        return "won"
    except Rejected as refusal:
        return refusal.code


class _NoQueue:
    def send(self, chunk_ids):
        pass
