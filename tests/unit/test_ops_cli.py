"""`switchboard ops ...` against a fake management API on loopback (tests/fake_management.py): what the
operator reads, what is sent (dry run first, chunks of 1000), and the exit codes."""

from __future__ import annotations

import io
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.cli import main
from tests.fake_management import FakeManagementServer, running_fake


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeManagementServer]:
    """The fake API, and the dev.json a local stack serving it would write."""
    monkeypatch.setenv("COLUMNS", "240")  # Rich: wide enough that cells are not folded
    with running_fake() as server:
        (tmp_path / "dev.json").write_text(json.dumps(server.dev_json()))
        yield server


def ops(tmp_path: Path, *args: str) -> int:
    return main(["ops", *args, "--data-dir", str(tmp_path)])


def test_health_prints_one_row_per_queue_and_exits_by_status(fake, tmp_path, capsys):
    fake.state.dead_letter("cleanup", "InvalidJob", "invalid-job", 2, "2026-11-29T10:00:00+00:00")
    assert ops(tmp_path, "health") == 0
    out = capsys.readouterr().out
    assert "status: healthy" in out and "database: reachable, schema 0011 (at head)" in out
    (cleanup,) = [line for line in out.splitlines() if " cleanup " in line]
    assert [cell.strip() for cell in cleanup.split("│")[1:-1]] == [
        "cleanup",
        "3",
        "1",
        "0",
        "2m 5s",
        "2",
        "1h 1m",
        "Enabled",
        "degraded",
    ]
    assert "cleanup: 2 messages in the DLQ" in out
    fake.state.status = "degraded"
    assert ops(tmp_path, "health") == 1
    fake.state.status = "unhealthy"
    assert ops(tmp_path, "health") == 2
    assert "status: unhealthy" in capsys.readouterr().out


def test_health_json_is_the_api_answer(fake, tmp_path, capsys):
    assert ops(tmp_path, "health", "--json") == 0
    assert set(json.loads(capsys.readouterr().out)["queues"]) == {"send-message", "cleanup", "indexing"}


def test_failures_lists_groups_latest_first_with_dlq_depths(fake, tmp_path, capsys):
    older = fake.state.dead_letter("cleanup", "InvalidJob", "invalid-job", 1, "2026-11-28T09:00:00+00:00")
    newer = fake.state.dead_letter(
        "send-message", "UnknownEntity", "unknown-entity", 7, "2026-11-29T09:00:00+00:00"
    )
    assert ops(tmp_path, "failures") == 0
    out = capsys.readouterr().out
    assert out.index("UnknownEntity") < out.index("InvalidJob")
    assert newer[0] in out and older[0] in out and "(+2)" in out  # 3 samples of 5 shown
    assert "DLQ depth: cleanup=1, indexing=0, send-message=7" in out
    assert ops(tmp_path, "failures", "--job-type", "cleanup", "--error-class", "InvalidJob") == 0
    assert fake.state.requests[-1] == (
        "GET",
        "/failures",
        {"job_type": "cleanup", "error_class": "InvalidJob"},
    )
    assert "UnknownEntity" not in capsys.readouterr().out


def test_failures_says_so_when_there_are_none(fake, tmp_path, capsys):
    assert ops(tmp_path, "failures") == 0
    assert "no failures recorded" in capsys.readouterr().out


def test_redrive_with_yes_dry_runs_then_moves_only_the_filtered_class(fake, tmp_path, capsys):
    fake.state.dead_letter("send-message", "UnknownEntity", "unknown-entity", 5, "2026-11-29T09:00:00+00:00")
    kept = fake.state.dead_letter("send-message", "InvalidJob", "invalid-job", 3, "2026-11-29T09:00:00+00:00")
    code = ops(tmp_path, "redrive", "--job-type", "send-message", "--error-class", "UnknownEntity", "--yes")
    out = capsys.readouterr().out
    assert code == 0, out
    posts = [body for method, path, body in fake.state.requests if (method, path) == ("POST", "/redrive")]
    assert [p["dry_run"] for p in posts] == [True, False]
    assert posts[0]["filter"] == {"error_class": "UnknownEntity"} and posts[0]["job_type"] == "send-message"
    assert "dry run (selective): 5 send-message messages matching the filter" in out
    assert "completed: moved 5, kept 0, failed 0" in out and "5/5" in out  # the progress bar's last state
    assert [m["job_id"] for m in fake.state.dlq["send-message"]] == kept


