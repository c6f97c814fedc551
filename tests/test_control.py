from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lbd.control import MessageDecoder, encode


@given(
    st.lists(
        st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=20), max_size=4), max_size=5
    ),
    st.integers(min_value=1, max_value=7),
)
def test_messages_survive_any_split(messages: list[dict[str, object]], step: int) -> None:
    stream = b"".join(encode(m) for m in messages)
    decoder = MessageDecoder()
    out = []
    for i in range(0, len(stream), step):
        out.extend(decoder.feed(stream[i : i + step]))
    assert out == messages
