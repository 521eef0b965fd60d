"""Graphs Neuronpedia accepts: the upload format and the upload itself.

Neuronpedia's graph validator (neuronpedia.org/graph/validator) checks a graph against its JSON
schema "Anthropic Attribution Graph" (``apps/webapp/app/api/graph/graph-schema.json`` in the
Neuronpedia repository; a copy is test data in ``tests/interop/``). circuit-tracer's graph files,
which tracerflow exports, already have its shape. What an upload needs besides:

- ``metadata.scan`` is the Neuronpedia model id (``gpt2-small``), not circuit-tracer's scan
  name, since Neuronpedia files the graph under ``/<scan>/graph?slug=<slug>``;
- ``qParams`` in the schema's types: the viewer keeps its view state as URL strings
  (``pinnedIds=a,b``; ``supernodes`` and ``clerps`` as JSON text), the schema wants lists;
- the labels a person gave features in the viewer (``clerps``) in each node's ``clerp``;
- ``metadata.info``: who generated the graph, from which transcoder.

The upload goes through the ``neuronpedia`` package (``GraphRequest.upload``: a signed PUT of
the gzipped file, then ``save-to-db``) with the key from ``NEURONPEDIA_API_KEY``. The key is
never written to a log or an error message.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Sequence
from typing import Any

from tracerflow import __version__
from tracerflow.errors import ConfigError, TracerflowError

logger = logging.getLogger(__name__)

API_KEY_VARIABLE = "NEURONPEDIA_API_KEY"
API_URL_VARIABLE = "NEURONPEDIA_API_URL"
DEFAULT_API_URL = "https://www.neuronpedia.org/api"
GENERATOR = {
    "name": "tracerflow",
    "version": __version__,
    "url": "https://github.com/tracerflow/tracerflow",
}
# The view-state keys the schema types (qParams.properties); others pass through as saved.
_LIST_KEYS = ("pinnedIds", "supernodes")


class NeuronpediaUploadError(TracerflowError):
    """Neuronpedia did not take the graph; a later try may (exit 1)."""


def upload_q_params(q_params: dict[str, Any]) -> dict[str, Any]:
    """The viewer's saved view state in the types Neuronpedia's schema gives ``qParams``.

    ``pinnedIds`` becomes a list of node ids and ``supernodes`` a list, whether they were saved
    as URL text (``"a,b"``, ``"[[...]]"``) or already as lists; the rest is kept as saved.

    Raises:
        ConfigError: ``supernodes`` or ``pinnedIds`` is neither a list nor text of one.
    """
    shaped = dict(q_params)
    pinned = q_params.get("pinnedIds", [])
    if isinstance(pinned, str):
        pinned = [node_id for node_id in pinned.split(",") if node_id]
    supernodes = q_params.get("supernodes", [])
    if isinstance(supernodes, str):
        supernodes = _json_list(supernodes or "[]", "supernodes")
    for key, value in zip(_LIST_KEYS, (pinned, supernodes), strict=True):
        if not isinstance(value, list):
            raise ConfigError(f"the saved view's {key} is not a list: {value!r:.80}")
    shaped["pinnedIds"] = [str(node_id) for node_id in pinned]
    shaped["supernodes"] = supernodes
    return shaped


def feature_labels(q_params: dict[str, Any]) -> dict[str, str]:
    """The labels a person gave features in the viewer: ``clerps``, a JSON list of
    ``[feature, label]`` pairs keyed as the viewer keys them (the node's ``feature``)."""
    clerps = q_params.get("clerps")
    if not clerps:
        return {}
    pairs = _json_list(clerps, "clerps") if isinstance(clerps, str) else clerps
    labels = {}
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str)):
            raise ConfigError(f"the saved view's clerps hold {pair!r:.80}, not [feature, label]")
        labels[str(pair[0])] = pair[1]
    return labels


def _json_list(text: str, key: str) -> list[Any]:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ConfigError(f"the saved view's {key} is not JSON: {error}") from None
    if not isinstance(value, list):
        raise ConfigError(f"the saved view's {key} is not a JSON list: {text:.80}")
    return value


