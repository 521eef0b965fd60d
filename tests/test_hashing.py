"""Cache keys, row ids and slugs are the values tracerflow wrote before: an artifact store and a
score database written by an earlier version are still hit and continued.

Every expected value below was computed by tracerflow's code before the stage results were typed
and the hashing was gathered into ``tracerflow.hashing`` (main at 2106579); a change to how any
of them is hashed fails here.
"""

from __future__ import annotations

import pytest

from tracerflow.dashboards.config import DashboardConfig
from tracerflow.parameters import AttributionParams, RunRequest
from tracerflow.presets import run_parameters
from tracerflow.storage.artifacts import stage_key
from tracerflow.storage.records import ModelInfo, TranscoderInfo, params_hash, prompt_id
from tracerflow.tasks import attribute
from tracerflow.tasks.convert import convert_key
from tracerflow.tasks.dashboards import dashboards_key, feature_pack_name
from tracerflow.tasks.download import CODE_VERSION as DOWNLOAD_VERSION
from tracerflow.tasks.export import export_key, graph_slug
from tracerflow.tasks.results import ConvertedTranscoder, ModelSpec
from tracerflow.tasks.score import score_key

PROMPT = "Mary and John went to the store, Jon gave a drink to"


def test_the_download_and_convert_keys_are_the_ones_stores_hold() -> None:
    download = stage_key("download", DOWNLOAD_VERSION, f="/ckpt|10:20|30:40", source="toy-clt")
    assert download == "3a317c72504d08536a5dc1cc7705f050708b1f7f428e6f02fbe517c12c15cd5c"
    assert (
        convert_key("a" * 64, "float32")
        == "50503543ffdec67dbb4b5f3f483e8b409613600dbc26e4f3c46880c5c5e8c26d"
    )


def test_the_attribute_key_is_the_one_stores_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    # The installed versions are part of the key; fixed here so the key is the same everywhere.
    versions = {
        "tracerflow": "0.0",
        "attribute_stage": "5",
        "circuit_tracer": "0.1",
        "torch": "2.0",
    }
    monkeypatch.setattr(attribute, "code_versions", lambda: versions)
    model = ModelSpec(name="toy-gpt2", identity="toy-gpt2:abc", dtype="float32", device="cpu")
    converted = ConvertedTranscoder(
        path="/converted",
        key="c" * 64,
        kind="clt",
        n_layers=3,
        d_model=64,
        d_features=128,
        activation="topk",
        activation_params={"k": 12},
        dtype="float32",
        content_hash="a" * 64,
    )
    params = AttributionParams(batch_size=256)
    key = attribute.attribute_key(model, converted, PROMPT, params, threads=1)
    assert key == "c5125cd26f9c98024bfc57b09d320f683ed3ea94a310dd2b3a14823f135ab692"
    # On CPU the CUDA opt-in changes nothing; on CUDA the two paths are two graphs.
    assert attribute.attribute_key(model, converted, PROMPT, params, 1, True) == key
    on_cuda = model.model_copy(update={"device": "cuda"})
    cuda_keys = {
        attribute.attribute_key(on_cuda, converted, PROMPT, params, 1, opted_in)
        for opted_in in (False, True)
    }
    assert len(cuda_keys) == 2 and key not in cuda_keys


def test_the_score_and_export_keys_and_the_slug_are_the_ones_stores_hold() -> None:
    assert (
        score_key("d" * 64, 0.8, 0.98)
        == "04839c19e7f42458053de7d33ca77bd1b709fbb795139feb56d54b7fcc9c8dcf"
    )
    assert (
        export_key("e" * 64, "toy-clt-aaaaaaaa-12345678", 0.8, 0.98)
        == "289c3d8d5613f4f95dbc0ae02132d1dd8fdab17f5e0f2c23033f45eee8734a2e"
    )
    slug = graph_slug("georglange/crosslayer-transcoder-topk-16k", "b" * 64, PROMPT)
    assert slug == "georglange-crosslayer-transcoder-topk-16k-bbbbbbbb-d2cf6f3e"


def test_the_dashboards_key_and_pack_name_are_pinned() -> None:
    """The store folder's key (as main had it at d3df26d) and the published pack's name, which
    the graphs' ``scan`` carries: weights, model, corpus and settings each change the name."""
    config = DashboardConfig()
    key = dashboards_key("a" * 64, "toy-gpt2:abc", "f" * 64, config)
    assert key == "cdb33c18cadd85055dcdcec5b2c2cef2cc68b8b852d19a30eca6a61035baee7c"
    name = feature_pack_name("a" * 64, "toy-gpt2:abc", "file:" + "f" * 64, config)
    assert name == "tracerflow-aaaaaaaaaaaa-edbe6495"
    others = {
        feature_pack_name("b" * 64, "toy-gpt2:abc", "file:" + "f" * 64, config),
        feature_pack_name("a" * 64, "gpt2:xyz", "file:" + "f" * 64, config),
        feature_pack_name("a" * 64, "toy-gpt2:abc", "file:" + "e" * 64, config),
        feature_pack_name("a" * 64, "toy-gpt2:abc", "file:" + "f" * 64, DashboardConfig(seed=1)),
    }
    assert len(others) == 4 and name not in others


def test_row_ids_are_the_ones_databases_hold() -> None:
    transcoder = TranscoderInfo("toy-clt", None, None, "a" * 64, "clt", 2, 4, 8, "topk", {"k": 2})
    unknown = TranscoderInfo("toy-clt", None, None, None, None, None, None, None, None)
    assert (
        transcoder.transcoder_id
        == "03e2f72c094f92ce575a4bcd32aa2ac10ee4e1caed1bad68bd75a45d5576ec81"
    )
    assert unknown.transcoder_id == (
        "353a7b524064baac4332b1d64e46a3cfff74945910af3efdf7567f4403eecfe5"
    )
    assert (
        ModelInfo("gpt2", 12, 768, 50257, 1024).model_id
        == "352181acd01cb9888201805298c1d2e251f77f48e23023290acbf92dcd79b007"
    )
    assert prompt_id(PROMPT) == "08c5b8715e1443502daabcbb663ffe4e02aa4c3d7c6d5df4b12820daf4b23175"


@pytest.mark.parametrize(
    ("source", "request_values", "expected_hash"),
    [
        ("toy-clt", {}, "d7d2a85de06e92ec53f246c0215ddec4c2347bdef0af1c0712f44441bccfd21f"),
        (
            "gpt2-clt-16k",
            {"batch_size": 64, "offload": "cpu"},
            "e8d1134fcc69f1cf35a3feedd61bdb3623e6fcbc54413b4bd6a86723bffacf0e",
        ),
    ],
)
def test_a_runs_recorded_parameters_hash_as_before(
    source: str, request_values: dict[str, object], expected_hash: str
) -> None:
    request = RunRequest(transcoders=[source], prompts=[PROMPT], **request_values)  # type: ignore[arg-type]
    recorded = run_parameters(source, request).recorded()
    assert recorded == {
        "max_n_logits": 10,
        "desired_logit_prob": 0.95,
        "max_feature_nodes": 8192,
        "batch_size": 64,
        "offload": request_values.get("offload"),
        "node_threshold": 0.8,
        "edge_threshold": 0.98,
    }
    assert params_hash(recorded) == expected_hash
