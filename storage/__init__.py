"""PostgreSQL behind the pipeline: tables, migrations, and the set-based SQL the use cases need.

Nothing here commits on its own: `storage.unit_of_work.SqlUnitOfWork` opens one database
transaction per use case and the use case commits it.
"""
