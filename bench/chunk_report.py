"""bench/chunk_profile.py's tables: each statement named by what it does, per chunk and per row."""
from __future__ import annotations

#: What each statement of a run is, by a piece of its text: (piece, label), the first that
#: matches wins. "chunk:" statements run in every chunk; the rest are the upload's, the
#: benchmark's own, or transaction control.
LABELS = (
    ("WITH entry (id, currency, amount)", "chunk: post (postings, balances, rows SUCCESS)"),
    ("INSERT INTO event_outbox", "chunk:   in it: event outbox trigger"),
    ('FROM ONLY "public"."wallets" x', "chunk:   in it: foreign key postings -> wallets, a row"),
    ('FROM ONLY "public"."journal_entries" x', "chunk:   in it: foreign key postings -> journal_entries, a row"),
    ("INSERT INTO bulk_activity_totals", "chunk:   in it: activity totals trigger (every bulk_rows statement)"),
    ("EXISTS (SELECT $1 FROM inserted i JOIN journal_entries", "chunk:   in it: postings join new entries only"),
    ("FROM (SELECT DISTINCT journal_entry_id FROM inserted)", "chunk:   in it: postings join new entries only"),
    ("FROM postings WHERE journal_entry_id = NEW.id", "chunk: entry must balance (deferred, at commit)"),
    ("w.balance + sum(CAST(r.amount_minor", "chunk: fail amounts out of range"),
    ("AND r.id = ANY(CAST($", "chunk: fail amounts out of range"),  # since issue 12: only when some are
    # Since issue 12 the lock also finds the rows out of range, from the balances it locked.
    ("SELECT row_id FROM ( SELECT row_id, balance", "chunk: lock the users' wallets"),
    ("s.closed", "chunk: fail frozen wallets and closed users"),
    ("WITH failing AS", "chunk: fail unknown users"),
    ("INSERT INTO wallets (user_id, currency, balance", "chunk: create missing wallets"),
    ("SELECT count(*) FROM ( SELECT w.id FROM", "chunk: lock the users' wallets"),
    ("system_name = $4 AND activity_id", "chunk: lock the reservation shard"),
    ("FROM wallets WHERE system_name = $", "chunk: lock the funding shard"),
    ("INSERT INTO wallets (system_name, shard", "chunk: create the funding shard"),
    ("SET status = $5, journal_entry_id = p.journal_entry_id", "chunk: settle rows already posted"),
    ("INSERT INTO journal_entries (id, kind, idempotency_key, currency, amount, activity_id, metadata)",
     "chunk: journal entries"),
    ("SELECT r.currency, count(*), sum(r.amount_minor)", "chunk: chunk totals"),
    ("WHERE transaction_id = txid_current()", "chunk: credited in this transaction"),
    ("WITH saved AS ( UPDATE bulk_activities", "chunk: activity counters and status"),
    ("FROM bulk_chunks c JOIN bulk_activities a", "chunk: lock the chunk"),
    ("FROM bulk_chunks WHERE id = $1 FOR UPDATE", "chunk: lock the chunk"),
    ("UPDATE bulk_chunks SET", "chunk: chunk start and finish"),
    ("FROM bulk_activities WHERE id = $1 FOR UPDATE", "chunk: lock the activity"),
    ("COPY bulk_rows", "upload: COPY rows"),
    ("THEN $1 ELSE $2 END, error_message = CASE WHEN EXISTS", "upload: unknown and closed users"),
    ("error_message = $2, chunk_number = $5 WHERE r.activity_id", "upload: unknown users"),
    ("SET status = $3, error_code = $1, chunk_number = $4", "upload: duplicate references in the file"),
    ("SELECT currency, chunk_number, sum(amount_minor)", "upload: reservation totals"),
    ("INSERT INTO bulk_chunks", "upload: plan chunks"),
    ("INSERT INTO bulk_references", "upload: claim references"),
    ("VACUUM", "benchmark: vacuum"),
    ("SELECT status, successful_records FROM bulk_activities", "benchmark: poll"),
    ("pg_stat_statements_reset", "benchmark: reset"),
    ("COMMIT", "commit"), ("BEGIN", "begin"), ("ROLLBACK", "rollback"),
)