def neuronpedia_graph(
    graph: dict[str, Any],
    q_params: dict[str, Any],
    *,
    scan: str,
    created_at_ms: int,
    source_urls: Sequence[str] = (),
    source_set: str | None = None,
) -> dict[str, Any]:
    """An upload-ready copy of the circuit-tracer graph file ``graph`` with the view state
    ``q_params`` (pinned ids and supernodes of the saved subgraph, labels in each node's
    ``clerp``), filed on Neuronpedia under model id ``scan``.

    Raises:
        ConfigError: ``graph`` lacks what the schema requires, or the view state is malformed.
    """
    metadata = graph.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(graph.get("nodes"), list):
        raise ConfigError("not a circuit-tracer graph file: no metadata or nodes")
    missing = [key for key in ("slug", "prompt_tokens", "prompt") if key not in metadata]
    if missing:
        raise ConfigError(f"the graph's metadata lacks {', '.join(missing)}")
    labels = feature_labels(q_params)
    nodes = [
        {**node, "clerp": labels.get(str(node.get("feature")), node.get("clerp") or "")}
        for node in graph["nodes"]
    ]
    info: dict[str, Any] = {"generator": GENERATOR, "create_time_ms": created_at_ms}
    if source_urls:
        info["source_urls"] = list(source_urls)
    upload_metadata = {**metadata, "scan": scan, "info": info}
    if source_set:
        upload_metadata["feature_details"] = {"neuronpedia_source_set": source_set}
    return {
        **graph,
        "metadata": upload_metadata,
        "qParams": upload_q_params(q_params),
        "nodes": nodes,
    }


def source_urls(transcoder_source: str | None, revision: str | None) -> list[str]:
    """Where the transcoder can be found: its Hub page, for a Hub source (``owner/name``, or a
    preset of one)."""
    from tracerflow.sources import parse_hub_source, unpreset

    hub = parse_hub_source(unpreset(transcoder_source)) if transcoder_source else None
    if hub is None:
        return []
    repo_id = hub[0]
    suffix = f"/tree/{revision}" if revision and revision != "main" else ""
    return [f"https://huggingface.co/{repo_id}{suffix}"]


def upload_graph(text: str, *, api_key: str, api_url: str) -> str:
    """Upload the graph file ``text`` through the ``neuronpedia`` package; the graph's URL.

    Raises:
        ConfigError: Neuronpedia refused the key (401).
        NeuronpediaUploadError: it could not be reached, or did not take the graph.
    """
    import requests
    from neuronpedia.requests.base_request import (
        NPInvalidResponseError,
        NPRateLimitError,
        NPUnauthorizedError,
    )
    from neuronpedia.requests.graph_request import GraphRequest

    request = GraphRequest(api_key=api_key)
    request.BASE_URL = api_url.rstrip("/")  # an instance attribute: the package reads self's

    def scrubbed(error: BaseException) -> str:
        # The package's messages hold no key, but a server's answer could echo it back.
        return str(error).replace(api_key, "***").splitlines()[0]

    progress = io.StringIO()  # the package prints its progress; keep it for the debug log
    try:
        with contextlib.redirect_stdout(progress):
            metadata = request.upload(text)
    except NPUnauthorizedError:
        raise ConfigError(
            f"Neuronpedia at {api_url} refused the API key in ${API_KEY_VARIABLE} (401)"
        ) from None
    except (NPRateLimitError, NPInvalidResponseError) as error:
        raise NeuronpediaUploadError(f"Neuronpedia at {api_url}: {scrubbed(error)}") from None
    except requests.ConnectionError:
        raise NeuronpediaUploadError(f"cannot reach Neuronpedia at {api_url}") from None
    except (requests.RequestException, ValueError) as error:
        raise NeuronpediaUploadError(
            f"Neuronpedia at {api_url} did not take the graph: {scrubbed(error)}"
        ) from None
    finally:
        for line in progress.getvalue().splitlines():
            logger.debug("neuronpedia: %s", line.replace(api_key, "***"))
    return metadata.url or metadata.json_url
