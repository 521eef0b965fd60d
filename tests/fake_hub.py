"""A loopback HTTP server that answers ``huggingface_hub``'s repo look-ups the way the Hub answers
for a missing repo, a missing revision, a gated repo or an outage, so that the real
``snapshot_download`` raises the real error types (``HF_ENDPOINT=<url>``, ``HF_HUB_OFFLINE=0``).

Offline (``HF_HUB_OFFLINE=1``) ``snapshot_download`` only ever raises ``LocalEntryNotFoundError``;
the typed errors come from ``hf_raise_for_status`` reading the Hub's ``X-Error-Code`` header.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.http_servers import serving

# GET /api/models/<owner>/<name>/revision/<revision>: what snapshot_download asks first.
_REPO_INFO = re.compile(r"^/api/models/([^/]+/[^/]+)/revision/([^/?]+)")

GATED_REPO = "someone/gated"
EXISTING_REPO = "someone/tiny-clt"  # exists, with a main branch only
OUTAGE_REPO = "someone/behind-an-outage"  # the Hub answers 503
DROPPED_REPO = "someone/dropped"  # the connection closes without an answer


@dataclass
class FakeHub:
    url: str
    requests: Counter[str] = field(default_factory=Counter)  # repo id -> repo look-ups


def _answer(repo_id: str, revision: str) -> tuple[int, str | None]:
    """(HTTP status, X-Error-Code) as huggingface.co sends them."""
    if repo_id == GATED_REPO:
        return 401, "GatedRepo"
    if repo_id == OUTAGE_REPO:
        return 503, None
    if repo_id == EXISTING_REPO and revision != "main":
        return 404, "RevisionNotFound"
    return 401, "RepoNotFound"  # the Hub says 401, not 404, for a repo it does not show you


@contextmanager
def fake_hub() -> Iterator[FakeHub]:
    hub = FakeHub(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            match = _REPO_INFO.match(self.path)
            if match is None:
                status, code = 404, None
            else:
                hub.requests[match.group(1)] += 1
                if match.group(1) == DROPPED_REPO:
                    self.close_connection = True
                    return
                status, code = _answer(match.group(1), match.group(2))
            self.send_response(status)
            if code is not None:
                self.send_header("X-Error-Code", code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as hub.url:
        yield hub


def hub_env(hub_url: str, hf_home: Path) -> dict[str, str]:
    """The environment of a process that asks ``hub_url`` as its Hub, online, with an empty
    Hugging Face cache under ``hf_home``."""
    return {
        **os.environ,
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": hub_url,
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
