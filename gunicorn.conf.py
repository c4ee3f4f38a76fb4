"""Gunicorn reads this file from the working directory (`make up`, the Procfile, the Docker
image): its own log lines (boot, worker exits, timeouts) become JSON lines like the app's
(telemetry/logs.py). Its access log stays off, as by default: the app writes one line per
request itself, with the request id and the URL rule."""
import gc

from gunicorn import glogging

from telemetry.logs import JsonFormatter


class JsonLogger(glogging.Logger):
    def setup(self, cfg):
        super().setup(cfg)
        for handler in [*self.error_log.handlers, *self.access_log.handlers]:
            handler.setFormatter(JsonFormatter())


logger_class = JsonLogger


def post_worker_init(worker) -> None:
    """After a worker has loaded the app, its objects (Flask, SQLAlchemy, the app's modules:
    about 150,000) move to the collector's permanent generation. Otherwise every full
    collection walks them all: measured in-process, one every ~3,000 transfers, pausing the
    worker's threads for 100 to 200 ms on this busy machine; frozen, the worst pause was 6 ms."""
    gc.freeze()
