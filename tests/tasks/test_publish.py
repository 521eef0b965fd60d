"""Publishing into a shared publish root: two workers at once lose no ``graph-metadata.json`` entry.

The workers are two real processes calling the export stage's ``publish`` on export folders
derived from the demo's (the shared ``demo_home``: its graph files under new slugs, no new
flow run), released together so that their read-modify-writes of the index overlap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tracerflow.fsutil import atomic_directory
from tracerflow.viewer.graph_ids import GRAPH_METADATA_FILE

REPO_ROOT = Path(__file__).resolve().parents[2]
# Each worker publishes every demo graph this many times, under slugs of its own: 2 x 12 x 4 =
# 96 entries. With the index's lock taken out, this test lost 9, 21 and 17 of them (3 tries).
COPIES = 4

# A worker: imports first, says "ready", publishes when told "go", then prints when it started
# and finished publishing (so the test can check that the two really overlapped).
WORKER = """
import json, sys, time
from pathlib import Path
from tracerflow.viewer.publish import publish
jobs = json.loads(Path(sys.argv[1]).read_text())
root = Path(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
started = time.time()
for export_dir, slug in jobs:
    publish(Path(export_dir), slug, root)
print(json.dumps([started, time.time()]), flush=True)
"""


def derived_export(source: Path, slug: str, folder: Path) -> Path:
    """A copy of the export folder ``source`` whose graph is ``slug``: its graph file renamed
    and its slug rewritten in the file and its metadata entry."""
    ((graph_file),) = source.glob("toy-*.json")
    graph = json.loads(graph_file.read_text())
    graph["metadata"]["slug"] = slug
    (entry,) = json.loads((source / GRAPH_METADATA_FILE).read_text())["graphs"]
    with atomic_directory(folder) as tmp:
        (tmp / f"{slug}.json").write_text(json.dumps(graph))
        (tmp / GRAPH_METADATA_FILE).write_text(json.dumps({"graphs": [{**entry, "slug": slug}]}))
    return folder


def test_two_workers_publishing_at_once_lose_no_entry(demo_home: Path, tmp_path: Path) -> None:
    sources = sorted((demo_home / "artifacts" / "export").glob("[0-9a-f]*"))
    assert len(sources) == 12
    root = tmp_path / "published"
    expected: dict[str, Path] = {}
    job_files = []
    for worker in ("a", "b"):
        jobs = []
        for copy in range(COPIES):
            for number, source in enumerate(sources):
                slug = f"{worker}{copy}-graph-{number}"
                export_dir = derived_export(source, slug, tmp_path / "exports" / slug)
                jobs.append((str(export_dir), slug))
                expected[slug] = export_dir
        job_file = tmp_path / f"jobs-{worker}.json"
        job_file.write_text(json.dumps(jobs))
        job_files.append(job_file)

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(job_file), str(root)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for job_file in job_files
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline() == "ready\n"
        for worker in workers:  # both are waiting on stdin: release them together
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        spans = [json.loads(worker.communicate(timeout=300)[0]) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert [worker.returncode for worker in workers] == [0, 0]
    (a_start, a_end), (b_start, b_end) = spans
    assert a_start < b_end and b_start < a_end, "the two workers did not publish at once"

    index = json.loads((root / GRAPH_METADATA_FILE).read_text())["graphs"]
    assert sorted(entry["slug"] for entry in index) == sorted(expected)  # each once, none lost
    for entry in index:
        export_dir = expected[entry["slug"]]
        (written,) = json.loads((export_dir / GRAPH_METADATA_FILE).read_text())["graphs"]
        assert entry == written
        published = root / f"{entry['slug']}.json"
        assert published.read_bytes() == (export_dir / published.name).read_bytes()
