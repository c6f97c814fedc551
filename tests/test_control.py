from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lbd.control import ControlProtocol, MessageDecoder, encode


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


def test_a_failing_message_leaves_the_channel_open() -> None:
    # A worker whose channel closes stops: one message its handler cannot take (say an import failing
    # with EMFILE while answering "stats") must not take the channel down with it, nor the messages after.
    seen: list[object] = []
    closed: list[bool] = []

    def on_message(message: dict[str, object]) -> None:
        if message["op"] == "bad":
            raise OSError(24, "Too many open files")
        seen.append(message["op"])

    protocol = ControlProtocol(on_message, lambda: closed.append(True))
    protocol.data_received(encode({"op": "bad"}) + encode({"op": "stats"}))
    assert seen == ["stats"]
    assert closed == []
