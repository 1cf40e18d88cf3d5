import pickle
import zlib

import pytest

from workers.codec import (
    HISTORY_LIMIT,
    BadJob,
    Failure,
    append_failure,
    decode_data,
    decode_exc_string,
    decode_result,
    describe,
    encode_data,
    encode_exc_string,
    encode_result,
)


def test_data_round_trip_in_rq_layout() -> None:
    raw = encode_data("demo.work", '{"item":3}')
    assert raw == '["demo.work",null,[{"item":3}],{}]'
    assert decode_data(raw.encode()) == ("demo.work", {"item": 3})


def test_rq_compressed_and_kwargs_forms_are_read() -> None:
    raw = zlib.compress(b'["demo.work",null,[],{"item":4}]')
    assert decode_data(raw) == ("demo.work", {"item": 4})


def test_pickle_is_refused_without_unpickling() -> None:
    class Boom:
        def __reduce__(self):  # unpickling this would run code
            return (exec, ("raise SystemExit('unpickled!')",))

    for data in (pickle.dumps(("f", None, (), {})), zlib.compress(pickle.dumps(("f", None, (), {})))):
        with pytest.raises(BadJob, match="pickle"):
            decode_data(data)
    with pytest.raises(BadJob, match="pickle"):
        decode_data(pickle.dumps(Boom()))


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (None, "no data"),
        (b"\xff\xfe garbage", "not JSON"),
        (b'{"a": 1}', "job_type"),
        (b'["f", null, [1, 2], {}]', "one payload"),
    ],
)
def test_garbage_names_the_problem(raw: bytes | None, problem: str) -> None:
    with pytest.raises(BadJob, match=problem):
        decode_data(raw)


def test_results_and_exc_strings_use_rqs_encoding() -> None:
    assert encode_result(None) == ""
    assert decode_result(encode_result({"a": [1, "x"]})) == {"a": [1, "x"]}
    with pytest.raises(TypeError, match="not JSON serializable"):
        encode_result(object())
    assert decode_exc_string(encode_exc_string("Traceback ...")) == "Traceback ..."


def test_description_is_bounded() -> None:
    assert describe("t", '{"a":1}') == 't({"a":1})'
    assert len(describe("t", '{"a":"' + "x" * 500 + '"}')) == 120


def test_failure_history_is_bounded_keeping_first_and_latest() -> None:
    meta: dict = {}
    for attempt in range(1, 40):
        failure = Failure(attempt, "E", "m" * 5000, "t" * 10000, "s", "e", "w")
        meta["failures"] = append_failure(meta, failure)
    history = meta["failures"]
    assert len(history) == HISTORY_LIMIT
    assert history[0]["attempt"] == 1 and history[-1]["attempt"] == 39
    assert len(history[-1]["message"]) < 1100 and len(history[-1]["traceback"]) < 4100
