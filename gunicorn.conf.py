"""Gunicorn reads this file from the working directory (`make up`, the Procfile, the Docker
image, the tests' servers). It sets what every deployment must share:

- the worker class: gthread whose main loop reads request heads with a deadline, and whose
  own error answers are problem+json (web/gunicorn_worker.py). A command line that names
  another class (`--worker-class gthread`) would override it, so each worker checks that it
  runs this one, and that the stream budget leaves half its threads to ordinary requests
  (web/stream_slots.py); a worker that fails either check does not boot;
- its own log lines (boot, worker exits, timeouts) as JSON lines like the app's
  (telemetry/logs.py). Its access log stays off, as by default: the app writes one line per
  request itself, with the request id and the URL rule.
"""
import gc

from gunicorn import glogging

from telemetry.logs import JsonFormatter
from web.gunicorn_worker import HeadReadingThreadWorker

worker_class = "web.gunicorn_worker.HeadReadingThreadWorker"
#: Stream slots may take at most this share of a worker's threads.
STREAM_THREADS_SHARE_MAX = 0.5


class JsonLogger(glogging.Logger):
    def setup(self, cfg):
        super().setup(cfg)
        for handler in [*self.error_log.handlers, *self.access_log.handlers]:
            handler.setFormatter(JsonFormatter())


logger_class = JsonLogger


def post_worker_init(worker) -> None:
    """Checks the worker (above), then moves the loaded app's objects (Flask, SQLAlchemy, the
    app's modules: about 150,000) to the collector's permanent generation. Otherwise every full
    collection walks them all: measured in-process, one every ~3,000 transfers, pausing the
    worker's threads for 100 to 200 ms on this busy machine; frozen, the worst pause was 6 ms."""
    if not isinstance(worker, HeadReadingThreadWorker):
        raise RuntimeError(f"the web server must run {worker_class}, not {type(worker).__name__}:"
                           " drop --worker-class from the command line")
    streams_max = worker.wsgi.extensions["wallet"].settings.streams_per_process_max
    if streams_max > worker.cfg.threads * STREAM_THREADS_SHARE_MAX:
        raise RuntimeError(f"STREAMS_PER_PROCESS_MAX={streams_max} would leave too few of the {worker.cfg.threads}"
                           " threads (WEB_THREADS) to ordinary requests: at most half of them may stream")
    gc.freeze()
