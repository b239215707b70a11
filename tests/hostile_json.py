"""Hypothesis strategies of hostile JSON, shared by the fuzz tests of the client protocol
(tests/integration/test_fuzz.py) and of the server API (tests/integration/test_server_api.py)."""

from __future__ import annotations

from hypothesis import strategies as st

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)
