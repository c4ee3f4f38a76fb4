"""The domain and its use cases, free of any web, queue or database framework.

- `money`: integer minor units with their ISO 4217 currency; strict parsing at the edge.
- `ledger`: double-entry rules (postings sum to zero, user wallets never negative),
  checked here and again by PostgreSQL.
- `wallets`, `users`, `statements`: one use case per function, each one database
  transaction through a unit of work (`ports.UnitOfWork`) that `storage/` implements.
- `idempotency`: a request's key and answer stored with the money it moved.
- `reconciliation`: proof that every balance equals its ledger.
- `config`: settings and limits, read from the environment when asked for.
"""
