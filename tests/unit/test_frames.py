"""Frame encoding against API Gateway's 128 KB limit."""

import json
from typing import Any

from shared.services.connections.broadcast import MAX_FRAME_BYTES, encode_frame


def test_small_frames_are_sent_as_compact_json():
    frame = {"type": "message.status", "message_id": "m", "status": "read"}
    assert json.loads(encode_frame(frame)) == frame


def test_oversized_message_frame_keeps_ids_and_a_shortened_content():
    frame: dict[str, Any] = {
        "type": "message.new",
        "message": {"id": "m1", "seq": 7, "content": "😀" * 40_000},
    }
    encoded = encode_frame(frame)
    assert len(encoded) <= MAX_FRAME_BYTES
    reduced = json.loads(encoded)
    assert reduced["message"]["id"] == "m1" and reduced["message"]["seq"] == 7
    assert reduced["message"]["content_truncated"] is True
    assert reduced["message"]["content"] and frame["message"]["content"].startswith(
        reduced["message"]["content"]
    )


def test_oversized_frame_of_another_type_keeps_its_type_and_is_marked_truncated():
    frame = {"type": "notification.new", "id": "n1", "data": {"blob": "x" * (MAX_FRAME_BYTES + 1)}}
    reduced = json.loads(encode_frame(frame))
    assert reduced == {"type": "notification.new", "id": "n1", "truncated": True}
