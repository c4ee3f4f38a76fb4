"""The HTTP side of webhook deliveries (`pipeline.webhooks.delivery.Sender`) over urllib3.

Connects to the one address the pipeline checked, never resolving the host again (DNS
rebinding), and still speaks to the host by name: the `Host` header, and for https the SNI
name and the certificate check. Every limit is stated: connect and read timeouts, no
redirects (a 3xx is a failed attempt: the subscription's URL is the only destination), no
retries inside an attempt, and the answer's body is never read.
"""
from __future__ import annotations

from urllib.parse import urlsplit

import urllib3

from pipeline.webhooks.delivery import Answer
from pipeline.webhooks.urls import Address, Target


class HttpSender:
    def __init__(self, connect_timeout_s: float, read_timeout_s: float):
        self.timeout = urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s)

    def post(self, target: Target, address: Address, url: str, headers: dict[str, str], body: bytes) -> Answer:
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = f"[{address}]" if address.version == 6 else str(address)
        if target.scheme == "https":
            pool = urllib3.HTTPSConnectionPool(host, target.port, timeout=self.timeout, retries=False, maxsize=1,
                                               server_hostname=target.host, assert_hostname=target.host,
                                               cert_reqs="CERT_REQUIRED")
        else:
            pool = urllib3.HTTPConnectionPool(host, target.port, timeout=self.timeout, retries=False, maxsize=1)
        try:
            response = pool.urlopen("POST", path, body=body, headers={**headers, "host": parts.netloc},
                                    redirect=False, retries=False, preload_content=False, assert_same_host=False)
            response.close()
            return Answer(response.status)
        except urllib3.exceptions.HTTPError as error:
            return Answer(None, f"{type(error).__name__}: {error}")
        finally:
            pool.close()
