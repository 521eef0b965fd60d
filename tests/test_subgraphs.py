"""Subgraph scores (docs/metrics.md, "Subgraph scores") worked out by hand on a small graph, and
the viewer's node ids and view state read into pinned features."""

from __future__ import annotations

import pytest
import torch
from circuit_tracer.attribution.targets import LogitTarget
from circuit_tracer.graph import Graph
from transformer_lens import HookedTransformerConfig

from tracerflow.errors import UsageError
from tracerflow.subgraphs import pinned_feature_mask, pinned_nodes, score_subgraph

# Node indices of hand_graph: 3 features, errors [layer][pos], 2 tokens, 1 logit.
FA, FB, FC = 0, 1, 2
E00, E01, E10, E11 = 3, 4, 5, 6
T0, T1, LOGIT = 7, 8, 9
TOKENS = [4, 6]
LOGIT_TOKEN = 9


def hand_graph() -> Graph:
    """Two layers, two positions. Features (layer, position, index in layer): fA (0, 0, 5) =
    node id "0_5_0", fB (0, 1, 7) = "0_7_1", fC (1, 1, 2) = "1_2_1". Edges (target <- source:
    weight): fA <- t0: 1; fB <- t1: 1, fB <- fA: 1; fC <- fB: 2, fC <- e01: 1, fC <- t1: 1;
    logit <- fC: 2, logit <- fB: -1 (|.| counts), logit <- e11: 1. The logit's probability: 1."""
    adjacency = torch.zeros(10, 10)
    for target, source, weight in [
        (FA, T0, 1.0),
        (FB, T1, 1.0),
        (FB, FA, 1.0),
        (FC, FB, 2.0),
        (FC, E01, 1.0),
        (FC, T1, 1.0),
        (LOGIT, FC, 2.0),
        (LOGIT, FB, -1.0),
        (LOGIT, E11, 1.0),
    ]:
        adjacency[target, source] = weight
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=8, n_ctx=8, d_head=4, d_vocab=20, act_fn="relu"
    )
    return Graph(
        input_string="a b",
        input_tokens=torch.tensor(TOKENS),
        active_features=torch.tensor([[0, 0, 5], [0, 1, 7], [1, 1, 2]]),
        adjacency_matrix=adjacency,
        cfg=cfg,
        selected_features=torch.arange(3),
        activation_values=torch.ones(3),
        logit_targets=[LogitTarget("x", LOGIT_TOKEN)],
        logit_probabilities=torch.tensor([1.0]),
        vocab_size=20,
    )


def test_subgraph_scores_match_the_definition_worked_by_hand() -> None:
    """Pinned: fC, an error, a token and the logit (only fC is a feature: fA and fB go to error).

    Whole graph, row-normalised |A|: fA <- t0 1; fB <- t1 1/2, fA 1/2; fC <- fB 1/2, e01 1/4,
    t1 1/4; logit <- fC 1/2, fB 1/4, e11 1/4. Influence on the logit (every path's product):
      fC 1/2; fB 1/4 + 1/2*1/2 = 1/2; e11 1/4; e01 1/4*1/2 = 1/8; fA 1/2*1/2 = 1/4;
      t1 1/4*1/2 + 1/2*1/2 = 3/8; t0 1*1/4 = 1/4; e00 = e10 = 0.
      replacement = (t0 + t1) / (t0 + t1 + errors) = (5/8) / (5/8 + 3/8) = 5/8
      completeness, in 16ths of (influence + logit weight) times each node's non-error input
      share: fA 4*1, fB 8*1, fC 8*3/4, e01 2*1, e11 4*1, t0 4*1, t1 6*1, logit 16*3/4
        = (4 + 8 + 6 + 2 + 4 + 4 + 6 + 12) / (4 + 8 + 8 + 2 + 4 + 4 + 6 + 16) = 46/52 = 23/26
    Subgraph: fA merged into e00 (its only edge, into fB, goes with fB's row), fB into e01:
      fC <- e01 1 + 2 = 3, t1 1; logit <- fC 2, e01 -1, e11 1. Normalised: fC <- e01 3/4,
      t1 1/4; logit <- fC 1/2, e01 1/4, e11 1/4. Influence: fC 1/2; e01 1/4 + 3/4*1/2 = 5/8;
      e11 1/4; t1 1/4*1/2 = 1/8; t0 0.
      replacement = (1/8) / (1/8 + 5/8 + 1/4) = 1/8
      completeness, in 8ths: fC 4*1/4, e01 5, e11 2, t1 1, logit 8*(1 - 1/4 - 1/4)
        = (1 + 5 + 2 + 1 + 4) / (4 + 5 + 2 + 1 + 8) = 13/20
    """
    graph = hand_graph()
    pinned = ["1_2_1", "err_0_0", f"E_{TOKENS[1]}_1", f"3_{LOGIT_TOKEN}_1"]
    keep = pinned_feature_mask(graph, pinned, "test")
    assert keep.tolist() == [False, False, True]

    scores = score_subgraph(graph, keep)

    assert scores.graph_replacement == pytest.approx(5 / 8, abs=1e-6)
    assert scores.graph_completeness == pytest.approx(23 / 26, abs=1e-6)
    assert scores.subgraph_replacement == pytest.approx(1 / 8, abs=1e-6)
    assert scores.subgraph_completeness == pytest.approx(13 / 20, abs=1e-6)
    assert (scores.n_pinned_features, scores.n_selected_features) == (1, 3)