def label(query: str) -> str:
    return next((name for piece, name in LABELS if piece in query), "upload or other: " + query[:70])


def by_label(run: dict) -> dict[str, dict[str, float]]:
    """Per label, a chunk's share: ms, calls, buffer reads a row, WAL bytes a row (the
    upload's statements are spread over the chunks too, so that the columns add up)."""
    chunks, rows = max(run["chunks_done"], 1), run["rows"]
    grouped: dict[str, dict[str, float]] = {}
    for statement in run["statements"]:
        into = grouped.setdefault(statement["label"], {"ms": 0.0, "calls": 0.0, "hit": 0.0, "wal": 0.0})
        into["ms"] += statement["total_ms"] / chunks
        into["calls"] += statement["calls"] / chunks
        into["hit"] += (statement["hit"] + statement["read"]) / rows
        into["wal"] += statement["wal_bytes"] / rows
    return grouped


def chunk_total(grouped: dict[str, dict[str, float]]) -> dict[str, float]:
    """The chunk's own statements, counted once (not the statements inside them)."""
    parts = [figures for name, figures in grouped.items() if name.startswith("chunk:") and "in it:" not in name
             or name == "commit"]
    return {key: sum(part[key] for part in parts) for key in ("ms", "calls", "hit", "wal")}


def report(results: dict) -> None:
    runs = results["runs"]
    for key, run in runs.items():
        wal = run["wal"]
        print(f"\n{key}: {run['rows']:,} rows, {run['chunks_done']} chunks, {run['seconds']:.1f} s"
              f" ({run['rate_per_s']:,.0f} rows/s), CPU {run['cpu_s']:.1f} s"
              f" ({', '.join(f'{k} {v:.1f}' for k, v in run['cpu_parts_s'].items())});"
              f" WAL {wal['bytes'] / run['rows']:,.0f} bytes a row in all ({wal['records'] / run['rows']:.1f} records)")
        print("  trigger functions, ms a chunk (calls a chunk): " + "; ".join(
            f"{f['function']} {float(f['total_ms']) / max(run['chunks_done'], 1):.1f}"
            f" ({f['calls'] / max(run['chunks_done'], 1):.0f})" for f in run["functions"]))
        print(f"  active backends {run['active_backends_mean']} on average; what they wait on: " + ", ".join(
            f"{wait} {share:.0%}" for wait, share in list(run["waits_share"].items())[:6]))
        for lock, count in list(run["lock_waits"].items())[:5]:
            print(f"    {count:5d} samples: {lock[:200]}")
    grouped = {key: by_label(run) for key, run in runs.items()}
    names = sorted({name for figures in grouped.values() for name in figures},
                   key=lambda name: -max(figures.get(name, {"ms": 0})["ms"] for figures in grouped.values()))
    print("\nper chunk: ms | buffer reads a row | WAL bytes a row, for " + " ; ".join(runs))
    for name in names:
        cells = [grouped[key].get(name) for key in runs]
        if all(cell is None or cell["ms"] < 0.5 for cell in cells):
            continue
        print(f"  {name[:68]:<68} " + " ; ".join(
            f"{cell['ms']:7.1f} {cell['hit']:5.1f} {cell['wal']:6.1f}" if cell else f"{'-':>7} {'-':>5} {'-':>6}"
            for cell in cells))
    totals = [chunk_total(grouped[key]) for key in runs]
    print(f"  {'a chunk, its own statements in all':<68} " + " ; ".join(
        f"{total['ms']:7.1f} {total['hit']:5.1f} {total['wal']:6.1f}" for total in totals))
