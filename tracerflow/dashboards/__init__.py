"""Feature dashboards: what each transcoder feature fires on, computed offline over a corpus and
written as circuit-tracer's frontend reads them (``docs/dashboards.md``).

``compute.collect_dashboards`` streams token batches, ``records.dashboard_records`` turns the
result into frontend records, ``pack.write_feature_pack`` writes them;
``build.build_feature_pack`` does all three for the features an earlier pack lacks. Names are
imported on first use, so the viewer can read packs (``pack``) without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FeaturePackResult": "build",
    "build_feature_pack": "build",
    "DashboardConfig": "config",
    "DashboardState": "compute",
    "collect_dashboards": "compute",
    "feature_logits": "compute",
    "wanted_features": "compute",
    "dashboard_records": "records",
    "cantor_pair": "pack",
    "cantor_unpair": "pack",
    "graph_file_features": "pack",
    "pack_features": "pack",
    "read_feature_pack": "pack",
    "read_pack_summary": "pack",
    "write_feature_pack": "pack",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
