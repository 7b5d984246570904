"""A stateful test: the SQLite store and the in-memory store agree on any sequence of operations."""

import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from fuzzkv.case import Case
from fuzzkv.db import STATUSES, BaselineRecord, FailureRecord, MemoryStore, open_store

fingerprints = st.sampled_from(["a", "b", "c", "d"])
models = st.sampled_from(["llama", "gpt2"])
cases = st.builds(lambda ps, n: Case(prompts=ps, max_new_tokens=n),
                  st.lists(st.lists(st.integers(0, 9), min_size=1, max_size=3).map(tuple), min_size=1, max_size=2)
                  .map(tuple), st.integers(1, 3))
keys = st.binary(min_size=1, max_size=3)
values = st.binary(max_size=4)


def failure(fingerprint, model, case):
    return FailureRecord(fingerprint=fingerprint, model=model, backend="hf", oracle="decode", kind="mismatch",
                         case=case, max_abs_diff=1.0, tolerance=1e-4, metrics={}, error=None, reproduction="",
                         versions={}, settings={"model": model})


def comparable(record):
    # Ids and timestamps are assigned by each store; everything else must agree.
    return (record.fingerprint, record.model, record.case, record.status, record.times_seen)


class StoresAgree(RuleBasedStateMachine):
    ids = Bundle("ids")

    def __init__(self):
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.sql = open_store(f"sqlite:///{Path(self.dir.name) / 's.db'}")
        self.memory = MemoryStore()

    def teardown(self):
        self.sql.close()
        self.dir.cleanup()

    @rule(target=ids, fingerprint=fingerprints, model=models, case=cases)
    def save(self, fingerprint, model, case):
        a = self.sql.save_failure(failure(fingerprint, model, case))
        b = self.memory.save_failure(failure(fingerprint, model, case))
        return (a, b)

    @rule(target=ids, ids=ids, fingerprint=fingerprints, case=cases)
    def replace(self, ids, fingerprint, case):
        a = self.sql.replace_failure(ids[0], failure(fingerprint, "llama", case))
        b = self.memory.replace_failure(ids[1], failure(fingerprint, "llama", case))
        return (a, b)

    @rule(ids=ids, status=st.sampled_from(STATUSES), seen=st.booleans())
    def mark(self, ids, status, seen):
        self.sql.mark(ids[0], status, seen=seen)
        self.memory.mark(ids[1], status, seen=seen)

    @rule(key=keys, value=values)
    def example_save(self, key, value):
        self.sql.example_save(key, value)
        self.memory.example_save(key, value)

    @rule(key=keys, value=values)
    def example_delete(self, key, value):
        self.sql.example_delete(key, value)
        self.memory.example_delete(key, value)

    @rule(model=models, noise=st.floats(1e-9, 1.0))
    def baseline(self, model, noise):
        record = BaselineRecord(model, "tiny", "hf", "float32", "cpu", "eager", {}, noise * 16, noise, 5.0, 16.0, 4)
        self.sql.save_baseline(record)
        self.memory.save_baseline(record)

    @rule(key=keys)
    def examples_agree(self, key):
        assert self.sql.example_fetch(key) == self.memory.example_fetch(key)

    @invariant()
    def failures_agree(self):
        assert [comparable(r) for r in self.sql.failures()] == [comparable(r) for r in self.memory.failures()]

    @rule(model=st.none() | models, status=st.none() | st.sampled_from(STATUSES))
    def filtered_failures_agree(self, model, status):
        got = [comparable(r) for r in self.sql.failures(model=model, status=status)]
        assert got == [comparable(r) for r in self.memory.failures(model=model, status=status)]

    @rule()
    def baselines_agree(self):
        for model in ("llama", "gpt2"):
            key = (model, "tiny", "hf", "float32", "cpu", "eager")
            assert [b.noise for b in self.sql.baselines(key)] == [b.noise for b in self.memory.baselines(key)]


TestStoresAgree = StoresAgree.TestCase
TestStoresAgree.settings = settings(max_examples=30, stateful_step_count=20, deadline=None)
