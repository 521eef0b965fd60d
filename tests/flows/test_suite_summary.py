"""The suite's flow run carries the summary artifact (issue 26, part 5): in the Prefect UI the run
a person clicks is the suite's, and its scoring run is one level down."""

from __future__ import annotations

from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
)

from tracerflow.flows.report import SUMMARY_KEY
from tracerflow.flows.suite import suite_flow

SUITE = """\
name: summary-check
transcoders: [toy-clt]
prompts: ["The cat sat on the"]
eval_tokens: 32
"""


def test_the_suite_run_carries_its_scoring_run_s_summary(home: Path, tmp_path: Path) -> None:
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(SUITE)

    state = suite_flow(str(suite_file), return_state=True)

    assert state.is_completed(), state.message
    suite_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        (scoring_run,) = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[suite_run_id])
            )
        )
        summaries = {
            run_id: [
                artifact
                for artifact in client.read_artifacts(
                    artifact_filter=ArtifactFilter(
                        flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])
                    )
                )
                if artifact.key == SUMMARY_KEY
            ]
            for run_id in (suite_run_id, scoring_run.id)
        }
    (on_suite,), (on_scoring,) = summaries[suite_run_id], summaries[scoring_run.id]
    assert on_suite.type == "markdown"
    assert on_suite.data == on_scoring.data
    assert "# Scores of suite `summary-check`" in str(on_suite.data)
    assert "1 of 1 items scored." in str(on_suite.data)
