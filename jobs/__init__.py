"""The scheduler process: one active instance, jobs that only look at the database and
send messages; the work itself runs in the Dramatiq workers."""
