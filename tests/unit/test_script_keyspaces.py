"""Each script is sent the prefixes it reads (workers/scripts.py keyspace_for), and only those."""

import json
import re

import pytest

from workers.keys import Keys
from workers.scripts import Scripts, keyspace_for, source

FULL = Keys("acme").lua_keyspace


@pytest.mark.parametrize("name", Scripts.NAMES)
def test_every_prefix_a_script_reads_is_sent(name: str) -> None:
    text = source(name)
    sent = json.loads(keyspace_for(text, FULL))
    read = set(re.findall(r"\bK\.(\w+)", text))
    assert read <= set(sent), f"{name} reads {sorted(read - set(sent))} that it is not sent"
    assert all(json.loads(FULL)[field] == prefix for field, prefix in sent.items())


def test_a_script_that_uses_k_otherwise_gets_every_prefix() -> None:
    assert keyspace_for("local name = 'queue'\nreturn K[name] .. ARGV[3]", FULL) == FULL
    assert keyspace_for("local keys = K\nreturn keys.queue", FULL) == FULL
    assert json.loads(keyspace_for("return K.queue .. K.job", FULL)).keys() == {"queue", "job"}