def test_redrive_without_a_filter_is_the_native_whole_dlq_move(fake, tmp_path, capsys):
    fake.state.dead_letter("cleanup", "InvalidJob", "invalid-job", 2, "2026-11-29T09:00:00+00:00")
    assert ops(tmp_path, "redrive", "--job-type", "cleanup", "--yes", "--max-per-second", "10") == 0
    first = next(body for method, _, body in fake.state.requests if method == "POST")
    assert first == {"job_type": "cleanup", "dry_run": True, "max_per_second": 10}
    assert "dry run (native): 2 cleanup messages in the DLQ" in capsys.readouterr().out
    assert fake.state.dlq["cleanup"] == []


def test_redrive_asks_and_a_no_moves_nothing(fake, tmp_path, capsys, monkeypatch):
    fake.state.dead_letter("cleanup", "InvalidJob", "invalid-job", 2, "2026-11-29T09:00:00+00:00")
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert ops(tmp_path, "redrive", "--job-type", "cleanup") == 1
    out = capsys.readouterr().out
    assert "redrive 2 messages to the cleanup queue?" in out and "not redriven" in out
    assert [b["dry_run"] for m, p, b in fake.state.requests if p == "/redrive"] == [True]
    assert len(fake.state.dlq["cleanup"]) == 2
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    assert ops(tmp_path, "redrive", "--job-type", "cleanup") == 0
    assert fake.state.dlq["cleanup"] == []


def test_redrive_without_yes_and_no_answer_moves_nothing(fake, tmp_path, capsys, monkeypatch):
    fake.state.dead_letter("cleanup", "InvalidJob", "invalid-job", 2, "2026-11-29T09:00:00+00:00")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # a script's closed stdin
    assert ops(tmp_path, "redrive", "--job-type", "cleanup") == 1
    assert "pass --yes" in capsys.readouterr().out
    assert len(fake.state.dlq["cleanup"]) == 2


def test_redrive_dry_run_only_and_nothing_to_move(fake, tmp_path, capsys):
    fake.state.dead_letter("cleanup", "InvalidJob", "invalid-job", 2, "2026-11-29T09:00:00+00:00")
    assert ops(tmp_path, "redrive", "--job-type", "cleanup", "--dry-run") == 0
    assert ops(tmp_path, "redrive", "--job-type", "indexing", "--yes") == 0
    assert "nothing to redrive" in capsys.readouterr().out
    assert all(b["dry_run"] for m, p, b in fake.state.requests if p == "/redrive")
    assert len(fake.state.dlq["cleanup"]) == 2


def test_redrive_no_wait_prints_the_id_and_redrives_shows_lists_and_cancels(fake, tmp_path, capsys):
    fake.state.dead_letter("cleanup", "InvalidJob", "invalid-job", 4, "2026-11-29T09:00:00+00:00")
    assert ops(tmp_path, "redrive", "--job-type", "cleanup", "--yes", "--no-wait") == 0
    (redrive_id,) = fake.state.redrives
    assert f"redrive {redrive_id} started (native)" in capsys.readouterr().out
    assert ops(tmp_path, "redrives") == 0
    assert redrive_id in capsys.readouterr().out
    assert ops(tmp_path, "redrives", redrive_id, "--cancel", "--json") == 0
    assert json.loads(capsys.readouterr().out)["status"] == "cancelled"
    assert ops(tmp_path, "redrives", str(uuid.uuid4())) == 3
    assert "404 unknown-redrive" in capsys.readouterr().err
    assert ops(tmp_path, "redrives", "--cancel") == 3
    assert "--cancel needs the REDRIVE_ID" in capsys.readouterr().err


