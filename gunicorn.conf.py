"""Gunicorn reads this file from the working directory (`make up`, the Procfile, the Docker
image): its own log lines (boot, worker exits, timeouts) become JSON lines like the app's
(telemetry/logs.py). Its access log stays off, as by default: the app writes one line per
request itself, with the request id and the URL rule."""
from gunicorn import glogging

from telemetry.logs import JsonFormatter


class JsonLogger(glogging.Logger):
    def setup(self, cfg):
        super().setup(cfg)
        for handler in [*self.error_log.handlers, *self.access_log.handlers]:
            handler.setFormatter(JsonFormatter())


logger_class = JsonLogger
