"""The feature pack, read back the way circuit-tracer's frontend reads it.

``loadFeatureFromBinary`` (``init-feature-examples.js``): gunzip ``index.json.gz``, take
``index[layer].offsets[i]`` and ``offsets[i + 1]``, ask for ``bytes=start-end`` (inclusive, so
one byte past the record), read a 4-byte little-endian length, inflate that many bytes, parse
JSON. The record must validate as circuit-tracer's own ``feature_models.Model``.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import torch
from circuit_tracer.frontend.feature_models import Model as FrontendFeature

from tracerflow.dashboards import (
    DashboardConfig,
    cantor_pair,
    cantor_unpair,
    collect_dashboards,
    dashboard_records,
    pack_features,
    read_feature_pack,
    read_pack_summary,
    write_feature_pack,
)
from tracerflow.models import ReplacementModel

FEATURES = [(0, 3), (1, 5), (2, 7), (2, 511)]


def frontend_read(pack_dir: Path, feature_id: int) -> dict | None:
    layer, index = cantor_unpair(feature_id)
    entry = json.loads(gzip.decompress((pack_dir / "index.json.gz").read_bytes()))[layer]
    start, end = entry["offsets"][index], entry["offsets"][index + 1]
    if end <= start:
        return None
    data = (pack_dir / entry["filename"]).read_bytes()[start : end + 1]  # Range is inclusive
    length = int.from_bytes(data[:4], "little")
    return json.loads(zlib.decompress(data[4 : 4 + length]).decode("utf-8"))


def test_cantor_ids_are_the_frontends() -> None:
    for layer in range(13):
        for index in (0, 1, 2, 511, 15999, 16383):
            feature_id = cantor_pair(layer, index)
            # circuit_tracer.frontend.graph_models._cantor_pairing, written out
            assert feature_id == (layer + index) * (layer + index + 1) // 2 + index
            assert cantor_unpair(feature_id) == (layer, index)


def test_records_round_trip_through_the_pack_as_the_frontend_reads_them(
    models: dict[str, ReplacementModel], corpus: torch.Tensor, tmp_path: Path
) -> None:
    model = models["clt"]
    state = collect_dashboards(model, corpus.split(32), FEATURES, config=DashboardConfig())
    records = dashboard_records(state, model, "tracerflow-toy")
    pack = write_feature_pack(tmp_path / "pack", records, n_layers=3, d_transcoder=512)

    for layer, index in FEATURES:
        read = frontend_read(pack, cantor_pair(layer, index))
        assert read == records[(layer, index)]
        FrontendFeature.model_validate(read)
        top = read["examples_quantiles"][0]
        assert top["quantile_name"] == "Top activations" and top["examples"]
        example = top["examples"][0]
        assert len(example["tokens"]) == len(example["tokens_acts_list"])
        marked = example["tokens_acts_list"][example["train_token_ind"]]
        assert marked == max(example["tokens_acts_list"]) == read["act_max"]
        assert len(read["quantile_values"]) == 100
        assert read["quantile_values"] == sorted(read["quantile_values"])
        assert sum(read["histogram"]) == read["n_active"]
    assert frontend_read(pack, cantor_pair(1, 6)) is None  # not computed: empty slot
    assert read_feature_pack(pack) == records
    assert pack_features(pack) == set(FEATURES)
    summary = read_pack_summary(pack)
    assert [(row["layer"], row["index"]) for row in summary] == FEATURES


def test_the_same_records_give_the_same_bytes(
    models: dict[str, ReplacementModel], corpus: torch.Tensor, tmp_path: Path
) -> None:
    model = models["plt"]
    state = collect_dashboards(model, corpus.split(32), FEATURES[:2])
    records = dashboard_records(state, model, "tracerflow-toy")
    first = write_feature_pack(tmp_path / "a", records, 3, 512)
    second = write_feature_pack(tmp_path / "b", dict(reversed(records.items())), 3, 512)
    for name in sorted(p.name for p in first.iterdir()):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