def test_pinning_every_feature_gives_the_whole_graph_s_scores() -> None:
    graph = hand_graph()
    keep = pinned_feature_mask(graph, ["0_5_0", "0_7_1", "1_2_1"], "test")
    scores = score_subgraph(graph, keep)
    assert scores.subgraph_replacement == scores.graph_replacement
    assert scores.subgraph_completeness == scores.graph_completeness


@pytest.mark.parametrize(
    "node_id",
    [
        "1_2_0",  # fC's layer and index at another position: not a node
        "1_5_0",  # no such feature
        "err_2_0",  # layer 2 of a 2-layer model
        "err_0_2",  # position 2 of 2
        f"E_{TOKENS[0]}_1",  # the token at position 1 is another one
        f"3_{LOGIT_TOKEN + 1}_1",  # not a logit target
        f"3_{LOGIT_TOKEN}_0",  # logits sit at the last position
        "supernode-0",
        "0_5",
    ],
)
def test_an_id_that_names_no_node_is_one_error_naming_it(node_id: str) -> None:
    with pytest.raises(UsageError) as raised:
        pinned_feature_mask(hand_graph(), ["1_2_1", node_id], "pins.json")
    message = str(raised.value)
    assert message.startswith(f"pins.json: node id {node_id!r} is not a node of this graph")
    assert "\n" not in message


def test_the_view_state_in_both_shapes_the_viewer_writes() -> None:
    # The URL form (what Save sends): a comma-separated string and a JSON string.
    from_url = pinned_nodes(
        {"pinnedIds": "1_2_1,err_0_0", "supernodes": '[["group","0_5_0","1_2_1"]]'}, "x"
    )
    # The graph file's form (circuit-tracer's QParams): lists.
    from_file = pinned_nodes(
        {"pinnedIds": ["1_2_1", "err_0_0"], "supernodes": [["group", "0_5_0", "1_2_1"]]}, "x"
    )
    assert from_url == from_file
    assert from_url.node_ids == ("0_5_0", "1_2_1", "err_0_0")  # supernode members count
    assert from_url.supernodes == (("group", "0_5_0", "1_2_1"),)


@pytest.mark.parametrize(
    ("q_params", "says"),
    [
        ([], "not a JSON object"),
        ({"pinnedIds": 3}, "pinnedIds: expected node ids"),
        ({"pinnedIds": ["a", 1]}, "pinnedIds: expected node ids"),
        ({"pinnedIds": "a", "supernodes": "[["}, "supernodes: not JSON"),
        ({"pinnedIds": "a", "supernodes": [["label", 2]]}, "supernodes: expected a list"),
        ({"pinnedIds": "", "supernodes": []}, "no pinned node ids"),
        ({"linkType": "both"}, "no pinned node ids"),
    ],
)
def test_a_view_state_of_another_shape_is_one_error(q_params: object, says: str) -> None:
    with pytest.raises(UsageError, match=f"^pins.json: .*{says}"):
        pinned_nodes(q_params, "pins.json")
