"""What the command line prints holds no secret: no Redis password in any URL, no customer
email or payment token in ``chumon dlq show``/``list`` unless ``--reveal`` is given; and ``dlq
show`` prints every attempt's traceback, as the README promises."""

from __future__ import annotations

import json

import pytest
from redis import Redis

from chumon import cli
from chumon.logs import mask, mask_url
from chumon.settings import load
from tests.apps import sample
from tests.support import make_settings, run_burst
from workers import Enqueuer


@pytest.fixture(autouse=True)
def environment(cli_environment: None) -> None:
    """Commands run in-process against the suite's Redis (tests/conftest.py)."""


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://u:secret@127.0.0.1:1/0", "redis://u:***@127.0.0.1:1/0"),
        ("redis://:secret@127.0.0.1:1/0", "redis://:***@127.0.0.1:1/0"),
        ("redis://secret@127.0.0.1:1/0", "redis://***@127.0.0.1:1/0"),
        ("redis://u:sec@ret@127.0.0.1:1/0", "redis://u:***@127.0.0.1:1/0"),
        ("rediss://127.0.0.1:1/0?password=secret&db=0", "rediss://127.0.0.1:1/0?password=***&db=0"),
    ],
)
def test_a_redis_url_is_printed_without_its_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, url: str, shown: str
) -> None:
    monkeypatch.setenv("REDIS_URL", url)  # nothing listens on port 1
    load.cache_clear()
    code = cli.main(["queues"])
    out, err = capsys.readouterr()
    assert code == 3 and shown in err, err
    assert "secret" not in out + err and "ret@" not in err


def test_mask_url_leaves_urls_without_secrets_alone() -> None:
    for url in ["redis://127.0.0.1:6379/0", "unix:///tmp/redis.sock?db=1", "http://127.0.0.1:9181/0/view"]:
        assert mask_url(url) == url
    line = "Redis at redis+sentinel://:pw@s1:26379,s2:26379/main/0; mail to ada@example.com"
    assert mask(line) == "Redis at redis+sentinel://:***@s1:26379,s2:26379/main/0; mail to a***@example.com"


def test_dlq_show_masks_personal_data_unless_revealed_and_prints_every_traceback(
    capsys: pytest.CaptureFixture[str], redis: Redis, redis_url: str
) -> None:
    settings = make_settings(redis_url)
    text = "refund for ada.lovelace@example.com paid with tok_visa_4242"
    job_id = Enqueuer(redis, settings).enqueue(sample.permanent, {"text": text})
    run_burst(redis, sample.registry, settings, queues=["q"])

    code = cli.main(["dlq", "show", job_id])
    shown, _ = capsys.readouterr()
    assert code == 0
    assert "ada.lovelace@example.com" not in shown and "tok_visa_4242" not in shown
    assert "a***@example.com" in shown and "tok_***" in shown
    # the attempt's line, then its traceback, indented under it
    lines = shown.splitlines()
    attempt = next(i for i, line in enumerate(lines) if line.startswith("  - attempt 1 "))
    assert "Permanent: " in lines[attempt]
    assert lines[attempt + 1] == "      Traceback (most recent call last):"
    assert any(
        line.startswith("      tests.apps.sample") or "sample.py" in line for line in lines[attempt + 1 :]
    )

    assert cli.main(["dlq", "show", job_id, "--reveal"]) == 0
    revealed, _ = capsys.readouterr()
    assert "ada.lovelace@example.com" in revealed and "tok_visa_4242" in revealed

    assert cli.main(["dlq", "show", job_id, "--json"]) == 0
    as_json, _ = capsys.readouterr()
    assert "ada.lovelace@example.com" not in as_json and json.loads(as_json)["id"] == job_id

    assert cli.main(["dlq", "list"]) == 0
    listed, _ = capsys.readouterr()
    assert job_id in listed and "ada.lovelace@example.com" not in listed
    assert cli.main(["dlq", "list", "--json", "--reveal"]) == 0
    listed, _ = capsys.readouterr()
    assert "ada.lovelace@example.com" in listed


def test_job_show_masks_personal_data_unless_revealed(
    capsys: pytest.CaptureFixture[str], redis: Redis, redis_url: str
) -> None:
    settings = make_settings(redis_url)
    text = "grace.hopper@example.com tok_mc_5555"
    job_id = Enqueuer(redis, settings).enqueue(sample.record, {"name": text})
    for argv in (["job", "show", job_id], ["job", "show", job_id, "--json"]):
        assert cli.main(argv) == 0
        shown, _ = capsys.readouterr()
        assert job_id in shown and "grace.hopper@example.com" not in shown and "tok_mc_5555" not in shown
        assert "g***@example.com" in shown
    assert cli.main(["job", "show", job_id, "--reveal"]) == 0
    revealed, _ = capsys.readouterr()
    assert "grace.hopper@example.com" in revealed and "tok_mc_5555" in revealed