def test_redrive_of_an_unknown_job_type_shows_the_apis_error(fake, tmp_path, capsys):
    assert ops(tmp_path, "redrive", "--job-type", "no-such-type", "--yes") == 3
    assert "400 unknown-job-type on POST /redrive: job_type must be one of" in capsys.readouterr().err


def _job(job_type: str = "cleanup") -> dict[str, object]:
    return {"job_id": str(uuid.uuid4()), "job_type": job_type, "schema_version": 1, "data": {}}


def test_enqueue_sends_jsonl_in_chunks_of_1000_and_prints_per_item_results(fake, tmp_path, capsys):
    jobs = [_job() for _ in range(2501)]
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(json.dumps(j) for j in jobs) + "\n\n")
    assert ops(tmp_path, "enqueue", str(path)) == 0
    sizes = [len(b["jobs"]) for m, p, b in fake.state.requests if p == "/jobs/cleanup"]
    assert sizes == [1000, 1000, 501]
    assert [j["job_id"] for j in fake.state.enqueued["cleanup"]] == [j["job_id"] for j in jobs]
    out = capsys.readouterr().out
    assert "2501 queued, 0 rejected of 2501" in out and str(jobs[-1]["job_id"]) in out


def test_enqueue_reports_rejected_items_and_exits_non_zero(fake, tmp_path, capsys):
    good, bad = _job(), _job("indexing")
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps({"jobs": [good, bad]}))
    assert ops(tmp_path, "enqueue", str(path), "--job-type", "cleanup") == 1
    out = capsys.readouterr().out
    assert "1 queued, 1 rejected of 2" in out
    (rejected,) = [line for line in out.splitlines() if "rejected" in line and "│" in line]
    cells = [cell.strip() for cell in rejected.split("│")[1:-1]]
    assert cells == [
        "2",
        "cleanup",
        bad["job_id"],
        "rejected",
        "invalid-job job_type: does not match the queue",
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"job_id": "a", "job_type": "cleanup"}\n{oops\n', "jobs.txt, line 2: not JSON"),
        ("[]", "no jobs"),
        ("[1]", "job 1 is not a JSON object"),
        ('[{"job_id": "a"}]', "job 1 has no job_type: give --job-type"),
    ],
)
def test_enqueue_refuses_a_bad_file_before_sending_anything(fake, tmp_path, capsys, content, message):
    (tmp_path / "jobs.txt").write_text(content)
    assert ops(tmp_path, "enqueue", str(tmp_path / "jobs.txt")) == 3
    assert message in capsys.readouterr().err
    assert fake.state.requests == []


def test_enqueue_of_a_missing_file_is_a_clear_error(fake, tmp_path, capsys):
    assert ops(tmp_path, "enqueue", str(tmp_path / "nope.json")) == 3
    assert "cannot read" in capsys.readouterr().err


def test_a_wrong_secret_is_a_403_and_exit_3(fake, tmp_path, capsys):
    (tmp_path / "dev.json").write_text(json.dumps(fake.dev_json() | {"aws_secret_access_key": "wrong"}))
    assert ops(tmp_path, "health") == 3
    assert "403 Forbidden on GET /health" in capsys.readouterr().err


def test_an_unreachable_api_and_a_stack_without_one_are_exit_3(tmp_path, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/local"
        info = {
            "region": "us-east-1",
            "management_url": url,
            "aws_access_key_id": "k",
            "aws_secret_access_key": "s",
        }
        (tmp_path / "dev.json").write_text(json.dumps(info))
        assert ops(tmp_path, "health") == 3
    assert f"cannot reach the management API at {url}" in capsys.readouterr().err
    (tmp_path / "dev.json").write_text(json.dumps({"region": "us-east-1"}))
    assert ops(tmp_path, "failures") == 3
    assert "does not serve the management API" in capsys.readouterr().err
    assert main(["ops", "health", "--local", "--url", "https://x.example.com"]) == 3
    assert "exclusive" in capsys.readouterr().err
