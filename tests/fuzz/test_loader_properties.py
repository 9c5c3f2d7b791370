"""Property tests of the config loader (hypothesis, derandomized: the same examples on every run).

For any YAML text, any mapping of values and any ``--set`` list, :func:`unlearnkit.config.load_config` either
returns a config that validates to itself, or raises :class:`~unlearnkit.errors.UnlearnkitError` with a bounded
message. Any other exception is a traceback a user would see: the property fails.
"""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from testkit import text_problem

from unlearnkit.bench import load_config
from unlearnkit.config.loader import config_hash, to_plain
from unlearnkit.errors import UnlearnkitError


SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

KEYS = ["name", "data", "model", "scenario", "train", "oracle", "methods", "metrics", "seeds", "engine", "output_dir",
        "cache_dir", "track", "kind", "fraction", "count", "classes", "ids", "seed", "epochs", "lr", "batch_size",
        "hidden", "threads", "split_seed", "label", "shards", "slices", "params", "root", "extends", "llm", "graph"]
METHOD_NAMES = ["finetune", "grad_ascent", "random_label", "sisa", "retrain", "salun", "scrub", "l1_sparse"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40), st.sampled_from(METHOD_NAMES),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=4)),
    max_leaves=25)
mappings = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)


def _leaves(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _leaves(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _leaves(v)
    else:
        yield obj


def _holds(call) -> None:
    try:
        cfg = call()
    except UnlearnkitError as err:
        assert len(str(err)) < 5000
        return
    again = load_config(data=to_plain(cfg))
    assert config_hash(again) == config_hash(cfg)
    for x in _leaves(to_plain(cfg)):
        assert not (isinstance(x, str) and text_problem(x)), x
        assert not (isinstance(x, float) and not math.isfinite(x)), x


@SETTINGS
@given(mappings)
def test_any_mapping_is_accepted_correctly_or_refused_with_a_typed_error(data):
    _holds(lambda: load_config(data=data))


@SETTINGS
@given(st.text(max_size=400))
def test_any_text_file_is_accepted_correctly_or_refused_with_a_typed_error(tmp_path_factory, text):
    p = tmp_path_factory.mktemp("cfg") / "c.yaml"
    p.write_bytes(text.encode("utf-8", errors="surrogatepass"))
    _holds(lambda: load_config(p))


@SETTINGS
@given(st.binary(max_size=300))
def test_any_bytes_are_accepted_correctly_or_refused_with_a_typed_error(tmp_path_factory, raw):
    p = tmp_path_factory.mktemp("cfg") / "c.yaml"
    p.write_bytes(raw)
    _holds(lambda: load_config(p))


overrides = st.lists(st.one_of(
    st.text(max_size=60),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["name", "seeds", "train.epochs", "train.lr", "model.hidden",
                                                        "methods.0.lr", "methods.0", "scenario.seed", "engine.threads",
                                                        "data.split_seed", "output_dir", "methods.5.x", "a.b.c"]),
              st.text(max_size=40))), max_size=4)


@SETTINGS
@given(overrides)
def test_any_set_overrides_are_accepted_correctly_or_refused_with_a_typed_error(items):
    _holds(lambda: load_config("digits_random10", items))
